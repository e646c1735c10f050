//! `[admin.nats]`: the admin API's own NATS identity inside a node. It layers like every key
//! (file, environment, overrides), is validated with the key named, its secrets are never
//! printed, and its connection settings are the node's with only the credentials replaced.

use std::collections::HashMap;

use its_config::{Secret, Settings, Sources, load};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn empty_file() -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(f.path(), "").unwrap();
    f
}

#[test]
fn unset_by_default_so_the_admin_shares_the_node_connection() {
    let s = Settings::default();
    assert!(!s.admin.nats.is_set());
    s.validate().unwrap();
}

#[test]
fn layers_from_file_environment_and_overrides() {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(
        file.path(),
        "[admin]\nenabled = true\n[admin.nats]\nuser = \"from-file\"\n",
    )
    .unwrap();
    let s = load(&Sources {
        file: Some(file.path()),
        env: env(&[("ITS__ADMIN__NATS__PASSWORD", "env-admin-secret")]),
        overrides: vec!["admin.nats.user=admin".into()],
    })
    .unwrap();
    assert_eq!(s.admin.nats.user, "admin");
    assert_eq!(s.admin.nats.password.get(), Some("env-admin-secret"));
    assert!(s.admin.nats.is_set());
    let unknown = its_config::from_toml_str("[admin.nats]\nurl = \"nats://elsewhere:4222\"\n")
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("url"), "the URL is the node's: {unknown}");
}

#[test]
fn at_most_one_credential_and_a_password_needs_a_user() {
    let two = its_config::from_toml_str(
        "[admin.nats]\nuser = \"admin\"\npassword = \"pw-0123\"\ntoken = \"tok-0123\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(two.contains("`admin.nats.user`"), "{two}");
    assert!(two.contains("at most one of"), "{two}");
    assert!(
        !two.contains("tok-0123") && !two.contains("pw-0123"),
        "{two}"
    );

    let lone = its_config::from_toml_str("[admin.nats]\npassword = \"lone-secret-pw\"\n")
        .unwrap_err()
        .to_string();
    assert!(lone.contains("`admin.nats.password`"), "{lone}");
    assert!(lone.contains("admin.nats.user"), "{lone}");
    assert!(
        !lone.contains("lone-secret-pw"),
        "the error shows no secret: {lone}"
    );

    for one in [
        "token = \"tok-0123\"",
        "nkey_seed = \"SUAFAKESEED\"",
        "creds_file = \"/run/secrets/admin.creds\"",
    ] {
        let s = its_config::from_toml_str(&format!("[admin.nats]\n{one}\n"))
            .unwrap_or_else(|e| panic!("{one}: {e}"));
        assert!(s.admin.nats.is_set(), "{one}");
    }
}

#[test]
fn printing_redacts_the_admin_secrets() {
    let f = empty_file();
    let s = load(&Sources {
        file: Some(f.path()),
        env: env(&[
            ("ITS__ADMIN__NATS__USER", "admin"),
            ("ITS__ADMIN__NATS__PASSWORD", "admin-pw-s3cr3t"),
        ]),
        overrides: vec![],
    })
    .unwrap();
    let printed = s.to_toml_redacted();
    assert!(!printed.contains("admin-pw-s3cr3t"), "{printed}");
    assert!(printed.contains("[admin.nats]"), "{printed}");
    assert!(printed.contains("user = \"admin\""), "{printed}");
    assert!(printed.contains("password = \"<redacted>\""), "{printed}");
    assert!(!format!("{s:?}").contains("admin-pw-s3cr3t"));

    for (key, value) in [
        ("ITS__ADMIN__NATS__TOKEN", "admin-tok-s3cr3t"),
        ("ITS__ADMIN__NATS__NKEY_SEED", "SUADMINSEEDS3CR3T"),
    ] {
        let s = load(&Sources {
            file: Some(f.path()),
            env: env(&[(key, value)]),
            overrides: vec![],
        })
        .unwrap();
        let printed = s.to_toml_redacted();
        assert!(!printed.contains(value), "{key}: {printed}");
        assert!(printed.contains("<redacted>"), "{key}: {printed}");
        assert!(!format!("{s:?}").contains(value), "{key}");
    }
}

#[test]
fn the_connection_is_the_nodes_with_the_admin_credentials() {
    let mut s = its_config::from_toml_str(
        "[nats]\nurl = \"tls://a:4222,tls://b:4222\"\nuser = \"node\"\npassword = \"node-pw\"\n\
         tls_required = true\ntls_ca_file = \"/ca.pem\"\nconnect_attempts = 3\n\
         [admin.nats]\nuser = \"admin\"\npassword = \"admin-pw\"\n",
    )
    .unwrap();
    let c = s.admin.nats.connection(&s.nats);
    assert_eq!(
        (c.user.as_str(), c.password.get()),
        ("admin", Some("admin-pw"))
    );
    assert_eq!(c.url, s.nats.url);
    assert!(c.tls_required);
    assert_eq!(c.tls_ca_file, "/ca.pem");
    assert_eq!(c.connect_attempts, 3);

    // Only the admin's own credentials: none of the node's are carried over.
    s.admin.nats = Default::default();
    s.admin.nats.token = Secret("admin-token".into());
    let c = s.admin.nats.connection(&s.nats);
    assert_eq!(c.token.get(), Some("admin-token"));
    assert!(c.user.is_empty() && c.password.get().is_none(), "{c:?}");
}
