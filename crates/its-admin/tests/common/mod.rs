//! An HTTP client for the admin API and a strict Prometheus text-format parser.

#![allow(dead_code)]

use std::collections::BTreeMap;

use awc::http::Method;

pub const VIEWER: &str = "viewer-token-0123456789";
pub const OPERATOR: &str = "operator-token-0123456789";
pub const ADMIN: &str = "admin-token-0123456789abcdef";

/// A response: status, content type, body.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub www_authenticate: Option<String>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Asserts a problem+json body with this status (and field, when given).
    pub fn assert_problem(&self, status: u16, field: Option<&str>) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(
            self.content_type, "application/problem+json",
            "{}",
            self.body
        );
        let p = self.json();
        assert_eq!(p["status"], status, "{}", self.body);
        assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()));
        if let Some(f) = field {
            assert_eq!(p["field"], f, "{}", self.body);
        }
    }
}

/// Talks real HTTP to one server and remembers every body it received.
pub struct Api {
    base: String,
    client: awc::Client,
    pub seen: std::cell::RefCell<Vec<String>>,
}

impl Api {
    pub fn new(addr: std::net::SocketAddr) -> Self {
        Api {
            base: format!("http://{addr}"),
            client: awc::Client::builder()
                .timeout(std::time::Duration::from_secs(20))
                .finish(),
            seen: Default::default(),
        }
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Option<String>,
    ) -> Resp {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        if let Some(ct) = content_type {
            req = req.insert_header(("Content-Type", ct));
        }
        let mut resp = match body {
            Some(b) => req.send_body(b).await,
            None => req.send().await,
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let bytes = resp.body().limit(16 << 20).await.expect("response body");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let r = Resp {
            status: resp.status().as_u16(),
            content_type: header("content-type").unwrap_or_default(),
            www_authenticate: header("www-authenticate"),
            body: String::from_utf8_lossy(&bytes).into_owned(),
        };
        assert!(
            r.status < 500 || r.status == 501 || (path == "/readyz" && r.status == 503),
            "{method} {path} answered {}: {}",
            r.status,
            r.body
        );
        self.seen.borrow_mut().push(r.body.clone());
        r
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.raw(Method::GET, path, token, None, None).await
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: serde_json::Value,
    ) -> Resp {
        self.raw(
            method,
            path,
            token,
            Some("application/json"),
            Some(body.to_string()),
        )
        .await
    }

    /// Asserts that no response so far contained any of the tokens.
    pub fn assert_no_token_leaked(&self) {
        for body in self.seen.borrow().iter() {
            for t in [VIEWER, OPERATOR, ADMIN] {
                assert!(!body.contains(t), "a response contains a token: {body}");
            }
        }
    }
}

/// One sample of a metrics text.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

fn valid_metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses the Prometheus text format 0.0.4 strictly: every sample belongs to a family declared
/// by a preceding `# TYPE` line, names and labels are well formed, values parse, no series
/// repeats, counters are not negative, and histogram buckets are cumulative with
/// `le="+Inf"` equal to `_count`.
pub fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut out: Vec<Sample> = Vec::new();
    let mut series = std::collections::BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let err = |m: &str| format!("line {}: {m}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !valid_metric_name(name) {
                        return Err(err("bad metric name"));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(err("bad type"));
                    }
                    if types.insert(name.to_owned(), kind.to_owned()).is_some() {
                        return Err(err("family declared twice"));
                    }
                }
                (Some("HELP"), Some(name), _) if valid_metric_name(name) => {}
                _ => return Err(err("bad comment line")),
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(err("comment without a space"));
        }
        // name{labels} value
        let (name_labels, value) = line.rsplit_once(' ').ok_or_else(|| err("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| err("bad value"))?,
        };
        let (name, labels) = match name_labels.find('{') {
            None => (name_labels.to_owned(), BTreeMap::new()),
            Some(i) => {
                let name = name_labels[..i].to_owned();
                let body = name_labels[i + 1..]
                    .strip_suffix('}')
                    .ok_or_else(|| err("unclosed labels"))?;
                let mut labels = BTreeMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    if !valid_label_name(&key) {
                        return Err(err("bad label name"));
                    }
                    if chars.next() != Some('"') {
                        return Err(err("label value not quoted"));
                    }
                    let mut v = String::new();
                    loop {
                        match chars.next() {
                            None => return Err(err("unterminated label value")),
                            Some('"') => break,
                            Some('\\') => match chars.next() {
                                Some('\\') => v.push('\\'),
                                Some('"') => v.push('"'),
                                Some('n') => v.push('\n'),
                                _ => return Err(err("bad escape")),
                            },
                            Some('\n') => return Err(err("raw newline in label")),
                            Some(c) => v.push(c),
                        }
                    }
                    if labels.insert(key, v).is_some() {
                        return Err(err("label repeated"));
                    }
                    match chars.next() {
                        None => break,
                        Some(',') => {}
                        _ => return Err(err("expected ',' between labels")),
                    }
                }
                (name, labels)
            }
        };
        if !valid_metric_name(&name) {
            return Err(err("bad metric name"));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(&name);
        let kind = types
            .get(family)
            .ok_or_else(|| err("sample before its # TYPE line"))?;
        if kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(err("negative or NaN counter"));
        }
        if !series.insert(format!("{name}{labels:?}")) {
            return Err(err("series repeated"));
        }
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    // Histogram consistency.
    for (family, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in out.iter().filter(|s| s.name == format!("{family}_bucket")) {
            let le = s.labels.get("le").ok_or("bucket without le")?;
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().map_err(|_| format!("bad le {le}"))?
            };
            let mut key = s.labels.clone();
            key.remove("le");
            groups
                .entry(format!("{key:?}"))
                .or_default()
                .push((le, s.value));
        }
        for (key, buckets) in groups {
            if !buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
            {
                return Err(format!("{family}{key}: buckets not cumulative"));
            }
            let last = buckets.last().ok_or("no buckets")?;
            if last.0 != f64::INFINITY {
                return Err(format!("{family}{key}: no +Inf bucket"));
            }
            let count = out
                .iter()
                .find(|s| {
                    s.name == format!("{family}_count") && {
                        let mut k = s.labels.clone();
                        k.remove("le");
                        format!("{k:?}") == key
                    }
                })
                .ok_or_else(|| format!("{family}{key}: no _count"))?;
            if count.value != last.1 {
                return Err(format!("{family}{key}: +Inf bucket differs from _count"));
            }
        }
    }
    Ok(out)
}

/// Sum of the samples named `name` whose labels include every pair of `with`.
pub fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}
