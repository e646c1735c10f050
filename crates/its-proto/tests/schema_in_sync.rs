//! `proto/schema.json` must be exactly what the Rust types generate, so the two cannot drift.

#[test]
fn committed_schema_matches_the_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto/schema.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = its_proto::schema::generate_pretty();
    if std::env::var_os("ITS_BLESS").is_some() {
        std::fs::write(path, &generated).unwrap();
        return;
    }
    assert!(
        committed == generated,
        "proto/schema.json is out of date with crates/its-proto; regenerate it with \
         `ITS_BLESS=1 cargo test -p its-proto --test schema_in_sync` and review the diff \
         against the evolution rule in proto/README.md"
    );
}
