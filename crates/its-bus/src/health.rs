//! What happened to a connection: reconnects, slow-consumer and permission errors.
//!
//! The client reports these asynchronously (the server answers `-ERR` long after a publish
//! returned), so they are counted here and read by status reporters, metrics and tests.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Counters of one connection's events. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct ConnectionHealth(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    connects: AtomicU64,
    disconnects: AtomicU64,
    slow_consumers: AtomicU64,
    permission_violations: AtomicU64,
    server_errors: AtomicU64,
    closed: std::sync::atomic::AtomicBool,
    last_server_error: Mutex<Option<String>>,
    notify: tokio::sync::Notify,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthSnapshot {
    /// Successful (re)connections, the first one included.
    pub connects: u64,
    /// Connection losses.
    pub disconnects: u64,
    /// Times the client or server dropped messages of a subscription that read too slowly.
    pub slow_consumers: u64,
    /// Publishes or subscriptions the server refused for this identity.
    pub permission_violations: u64,
    /// Other `-ERR` answers from the server.
    pub server_errors: u64,
    /// Text of the last server error, for reports.
    pub last_server_error: Option<String>,
}

impl HealthSnapshot {
    /// Reconnections after the first connection.
    pub fn reconnects(&self) -> u64 {
        self.connects.saturating_sub(1)
    }
}

impl ConnectionHealth {
    pub(crate) fn record(&self, event: &async_nats::Event) {
        use async_nats::{Event, ServerError};
        let i = &self.0;
        match event {
            Event::Connected => {
                i.connects.fetch_add(1, Relaxed);
            }
            Event::Disconnected => {
                i.disconnects.fetch_add(1, Relaxed);
            }
            Event::Closed => {
                i.closed.store(true, std::sync::atomic::Ordering::Release);
            }
            Event::SlowConsumer(_) | Event::ServerError(ServerError::SlowConsumer(_)) => {
                i.slow_consumers.fetch_add(1, Relaxed);
                tracing::warn!(%event, "nats slow consumer: messages were dropped");
            }
            Event::ServerError(err) => {
                let text = err.to_string();
                if text.to_ascii_lowercase().contains("permissions violation") {
                    i.permission_violations.fetch_add(1, Relaxed);
                } else {
                    i.server_errors.fetch_add(1, Relaxed);
                }
                tracing::warn!(error = %text, "nats server error");
                *i.last_server_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(text);
            }
            _ => {}
        }
        i.notify.notify_waiters();
    }

    /// Counts a slow-consumer event of another connection of this process (a
    /// [`bounded_sibling`](crate::Bus::bounded_sibling)); its other events stay its own.
    pub(crate) fn record_slow_consumer_of_sibling(&self, event: &async_nats::Event) {
        use async_nats::{Event, ServerError};
        if matches!(
            event,
            Event::SlowConsumer(_) | Event::ServerError(ServerError::SlowConsumer(_))
        ) {
            self.0.slow_consumers.fetch_add(1, Relaxed);
            self.0.notify.notify_waiters();
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> HealthSnapshot {
        let i = &self.0;
        HealthSnapshot {
            connects: i.connects.load(Relaxed),
            disconnects: i.disconnects.load(Relaxed),
            slow_consumers: i.slow_consumers.load(Relaxed),
            permission_violations: i.permission_violations.load(Relaxed),
            server_errors: i.server_errors.load(Relaxed),
            last_server_error: i
                .last_server_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// Waits until the client reported the connection closed (a drain completed).
    pub(crate) async fn wait_closed(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.0.closed.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Waits until `pred` holds for the counters (checked after every event).
    pub async fn wait_for(&self, pred: impl Fn(&HealthSnapshot) -> bool) -> HealthSnapshot {
        loop {
            let notified = self.0.notify.notified();
            let snap = self.snapshot();
            if pred(&snap) {
                return snap;
            }
            notified.await;
        }
    }
}
