//! A nats-server running the committed per-role permissions (`config/nats/roles.conf`), and
//! clients under each role's identity, for the permission tests.

use its_bus::Bus;
use its_config::NatsSettings;

use crate::{TestNats, within};

/// The roles of `roles.conf`, each with the test password `<role>-test-password`.
pub const ROLES: [&str; 4] = ["ingest", "node", "subscriber", "admin"];

/// NATS settings that log in as `user` with its test password.
pub fn identity(user: &str) -> NatsSettings {
    let mut n = crate::settings(&[]).nats;
    n.user = user.to_owned();
    n.password = its_config::Secret(format!("{user}-test-password"));
    n
}

/// A client connected as `user`; panics naming the user when the server refuses it.
pub async fn connect(nats: &TestNats, user: &str) -> Bus {
    within(
        10,
        "connect",
        its_bus::connect(&identity(user), &nats.url(), user),
    )
    .await
    .unwrap_or_else(|e| panic!("connect as {user}: {e}"))
}

/// A server running the committed roles file, included from an operator's own configuration,
/// with the test passwords in its `its-passwords.conf`. Keep the directory while the server runs.
pub fn server() -> (TestNats, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let roles = crate::workspace_root().join("config/nats/roles.conf");
    std::fs::copy(&roles, dir.path().join("roles.conf")).expect("copy roles.conf");
    let passwords: String = ROLES
        .iter()
        .map(|user| {
            format!(
                "ITS_{}_PASSWORD: \"{user}-test-password\"\n",
                user.to_ascii_uppercase()
            )
        })
        .collect();
    std::fs::write(dir.path().join("its-passwords.conf"), passwords).expect("write passwords");
    let conf = dir.path().join("main.conf");
    std::fs::write(&conf, "include ./roles.conf\n").expect("write main.conf");
    let nats = TestNats::start_with_args(&["-c", conf.to_str().expect("utf-8 temp path")]);
    (nats, dir)
}
