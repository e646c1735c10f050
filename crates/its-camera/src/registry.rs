//! The live camera registry: watches the NATS KV bucket `its_cameras` ([`CAMERAS_BUCKET`]) and keeps the
//! supervisor in step with it, and shares the cameras between ingest processes with leases.
//!
//! Ownership: a camera runs on the ingest process holding its lease, an entry in the bucket
//! [`LEASES_BUCKET`] keyed by camera id. A lease is taken with a KV create (only one process can
//! create a key) or, once expired, with a compare-and-set update on the revision read; the
//! owner renews it every third of its TTL with a compare-and-set update, and stops the camera
//! as soon as a renewal fails. A process that stops deletes its leases, so another takes
//! the cameras over at once; one that dies loses them after the TTL.

use std::collections::HashMap;
use std::time::Duration;

use actix::Addr;
use futures::StreamExt;
use its_bus::{Bus, BusError, Kv, KvEntry};
use its_proto::CameraSpec;
use its_proto::registry::CAMERAS_BUCKET;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::actor::now_ns;
use crate::supervisor::{ApplySpec, CameraSupervisor, RemoveCamera};

/// KV bucket of camera leases, keyed by camera id.
pub const LEASES_BUCKET: &str = "its_camera_leases";

/// Who runs a camera, until when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// Ingest process holding the camera.
    pub owner: String,
    /// The lease is void after this time, unix nanoseconds.
    pub expires_at_ns: u64,
}

/// Registry settings.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Id of this ingest process (the lease owner).
    pub ingest_id: String,
    /// Lease lifetime; renewed every third of it.
    pub lease_ttl: Duration,
    /// Most cameras this process takes (0 = no limit).
    pub max_cameras: usize,
}

/// A running registry task.
#[derive(Debug)]
pub struct Registry {
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Registry {
    /// Opens the buckets and starts watching. Must run inside the actix system of `supervisor`.
    pub async fn start(
        bus: &Bus,
        supervisor: Addr<CameraSupervisor>,
        opts: RegistryOptions,
    ) -> Result<Registry, BusError> {
        let specs: Kv<CameraSpec> = bus.kv(CAMERAS_BUCKET, 1).await?;
        let leases: Kv<Lease> = bus.kv(LEASES_BUCKET, 1).await?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let state = State {
            specs,
            leases,
            sup: supervisor,
            opts,
            desired: HashMap::new(),
            owned: HashMap::new(),
        };
        let done = tokio::spawn(state.run(stop_rx));
        Ok(Registry {
            stop: Some(stop_tx),
            done: Some(done),
        })
    }

    /// Stops watching, stops this process's cameras and releases their leases.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(d) = self.done.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), d).await;
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(d) = &self.done {
            d.abort();
        }
    }
}

struct State {
    specs: Kv<CameraSpec>,
    leases: Kv<Lease>,
    sup: Addr<CameraSupervisor>,
    opts: RegistryOptions,
    /// Enabled specs in the registry.
    desired: HashMap<String, CameraSpec>,
    /// Cameras this process holds, with the lease revision.
    owned: HashMap<String, u64>,
}

impl Drop for State {
    /// A registry task that ends without releasing (aborted, or its process is going down)
    /// stops its cameras anyway: a camera never runs without a lease. The leases expire.
    fn drop(&mut self) {
        for id in self.owned.keys() {
            self.sup.do_send(RemoveCamera(id.clone()));
        }
    }
}

impl State {
    fn lease(&self) -> Lease {
        Lease {
            owner: self.opts.ingest_id.clone(),
            expires_at_ns: now_ns() + self.opts.lease_ttl.as_nanos() as u64,
        }
    }

    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut tick = tokio::time::interval(self.opts.lease_ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'outer: loop {
            let (mut spec_watch, mut lease_watch) =
                match (self.specs.watch().await, self.leases.watch().await) {
                    (Ok(a), Ok(b)) => (a, b),
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::warn!(error = %e, "cannot watch the camera registry; retrying");
                        tokio::select! {
                            _ = &mut stop => break 'outer,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                };
            loop {
                tokio::select! {
                    _ = &mut stop => break 'outer,
                    e = spec_watch.next() => match e {
                        Some(Ok(e)) => self.on_spec(e).await,
                        Some(Err(e)) => tracing::warn!(error = %e, "bad registry entry"),
                        None => break,
                    },
                    e = lease_watch.next() => match e {
                        Some(Ok(e)) => self.on_lease(e).await,
                        Some(Err(e)) => tracing::warn!(error = %e, "bad lease entry"),
                        None => break,
                    },
                    _ = tick.tick() => self.renew_and_claim().await,
                }
            }
            tracing::warn!("registry watch ended; watching again");
        }
        // Release: stop our cameras and free their leases for the other processes.
        for (id, rev) in std::mem::take(&mut self.owned) {
            self.sup.do_send(RemoveCamera(id.clone()));
            if matches!(self.leases.get(&id).await, Ok(Some(KvEntry { revision, .. })) if revision == rev)
            {
                let _ = self.leases.delete(&id).await;
            }
        }
    }

    async fn on_spec(&mut self, e: KvEntry<CameraSpec>) {
        match e.value {
            Some(spec) if spec.enabled && spec.id == e.key => {
                self.desired.insert(e.key.clone(), spec.clone());
                if self.owned.contains_key(&e.key) {
                    self.sup.do_send(ApplySpec(spec));
                } else {
                    self.try_claim(&e.key).await;
                }
            }
            other => {
                if let Some(spec) = &other
                    && spec.id != e.key
                {
                    tracing::warn!(key = %e.key, id = %spec.id, "registry entry id differs from its key; ignored");
                }
                self.desired.remove(&e.key);
                self.release(&e.key).await;
            }
        }
    }

    async fn on_lease(&mut self, e: KvEntry<Lease>) {
        match e.value {
            None => {
                if self.desired.contains_key(&e.key) && !self.owned.contains_key(&e.key) {
                    self.try_claim(&e.key).await;
                }
            }
            Some(lease) => {
                if lease.owner != self.opts.ingest_id && self.owned.contains_key(&e.key) {
                    tracing::warn!(camera = %e.key, owner = %lease.owner, "lease taken over; stopping camera");
                    self.owned.remove(&e.key);
                    self.sup.do_send(RemoveCamera(e.key));
                }
            }
        }
    }

    async fn release(&mut self, id: &str) {
        if let Some(rev) = self.owned.remove(id) {
            self.sup.do_send(RemoveCamera(id.to_owned()));
            if matches!(self.leases.get(id).await, Ok(Some(KvEntry { revision, .. })) if revision == rev)
            {
                let _ = self.leases.delete(id).await;
            }
        }
    }

    async fn try_claim(&mut self, id: &str) {
        if self.opts.max_cameras > 0 && self.owned.len() >= self.opts.max_cameras {
            return;
        }
        let Some(spec) = self.desired.get(id).cloned() else {
            return;
        };
        let lease = self.lease();
        let rev = match self.leases.create(id, &lease).await {
            Ok(rev) => Some(rev),
            Err(_) => match self.leases.get(id).await {
                Ok(Some(KvEntry {
                    value: Some(cur),
                    revision,
                    ..
                })) if cur.expires_at_ns < now_ns() || cur.owner == self.opts.ingest_id => {
                    self.leases.update(id, &lease, revision).await.ok()
                }
                // Deleted between the create and the read: try once more.
                Ok(None) => self.leases.create(id, &lease).await.ok(),
                _ => None,
            },
        };
        if let Some(rev) = rev {
            tracing::info!(camera = %id, owner = %self.opts.ingest_id, "camera lease taken");
            self.owned.insert(id.to_owned(), rev);
            self.sup.do_send(ApplySpec(spec));
        }
    }

    async fn renew_and_claim(&mut self) {
        let ids: Vec<(String, u64)> = self.owned.iter().map(|(k, v)| (k.clone(), *v)).collect();
        for (id, rev) in ids {
            let lease = self.lease();
            match self.leases.update(&id, &lease, rev).await {
                Ok(new_rev) => {
                    self.owned.insert(id, new_rev);
                }
                Err(e) => {
                    tracing::warn!(camera = %id, error = %e, "lease lost; stopping camera");
                    self.owned.remove(&id);
                    self.sup.do_send(RemoveCamera(id));
                }
            }
        }
        let unowned: Vec<String> = self
            .desired
            .keys()
            .filter(|k| !self.owned.contains_key(*k))
            .cloned()
            .collect();
        for id in unowned {
            self.try_claim(&id).await;
        }
    }
}
