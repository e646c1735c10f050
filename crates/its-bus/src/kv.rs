//! JetStream key-value buckets holding MessagePack values: the registries.

use std::marker::PhantomData;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use serde::{Serialize, de::DeserializeOwned};

use crate::BusError;

/// How long one KV request waits for the server's answer.
const KV_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// A key-value bucket of `T` values.
#[derive(Debug, Clone)]
pub struct Kv<T> {
    store: kv::Store,
    bucket: String,
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
            _values: PhantomData,
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> BusError {
        BusError::Kv {
            bucket: self.bucket.clone(),
            detail: e.to_string(),
        }
    }
}

impl<T: Serialize + DeserializeOwned> Kv<T> {
    /// Writes `value` under `key`; returns the new revision.
    pub async fn put(&self, key: &str, value: &T) -> Result<u64, BusError> {
        let bytes = its_proto::encode(value)?;
        self.store
            .put(key, bytes.into())
            .await
            .map_err(|e| self.err(e))
    }

    /// Writes `value` only if `key` does not exist; returns the new revision.
    pub async fn create(&self, key: &str, value: &T) -> Result<u64, BusError> {
        let bytes = its_proto::encode(value)?;
        self.store
            .create(key, bytes.into())
            .await
            .map_err(|e| self.err(e))
    }

    /// Writes `value` only if `key` is still at `revision`; returns the new revision.
    pub async fn update(&self, key: &str, value: &T, revision: u64) -> Result<u64, BusError> {
        let bytes = its_proto::encode(value)?;
        self.store
            .update(key, bytes.into(), revision)
            .await
            .map_err(|e| self.err(e))
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

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), BusError> {
        self.store.delete(key).await.map_err(|e| self.err(e))
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
