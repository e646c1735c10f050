//! `nats.intake_max_bytes`: the frame intake's buffer bounded in bytes as well as in frames.

use its_config::NatsSettings;

fn nats(frames: usize, bytes: u64) -> NatsSettings {
    NatsSettings {
        intake_capacity: frames,
        intake_max_bytes: bytes,
        ..Default::default()
    }
}

#[test]
fn the_byte_bound_lowers_the_frame_capacity_by_the_servers_max_payload() {
    const MIB: usize = 1 << 20;
    let d = NatsSettings::default();
    // With nats-server's default max_payload (1 MiB) the defaults keep 4096 frames.
    assert_eq!(d.intake_frames(MIB), d.intake_capacity);
    // A server that takes 8 MiB messages: 4 GiB hold 512 of them.
    assert_eq!(d.intake_frames(8 * MIB), 512);
    // Small messages: the frame bound is the smaller one.
    assert_eq!(nats(4096, 1 << 30).intake_frames(64 << 10), 4096);
    // Exact division, and never below one frame.
    assert_eq!(nats(4096, 128 << 10).intake_frames(64 << 10), 2);
    assert_eq!(nats(4096, 64 << 10).intake_frames(MIB), 1);
    // Bytes held never exceed the bound when more than one frame fits.
    for payload in [1000usize, 65_536, 1 << 20, 3 << 20] {
        let n = nats(65_536, 5 << 20);
        let frames = n.intake_frames(payload);
        assert!(frames == 1 || (frames * payload) as u64 <= n.intake_max_bytes);
    }
}

#[test]
fn intake_max_bytes_is_checked_naming_the_key() {
    let err = its_config::load(&its_config::Sources {
        file: None,
        env: Default::default(),
        overrides: vec!["nats.intake_max_bytes=1000".into()],
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("nats.intake_max_bytes"), "{err}");
    let ok = its_config::load(&its_config::Sources {
        file: None,
        env: Default::default(),
        overrides: vec!["nats.intake_max_bytes=131072".into()],
    })
    .expect("128 KiB is valid");
    assert_eq!(ok.nats.intake_max_bytes, 131_072);
}
