//! Prometheus text exposition (format 0.0.4): a writer that keeps every family's `# HELP` and
//! `# TYPE` lines before its samples and escapes label values, and a fixed-bucket histogram.

use std::fmt::Write as _;

/// Content type of `/metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latency buckets, seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Batch size buckets, frames.
pub const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Responses of the admin API by route pattern, method and status.
#[derive(Debug, Default)]
pub struct HttpCounters {
    counts: std::sync::Mutex<std::collections::BTreeMap<(String, &'static str, u16), u64>>,
}

impl HttpCounters {
    /// Counts one response. Methods outside the standard set count as `OTHER`, so clients
    /// cannot grow the label set.
    pub fn record(&self, route: String, method: &str, status: u16) {
        const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
        let method = METHODS
            .iter()
            .find(|m| **m == method)
            .copied()
            .unwrap_or("OTHER");
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry((route, method, status)).or_default() += 1;
    }

    /// Writes the `its_admin_http_responses_total` family.
    pub fn render(&self, e: &mut Exposition) {
        e.family(
            "its_admin_http_responses_total",
            Kind::Counter,
            "Responses of the admin API by route pattern, method and status code.",
        );
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for ((route, method, status), n) in c.iter() {
            e.sample(
                "its_admin_http_responses_total",
                &[
                    ("route", route),
                    ("method", method),
                    ("code", &status.to_string()),
                ],
                *n as f64,
            );
        }
    }
}

/// A histogram with fixed upper bounds.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending; `+Inf` is implied).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Adds `n` observations of `v`.
    pub fn observe_n(&mut self, v: f64, n: u64) {
        if !v.is_finite() || n == 0 {
            return;
        }
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i] += n;
        }
        self.sum += v * n as f64;
        self.count += n;
    }

    /// Adds one observation.
    pub fn observe(&mut self, v: f64) {
        self.observe_n(v, 1);
    }
}

/// Builds an exposition text.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// Kind of a metric family.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Monotonic counter (`_total` names).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

impl Exposition {
    /// Starts a family: its help and type lines. Samples of the family follow.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample.
    pub fn sample(&mut self, name: &str, pairs: &[(&str, &str)], v: f64) {
        let _ = writeln!(self.out, "{name}{} {}", labels(pairs), number(v));
    }

    /// The samples of one histogram series (`_bucket`, `_sum`, `_count`).
    pub fn histogram(&mut self, name: &str, pairs: &[(&str, &str)], h: &Histogram) {
        let mut cum = 0u64;
        for (b, c) in h.bounds.iter().zip(&h.counts) {
            cum += c;
            let le = number(*b);
            let mut p = pairs.to_vec();
            p.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &p, cum as f64);
        }
        let mut p = pairs.to_vec();
        p.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &p, h.count as f64);
        self.sample(&format!("{name}_sum"), pairs, h.sum);
        self.sample(&format!("{name}_count"), pairs, h.count as f64);
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::new(&BATCH_BUCKETS);
        h.observe_n(1.0, 3);
        h.observe_n(8.0, 2);
        h.observe(1000.0);
        let mut e = Exposition::default();
        e.family("b", Kind::Histogram, "x");
        e.histogram("b", &[("node", "n\"1")], &h);
        let text = e.finish();
        assert!(
            text.contains("b_bucket{node=\"n\\\"1\",le=\"1\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("b_bucket{node=\"n\\\"1\",le=\"8\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("b_bucket{node=\"n\\\"1\",le=\"+Inf\"} 6\n"),
            "{text}"
        );
        assert!(text.contains("b_count{node=\"n\\\"1\"} 6\n"), "{text}");
        assert!(text.contains("b_sum{node=\"n\\\"1\"} 1019\n"), "{text}");
    }
}
