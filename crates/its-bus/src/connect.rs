//! Connecting with retry, backoff and every authentication NATS offers.

use std::path::PathBuf;
use std::time::Duration;

use its_config::NatsSettings;
use rand::RngExt;

use crate::{Bus, BusError, ConnectionHealth};

/// Messages each subscription of a connection buffers by default (async-nats' own default).
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 65_536;

/// How a connection is opened beyond the settings.
#[derive(Debug, Clone)]
struct Extra {
    /// Messages each subscription buffers before the client drops new ones (slow consumer).
    subscription_capacity: usize,
    /// Another connection's health that counts this one's slow-consumer events too.
    parent: Option<ConnectionHealth>,
}

async fn options(
    s: &NatsSettings,
    name: &str,
    health: &ConnectionHealth,
    extra: &Extra,
) -> Result<async_nats::ConnectOptions, BusError> {
    let health = health.clone();
    let parent = extra.parent.clone();
    let mut o = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .subscription_capacity(extra.subscription_capacity.max(1))
        // After the first connection, async-nats reconnects forever with its own backoff.
        .max_reconnects(None)
        .event_callback(move |event| {
            let health = health.clone();
            let parent = parent.clone();
            async move {
                tracing::info!(%event, "nats connection event");
                health.record(&event);
                if let Some(p) = parent {
                    p.record_slow_consumer_of_sibling(&event);
                }
            }
        });
    if !s.user.is_empty() {
        o = o.user_and_password(s.user.clone(), s.password.0.clone());
    }
    if let Some(token) = s.token.get() {
        o = o.token(token.to_owned());
    }
    if let Some(seed) = s.nkey_seed.get() {
        o = o.nkey(seed.to_owned());
    }
    if !s.creds_file.is_empty() {
        o = o
            .credentials_file(&s.creds_file)
            .await
            .map_err(|source| BusError::File {
                what: "nats.creds_file",
                path: s.creds_file.clone(),
                source,
            })?;
    }
    if s.tls_required {
        o = o.require_tls(true);
    }
    if !s.tls_ca_file.is_empty() {
        o = o.add_root_certificates(PathBuf::from(&s.tls_ca_file));
    }
    if !s.tls_cert_file.is_empty() {
        o = o.add_client_certificate(
            PathBuf::from(&s.tls_cert_file),
            PathBuf::from(&s.tls_key_file),
        );
    }
    Ok(o)
}

/// The server URLs of a `nats.url` value: a comma-separated list (spaces allowed around each).
pub fn server_urls(url: &str) -> Vec<String> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Connects to `url` with the settings' authentication. `url` may list several servers of one
/// cluster, comma-separated: the client picks one of them, and on losing it reconnects to
/// another (those listed and those the cluster announces).
///
/// The first connection is retried `connect_attempts` times (0 = forever) with exponential
/// backoff from `connect_backoff_ms`, capped at 5 s, with ±25 % jitter. An authentication
/// refusal is returned at once. Once connected, the client reconnects on its own.
pub async fn connect(s: &NatsSettings, url: &str, name: &str) -> Result<Bus, BusError> {
    connect_with(
        s,
        url,
        name,
        Extra {
            subscription_capacity: DEFAULT_SUBSCRIPTION_CAPACITY,
            parent: None,
        },
    )
    .await
}

impl Bus {
    /// Opens a second connection to the same server(s), with the same settings, whose
    /// subscriptions each buffer at most `subscription_capacity` messages: beyond that, the
    /// client drops new messages of the subscription and reports a slow consumer. Its
    /// slow-consumer events are counted in its own [`health`](Bus::health) and in this bus's
    /// too, so one report covers both connections. The node's frame intake reads through such
    /// a connection (`nats.intake_capacity`).
    pub async fn bounded_sibling(
        &self,
        s: &NatsSettings,
        name: &str,
        subscription_capacity: usize,
    ) -> Result<Bus, BusError> {
        connect_with(
            s,
            &self.url,
            name,
            Extra {
                subscription_capacity,
                parent: Some(self.health.clone()),
            },
        )
        .await
    }
}

async fn connect_with(
    s: &NatsSettings,
    url: &str,
    name: &str,
    extra: Extra,
) -> Result<Bus, BusError> {
    let servers = server_urls(url);
    let mut delay = Duration::from_millis(s.connect_backoff_ms.max(1));
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let health = ConnectionHealth::default();
        let opts = options(s, name, &health, &extra).await?;
        match opts.connect(servers.clone()).await {
            Ok(client) => {
                tracing::info!(url, attempt, "connected to nats");
                return Ok(Bus {
                    client,
                    url: url.to_owned(),
                    health,
                });
            }
            Err(e) => {
                let text = e.to_string();
                if matches!(
                    e.kind(),
                    async_nats::ConnectErrorKind::AuthorizationViolation
                ) {
                    return Err(BusError::Auth {
                        url: url.to_owned(),
                        detail: text,
                    });
                }
                if is_certificate_error(&e.kind(), &text) {
                    return Err(BusError::Tls {
                        url: url.to_owned(),
                        detail: text,
                    });
                }
                if s.connect_attempts != 0 && attempt >= s.connect_attempts {
                    return Err(BusError::Connect {
                        url: url.to_owned(),
                        attempts: attempt,
                        last: text,
                    });
                }
                let jitter = rand::rng().random_range(0.75..1.25);
                let wait = delay.mul_f64(jitter);
                tracing::warn!(url, attempt, error = %text, wait_ms = wait.as_millis() as u64, "nats connect failed; retrying");
                tokio::time::sleep(wait).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A TLS failure that is about certificates (ours refused by the server, or the server's
/// refused by us), as opposed to a connection that broke during the handshake.
fn is_certificate_error(kind: &async_nats::ConnectErrorKind, text: &str) -> bool {
    use async_nats::ConnectErrorKind::{Io, Tls};
    matches!(kind, Tls | Io)
        && (text.contains("peer certificate")
            || text.contains("fatal alert")
            || text.contains("certificate"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_url_list_is_split_on_commas() {
        assert_eq!(
            super::server_urls("nats://a:1, nats://b:2,,nats://c:3 "),
            ["nats://a:1", "nats://b:2", "nats://c:3"]
        );
        assert_eq!(super::server_urls("nats://a:1"), ["nats://a:1"]);
    }
}
