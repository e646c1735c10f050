//! The NATS layer.
//!
//! Architecture invariant: this is the only crate that imports `async-nats`. Everything else
//! talks to NATS through [`Bus`], typed with the messages of `its-proto`.

mod connect;
mod health;
mod kv;
mod server;

use bytes::Bytes;
use serde::Serialize;

pub use async_nats::{Message, Subscriber};
pub use connect::{DEFAULT_SUBSCRIPTION_CAPACITY, connect, server_urls};
pub use health::{ConnectionHealth, HealthSnapshot};
pub use kv::{Kv, KvEntry};
pub use server::LocalNatsServer;

/// Errors of the NATS layer.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Could not connect within the configured attempts.
    #[error("cannot connect to NATS at {url} after {attempts} attempt(s): {last}")]
    Connect {
        /// The URL(s) tried.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: String,
    },
    /// The server refused our credentials; retrying will not help.
    #[error("NATS at {url} refused the credentials: {detail}")]
    Auth {
        /// The URL(s) tried.
        url: String,
        /// The server's answer.
        detail: String,
    },
    /// The TLS handshake failed: a certificate was refused by either side; retrying will
    /// not help.
    #[error(
        "TLS with NATS at {url} failed: {detail} (check nats.tls_ca_file, the CA of the server's certificate, and nats.tls_cert_file / nats.tls_key_file, a client certificate the server's CA signed)"
    )]
    Tls {
        /// The URL(s) tried.
        url: String,
        /// The TLS error.
        detail: String,
    },
    /// A credentials, key or certificate file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    File {
        /// Which setting.
        what: &'static str,
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Publishing failed.
    #[error("publish to {subject}: {detail}")]
    Publish {
        /// The subject.
        subject: String,
        /// What failed.
        detail: String,
    },
    /// Subscribing failed.
    #[error("subscribe to {subject}: {detail}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// What failed.
        detail: String,
    },
    /// A message could not be encoded or decoded.
    #[error(transparent)]
    Proto(#[from] its_proto::ProtoError),
    /// A JetStream key-value operation failed.
    #[error("key-value bucket {bucket}: {detail}")]
    Kv {
        /// The bucket.
        bucket: String,
        /// What failed.
        detail: String,
    },
    /// The local nats-server could not be started.
    #[error("cannot start nats-server ({bin}): {detail}")]
    Server {
        /// The executable.
        bin: String,
        /// What failed.
        detail: String,
    },
    /// Flushing or draining the connection failed.
    #[error("NATS connection: {0}")]
    Connection(String),
    /// A request got no reply: nobody listens on the subject, or the reply did not come in
    /// time.
    #[error("request to {subject}: {}", if *no_responders { "no responders" } else { "no reply in time" })]
    Request {
        /// The subject.
        subject: String,
        /// True when the server said nobody subscribes to the subject; false on a timeout.
        no_responders: bool,
    },
}

/// The longest [`Bus::drain`] waits for each of its steps.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// What [`Bus::round_trip`] asks.
const ROUND_TRIP_SUBJECT: &str = "$JS.API.INFO";
/// How long [`Bus::round_trip`] waits for the server's answer.
const ROUND_TRIP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A connected NATS client: a cheap handle, clone it freely.
#[derive(Clone, Debug)]
pub struct Bus {
    client: async_nats::Client,
    url: String,
    health: ConnectionHealth,
}

impl Bus {
    /// Counters of this connection's events (reconnects, slow consumers, refused permissions).
    pub fn health(&self) -> &ConnectionHealth {
        &self.health
    }

    /// The server URL(s) this bus connected to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Publishes a wire message encoded as a MessagePack map.
    pub async fn publish_msg<T: Serialize>(
        &self,
        subject: String,
        msg: &T,
    ) -> Result<(), BusError> {
        let bytes = its_proto::encode(msg)?;
        self.publish_raw(subject, Bytes::from(bytes)).await
    }

    /// Publishes raw bytes.
    pub async fn publish_raw(&self, subject: String, payload: Bytes) -> Result<(), BusError> {
        self.client
            .publish(subject.clone(), payload)
            .await
            .map_err(|e| BusError::Publish {
                subject,
                detail: e.to_string(),
            })
    }

    /// Publishes a wire message encoded as a MessagePack map, with message headers (for
    /// example the W3C trace context, `traceparent` and `tracestate`).
    pub async fn publish_msg_with_headers<T: Serialize>(
        &self,
        subject: String,
        headers: &[(String, String)],
        msg: &T,
    ) -> Result<(), BusError> {
        let bytes = its_proto::encode(msg)?;
        self.publish_raw_with_headers(subject, headers, Bytes::from(bytes))
            .await
    }

    /// Publishes raw bytes with message headers. A header name must be printable ASCII
    /// without `:`, a value must not hold CR or LF; either is refused before anything is sent.
    /// An empty list publishes without headers.
    pub async fn publish_raw_with_headers(
        &self,
        subject: String,
        headers: &[(String, String)],
        payload: Bytes,
    ) -> Result<(), BusError> {
        if headers.is_empty() {
            return self.publish_raw(subject, payload).await;
        }
        let map = header_map(headers).map_err(|detail| BusError::Publish {
            subject: subject.clone(),
            detail,
        })?;
        self.client
            .publish_with_headers(subject.clone(), map, payload)
            .await
            .map_err(|e| BusError::Publish {
                subject,
                detail: e.to_string(),
            })
    }

    /// Subscribes to a subject (wildcards allowed).
    pub async fn subscribe(&self, subject: &str) -> Result<Subscriber, BusError> {
        self.client
            .subscribe(subject.to_owned())
            .await
            .map_err(|e| BusError::Subscribe {
                subject: subject.to_owned(),
                detail: e.to_string(),
            })
    }

    /// Subscribes as a member of a queue group: each message goes to one member.
    pub async fn queue_subscribe(
        &self,
        subject: &str,
        group: &str,
    ) -> Result<Subscriber, BusError> {
        self.client
            .queue_subscribe(subject.to_owned(), group.to_owned())
            .await
            .map_err(|e| BusError::Subscribe {
                subject: subject.to_owned(),
                detail: e.to_string(),
            })
    }

    /// Waits until everything published so far was written to the connection's socket (not an
    /// answer from the server: for that, and for ordering across connections, use
    /// [`Bus::round_trip`]).
    pub async fn flush(&self) -> Result<(), BusError> {
        self.client
            .flush()
            .await
            .map_err(|e| BusError::Connection(e.to_string()))
    }

    /// A round trip through the server on this connection: returns once the server has
    /// processed everything this connection sent before (a subscription is registered, an
    /// unsubscription done, a publish routed to every subscriber) and this connection has read
    /// everything the server sent it before the answer (each message routed to one of its
    /// subscriptions is in that subscription's buffer).
    ///
    /// [`Bus::flush`] is not that: async-nats' `Client::flush` only writes the connection's
    /// buffer to the socket and never waits for the server, and the server keeps no order
    /// between two connections. The round trip is a request to `$JS.API.INFO`, a subject the
    /// ingest and node roles may publish (config/nats/roles.conf) that the server answers at
    /// once without side effects (JetStream's account info, or its own "no responders").
    /// Any answer counts; none within 5 s (an identity that may not publish it) is an error.
    pub async fn round_trip(&self) -> Result<(), BusError> {
        match self
            .request_msg::<(), ()>(ROUND_TRIP_SUBJECT.into(), &(), ROUND_TRIP_TIMEOUT)
            .await
        {
            Ok(())
            | Err(BusError::Proto(_))
            | Err(BusError::Request {
                no_responders: true,
                ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Drains the connection and returns once it is done: everything published so far was
    /// written to the server's socket (a flush: the client's buffer written, not an answer
    /// from the server; [`Bus::round_trip`] is that), subscriptions stopped and their pending
    /// messages were delivered, and the connection closed. Each step waits at most
    /// [`DRAIN_TIMEOUT`]; a step that does not finish in time (the server is unreachable) is
    /// an error saying that messages may not have reached the server.
    pub async fn drain(&self) -> Result<(), BusError> {
        let late = |what: &str| {
            BusError::Connection(format!(
                "{what} did not finish within {} s; messages published last may not have reached the server",
                DRAIN_TIMEOUT.as_secs()
            ))
        };
        tokio::time::timeout(DRAIN_TIMEOUT, self.client.flush())
            .await
            .map_err(|_| late("the flush before the drain"))?
            .map_err(|e| BusError::Connection(format!("flush before the drain: {e}")))?;
        self.client
            .drain()
            .await
            .map_err(|e| BusError::Connection(e.to_string()))?;
        tokio::time::timeout(DRAIN_TIMEOUT, self.health.wait_closed())
            .await
            .map_err(|_| late("the drain"))
    }

    /// Whether the client is connected right now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Largest payload the server accepts, bytes.
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Opens (creating if absent) a JetStream key-value bucket of MessagePack values.
    pub async fn kv<T>(&self, bucket: &str, history: i64) -> Result<Kv<T>, BusError> {
        Kv::open(self.client.clone(), self.health.clone(), bucket, history, 1).await
    }

    /// As [`kv`](Self::kv), creating an absent bucket with `replicas` copies on the servers of
    /// a NATS cluster (so it survives the loss of a server); an existing bucket is opened as it
    /// is.
    pub async fn kv_replicated<T>(
        &self,
        bucket: &str,
        history: i64,
        replicas: usize,
    ) -> Result<Kv<T>, BusError> {
        Kv::open(
            self.client.clone(),
            self.health.clone(),
            bucket,
            history,
            replicas,
        )
        .await
    }

    /// Sends a request encoded as a MessagePack map and waits at most `timeout` for one reply,
    /// decoded as `R`.
    pub async fn request_msg<Q: Serialize, R: serde::de::DeserializeOwned>(
        &self,
        subject: String,
        msg: &Q,
        timeout: std::time::Duration,
    ) -> Result<R, BusError> {
        let payload = Bytes::from(its_proto::encode(msg)?);
        let request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        match self.client.send_request(subject.clone(), request).await {
            Ok(reply) => Ok(its_proto::decode(&reply.payload)?),
            Err(e) => match e.kind() {
                async_nats::RequestErrorKind::NoResponders => Err(BusError::Request {
                    subject,
                    no_responders: true,
                }),
                async_nats::RequestErrorKind::TimedOut => Err(BusError::Request {
                    subject,
                    no_responders: false,
                }),
                _ => Err(BusError::Publish {
                    subject,
                    detail: e.to_string(),
                }),
            },
        }
    }
}

/// The headers of a received message as name/value pairs, in no particular order (empty when
/// it has none); a name with several values gives one pair per value.
pub fn message_headers(msg: &Message) -> Vec<(String, String)> {
    let Some(h) = &msg.headers else {
        return Vec::new();
    };
    h.iter()
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |v| (name.to_string(), v.as_str().to_owned()))
        })
        .collect()
}

fn header_map(headers: &[(String, String)]) -> Result<async_nats::HeaderMap, String> {
    let mut map = async_nats::HeaderMap::new();
    for (name, value) in headers {
        let n: async_nats::HeaderName = name
            .parse()
            .map_err(|e| format!("header name {name:?}: {e}"))?;
        if value.contains(['\r', '\n']) {
            return Err(format!("header {name}: the value holds a line break"));
        }
        map.append(n, value.as_str());
    }
    Ok(map)
}
