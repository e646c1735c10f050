//! A KV bucket mirrored in memory by a watch, so a cluster round reads it without a round trip.
//!
//! [`Mirror::open`] loads every key once, then a task follows the bucket's watch (which first
//! replays the current values, then every change). Entries are applied by KV revision, newest
//! wins, so the replay never goes back in time. When the watch fails (a NATS server lost, a
//! reconnect), the task reloads the whole bucket and watches again. A watch whose consumer sat
//! on a lost server can stay silent for seconds before it reports the loss, so the task also
//! reloads the bucket every [`RESYNC`]: a value the watch had not delivered means the watch is
//! stale, and it is restarted at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use its_bus::{BusError, Kv};
use serde::{Serialize, de::DeserializeOwned};

type Map<T> = BTreeMap<String, (u64, T)>;

/// How often the mirror is checked against a full read of the bucket.
pub(crate) const RESYNC: Duration = Duration::from_secs(1);

/// Replaces the mirror by a full read; true when the read held something the mirror lacked
/// (a newer revision, or a key gone): the watch missed it.
fn resync<T>(map: &Mutex<Map<T>>, fresh: Map<T>) -> bool {
    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
    // Revisions are the bucket's stream sequence, one order over all keys: an entry newer than
    // anything the read saw arrived by the watch after the read started.
    let newest = fresh.values().map(|(r, _)| *r).max().unwrap_or(0);
    let missed = fresh
        .iter()
        .any(|(k, (r, _))| m.get(k).is_none_or(|(mine, _)| mine < r))
        || m.iter()
            .any(|(k, (r, _))| !fresh.contains_key(k) && *r <= newest);
    let mut next = fresh;
    for (k, (r, v)) in std::mem::take(&mut *m) {
        let keep = match next.get(&k) {
            Some((theirs, _)) => *theirs < r,
            None => r > newest,
        };
        if keep {
            next.insert(k, (r, v));
        }
    }
    *m = next;
    missed
}

/// A bucket's current values, kept up to date by a watch task (aborted on drop).
pub(crate) struct Mirror<T> {
    map: Arc<Mutex<Map<T>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T> Drop for Mirror<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn apply<T>(map: &Mutex<Map<T>>, key: String, revision: u64, value: Option<T>) {
    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
    if m.get(&key).is_some_and(|(r, _)| *r >= revision) {
        return;
    }
    match value {
        Some(v) => {
            m.insert(key, (revision, v));
        }
        None => {
            m.remove(&key);
        }
    }
}

async fn load<T: Serialize + DeserializeOwned>(kv: &Kv<T>) -> Result<Map<T>, BusError> {
    let mut out = BTreeMap::new();
    for key in kv.keys().await? {
        if let Some(e) = kv.get(&key).await?
            && let Some(v) = e.value
        {
            out.insert(key, (e.revision, v));
        }
    }
    Ok(out)
}

impl<T: Serialize + DeserializeOwned + Clone + Send + 'static> Mirror<T> {
    /// Loads the bucket and starts following it.
    pub(crate) async fn open(kv: Kv<T>) -> Result<Self, BusError> {
        let map = Arc::new(Mutex::new(load(&kv).await?));
        let m = map.clone();
        let task = tokio::spawn(async move {
            loop {
                match kv.watch().await {
                    Ok(mut watch) => {
                        let mut check = tokio::time::interval(RESYNC);
                        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        check.tick().await;
                        loop {
                            tokio::select! {
                                item = watch.next() => match item {
                                    Some(Ok(e)) => apply(&m, e.key, e.revision, e.value),
                                    Some(Err(e)) => {
                                        tracing::warn!(error = %e, "cluster bucket watch failed");
                                        break;
                                    }
                                    None => break,
                                },
                                _ = check.tick() => {
                                    if let Ok(fresh) = load(&kv).await
                                        && resync(&m, fresh)
                                    {
                                        tracing::warn!("cluster bucket watch is behind; restarting it");
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot watch a cluster bucket"),
                }
                // The watch ended or failed: reload (deletes missed meanwhile) and watch again.
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Ok(fresh) = load(&kv).await {
                    *m.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
                }
            }
        });
        Ok(Self { map, task })
    }

    /// The current values.
    pub(crate) fn values(&self) -> BTreeMap<String, T> {
        let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.iter().map(|(k, (_, v))| (k.clone(), v.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_revision_wins() {
        let m = Mutex::new(BTreeMap::new());
        apply(&m, "k".into(), 5, Some(1));
        apply(&m, "k".into(), 4, Some(2));
        assert_eq!(m.lock().unwrap()["k"], (5, 1));
        apply(&m, "k".into(), 6, Some(3));
        assert_eq!(m.lock().unwrap()["k"], (6, 3));
        apply(&m, "k".into(), 3, None);
        assert!(m.lock().unwrap().contains_key("k"));
        apply(&m, "k".into(), 7, None);
        assert!(!m.lock().unwrap().contains_key("k"));
    }

    #[test]
    fn resync_reports_what_the_watch_missed() {
        let m = Mutex::new(BTreeMap::from([
            ("a".to_string(), (3, 1)),
            ("b".to_string(), (9, 2)),
        ]));
        // the read is older than the watched b: nothing missed, b kept
        assert!(!resync(
            &m,
            BTreeMap::from([("a".into(), (3, 1)), ("b".into(), (8, 0))])
        ));
        assert_eq!(m.lock().unwrap()["b"], (9, 2));
        // a newer a, a new c: missed
        assert!(resync(
            &m,
            BTreeMap::from([("a".into(), (4, 5)), ("b".into(), (9, 2))])
        ));
        assert_eq!(m.lock().unwrap()["a"], (4, 5));
        // b deleted (a read that saw revision 10): missed
        assert!(resync(&m, BTreeMap::from([("a".into(), (10, 5))])));
        assert!(!m.lock().unwrap().contains_key("b"));
        // a watched c, newer than the read: kept, not missed
        m.lock().unwrap().insert("c".into(), (12, 7));
        assert!(!resync(&m, BTreeMap::from([("a".into(), (10, 5))])));
        assert_eq!(m.lock().unwrap()["c"], (12, 7));
    }
}
