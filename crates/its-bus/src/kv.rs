//! JetStream key-value buckets holding MessagePack values: the registries.

use std::marker::PhantomData;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use serde::{Serialize, de::DeserializeOwned};

use crate::{BusError, ConnectionHealth};

/// How long one KV request waits for the server's answer.
const KV_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// A key-value bucket of `T` values.
#[derive(Debug, Clone)]
pub struct Kv<T> {
    store: kv::Store,
    bucket: String,
    /// The connection's events: a write the server refuses for this identity shows up there
    /// (`-ERR 'Permissions Violation ...'`), while the write itself only times out.
    health: ConnectionHealth,
    _values: PhantomData<fn() -> T>,
}

/// A value with its revision.
#[derive(Debug, Clone, PartialEq)]
pub struct KvEntry<T> {
    /// The key.
    pub key: String,
    /// The value; `None` for a delete or purge seen by a watcher.
    pub value: Option<T>,
    /// Revision of this entry (for compare-and-set).
    pub revision: u64,
}

impl<T> Kv<T> {
    pub(crate) async fn open(
        client: async_nats::Client,
        health: ConnectionHealth,
        bucket: &str,
        history: i64,
        replicas: usize,
    ) -> Result<Self, BusError> {
        let mut js = jetstream::new(client);
        // A KV operation is a few milliseconds; when the server holding a bucket's stream
        // leader dies, a request waits for this timeout before it fails and can be retried
        // against the new leader (async-nats' default is 5 s, a long stall for a cluster round).
        js.set_timeout(KV_TIMEOUT);
        let err = |e: &dyn std::fmt::Display| BusError::Kv {
            bucket: bucket.to_owned(),
            detail: e.to_string(),
        };
        let store = match js.get_key_value(bucket).await {
            Ok(store) => store,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.to_owned(),
                    history,
                    num_replicas: replicas.max(1),
                    ..Default::default()
                })
                .await
                .map_err(|e| err(&e))?,
        };
        Ok(Kv {
            store,
            bucket: bucket.to_owned(),
            health,
            _values: PhantomData,
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> BusError {
        BusError::Kv {
            bucket: self.bucket.clone(),
            detail: e.to_string(),
        }
    }

    /// Runs a write; when it fails and the server refused a permission on this connection
    /// meanwhile, the error says so (with the server's words, which name the subject) rather
    /// than only the missing acknowledgement.
    async fn write<R, E: std::fmt::Display>(
        &self,
        op: impl std::future::Future<Output = Result<R, E>>,
    ) -> Result<R, BusError> {
        self.refusal_named("write", op).await
    }

    /// [`Self::write`] for any request (`what`: "write", "read from the leader").
    async fn refusal_named<R, E: std::fmt::Display>(
        &self,
        what: &str,
        op: impl std::future::Future<Output = Result<R, E>>,
    ) -> Result<R, BusError> {
        let before = self.health.snapshot().permission_violations;
        op.await.map_err(|e| {
            let now = self.health.snapshot();
            match now.last_server_error {
                Some(refusal) if now.permission_violations > before => BusError::Kv {
                    bucket: self.bucket.clone(),
                    detail: format!(
                        "the NATS server refused this connection's identity: {refusal} \
                         (the {what} failed: {e})"
                    ),
                },
                _ => self.err(e),
            }
        })
    }
}

impl<T: Serialize + DeserializeOwned> Kv<T> {
    /// Writes `value` under `key`; returns the new revision.
    pub async fn put(&self, key: &str, value: &T) -> Result<u64, BusError> {
        let bytes = its_proto::encode(value)?;
        self.write(self.store.put(key, bytes.into())).await
    }

    /// Writes `value` only if `key` does not exist; returns the new revision.
    pub async fn create(&self, key: &str, value: &T) -> Result<u64, BusError> {
        let bytes = its_proto::encode(value)?;
        self.write(self.store.create(key, bytes.into())).await
    }

    /// Writes `value` only if `key` is still at `revision`; returns the new revision.
    pub async fn update(&self, key: &str, value: &T, revision: u64) -> Result<u64, BusError> {
        let bytes = its_proto::encode(value)?;
        self.write(self.store.update(key, bytes.into(), revision))
            .await
    }

    /// Reads the current value of `key`.
    pub async fn get(&self, key: &str) -> Result<Option<KvEntry<T>>, BusError> {
        let entry = self.store.entry(key).await.map_err(|e| self.err(e))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => Ok(Some(KvEntry {
                key: e.key,
                value: Some(its_proto::decode(&e.value)?),
                revision: e.revision,
            })),
            _ => Ok(None),
        }
    }

    /// Reads the current value of `key` from the bucket stream's leader. [`Self::get`] may be
    /// answered by any replica of a replicated bucket (a direct get), and a replica can lag
    /// behind acknowledged writes; this read sees every write acknowledged before it, at the
    /// cost of a request to the leader. For reads a correctness rule depends on (a node
    /// learning that its camera moved away).
    pub async fn get_from_leader(&self, key: &str) -> Result<Option<KvEntry<T>>, BusError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        let subject = format!("{}{key}", self.store.prefix);
        let read = async {
            match self
                .store
                .stream
                .get_last_raw_message_by_subject(&subject)
                .await
            {
                Ok(m) => Ok(Some(m)),
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
                Err(e) => Err(e),
            }
        };
        // A role without `$JS.API.STREAM.MSG.GET.<stream>` is refused by the server, which
        // the error then quotes (the request itself only times out).
        let Some(m) = self.refusal_named("read from the leader", read).await? else {
            return Ok(None);
        };
        // A delete or purge is an empty message with a `KV-Operation` header (or a server
        // marker with a reason); a put has neither (or says `PUT`).
        let op = m.headers.get("KV-Operation").map(|v| v.as_str().parse());
        if matches!(op, Some(Ok(kv::Operation::Delete | kv::Operation::Purge)))
            || m.headers.get("Nats-Marker-Reason").is_some()
        {
            return Ok(None);
        }
        Ok(Some(KvEntry {
            key: key.to_owned(),
            value: Some(its_proto::decode(&m.payload)?),
            revision: m.sequence,
        }))
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), BusError> {
        self.write(self.store.delete(key)).await
    }

    /// The keys present now.
    pub async fn keys(&self) -> Result<Vec<String>, BusError> {
        let mut keys = self.store.keys().await.map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            out.push(k.map_err(|e| self.err(e))?);
        }
        out.sort();
        Ok(out)
    }

    /// Watches every key: first the current values, then each change.
    pub async fn watch(
        &self,
    ) -> Result<impl futures::Stream<Item = Result<KvEntry<T>, BusError>> + use<T>, BusError> {
        let bucket = self.bucket.clone();
        let watch = self
            .store
            .watch_with_history(">")
            .await
            .map_err(|e| self.err(e))?;
        Ok(watch.map(move |item| {
            let e = item.map_err(|e| BusError::Kv {
                bucket: bucket.clone(),
                detail: e.to_string(),
            })?;
            let value = match e.operation {
                kv::Operation::Put => Some(its_proto::decode(&e.value)?),
                _ => None,
            };
            Ok(KvEntry {
                key: e.key,
                value,
                revision: e.revision,
            })
        }))
    }
}
