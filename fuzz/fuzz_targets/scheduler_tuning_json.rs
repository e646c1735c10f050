//! The admin API's `PATCH /api/v1/scheduler` body, parsed and validated as the handler does
//! (`its_admin::scheduler_tuning_body`): never a panic; what passes is within the documented
//! ranges, what fails is a 400 or 422 problem.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match its_admin::scheduler_tuning_body(data) {
        Ok(t) => {
            if let Some(b) = &t.batch_sizes {
                assert!(!b.is_empty() && b.len() <= 64);
                assert!(b.iter().all(|s| (1..=256).contains(s)));
                assert!(b.windows(2).all(|w| w[0] < w[1]));
            }
            if let Some(d) = &t.deadlines_ms {
                assert!(d.iter().all(|v| (1..=600_000).contains(v)));
            }
            for v in [t.min_batch_timeout_ms, t.max_batch_timeout_ms]
                .into_iter()
                .flatten()
            {
                assert!((1..=1000).contains(&v));
            }
            if let (Some(lo), Some(hi)) = (t.min_batch_timeout_ms, t.max_batch_timeout_ms) {
                assert!(lo <= hi);
            }
            if let Some(r) = t.shed_miss_ratio {
                assert!(r.is_finite() && r > 0.0 && r <= 1.0);
            }
            if let Some(p) = &t.late_policy {
                assert!(p == "drop" || p == "deliver");
            }
            // What the admin sends on to the node encodes as a wire message.
            let cmd = its_proto::SchedulerControl::Tune { tuning: t };
            let bytes = its_proto::encode(&cmd).expect("encode");
            let back: its_proto::SchedulerControl = its_proto::decode(&bytes).expect("decode");
            assert_eq!(back, cmd);
        }
        Err(p) => {
            assert!(p.status == 400 || p.status == 422, "status {}", p.status);
            assert!(!p.detail.is_empty());
        }
    }
});
