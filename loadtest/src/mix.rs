//! Mixes of resolutions and priorities, and how cameras are assigned to them.
//!
//! Assignment is a smooth weighted round robin: camera `i` gets the class whose share is most
//! behind after `i` cameras. Every prefix of the camera list therefore follows the weights as
//! closely as whole cameras allow, which keeps the mix right while a ramp adds cameras.

use its_proto::Priority;

use crate::LoadError;

/// A frame size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Resolution {
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
}

impl Resolution {
    /// Parses `720p`, `1080p`, `4k` (or `2160p`), `480p`, or `WIDTHxHEIGHT`.
    pub fn parse(s: &str) -> Result<Self, LoadError> {
        let (width, height) = match s.to_ascii_lowercase().as_str() {
            "480p" => (854, 480),
            "720p" => (1280, 720),
            "1080p" => (1920, 1080),
            "4k" | "2160p" => (3840, 2160),
            other => {
                let (w, h) = other
                    .split_once('x')
                    .ok_or_else(|| LoadError::Mix(format!("unknown resolution {s:?}")))?;
                let parse = |v: &str| {
                    v.parse::<u32>()
                        .map_err(|_| LoadError::Mix(format!("bad resolution {s:?}")))
                };
                (parse(w)?, parse(h)?)
            }
        };
        if !(16..=8192).contains(&width) || !(16..=8192).contains(&height) {
            return Err(LoadError::Mix(format!(
                "resolution {s:?} must be 16 to 8192 px on each side"
            )));
        }
        Ok(Resolution { width, height })
    }

    /// A short label: `720p`, `1080p`, `4k`, else `WxH`.
    pub fn label(&self) -> String {
        match (self.width, self.height) {
            (854, 480) => "480p".into(),
            (1280, 720) => "720p".into(),
            (1920, 1080) => "1080p".into(),
            (3840, 2160) => "4k".into(),
            (w, h) => format!("{w}x{h}"),
        }
    }
}

/// Weighted classes, e.g. `720p=80,1080p=15,4k=5`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix<T> {
    /// Each class with its weight (> 0).
    pub entries: Vec<(T, f64)>,
}

impl<T: Clone> Mix<T> {
    /// Parses `name=weight,...` (a bare `name` weighs 1) with `parse` for the names.
    pub fn parse_with(
        spec: &str,
        parse: impl Fn(&str) -> Result<T, LoadError>,
    ) -> Result<Self, LoadError> {
        let mut entries = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = match part.split_once('=') {
                Some((n, w)) => {
                    let w: f64 = w
                        .trim()
                        .trim_end_matches('%')
                        .parse()
                        .map_err(|_| LoadError::Mix(format!("bad weight in {part:?}")))?;
                    (n.trim(), w)
                }
                None => (part, 1.0),
            };
            if !(weight.is_finite() && weight >= 0.0) {
                return Err(LoadError::Mix(format!("weight in {part:?} must be >= 0")));
            }
            if weight > 0.0 {
                entries.push((parse(name)?, weight));
            }
        }
        if entries.is_empty() {
            return Err(LoadError::Mix(format!(
                "{spec:?} names no class with a weight above 0"
            )));
        }
        Ok(Mix { entries })
    }

    /// The class of each of `n` cameras (smooth weighted round robin, deterministic).
    pub fn assign(&self, n: usize) -> Vec<T> {
        let total: f64 = self.entries.iter().map(|(_, w)| w).sum();
        let mut current = vec![0.0f64; self.entries.len()];
        (0..n)
            .map(|_| {
                for (c, (_, w)) in current.iter_mut().zip(&self.entries) {
                    *c += w;
                }
                let (best, _) = current
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f64::MIN),
                        |acc, (i, &c)| if c > acc.1 { (i, c) } else { acc },
                    );
                current[best] -= total;
                self.entries[best].0.clone()
            })
            .collect()
    }
}

impl Mix<Resolution> {
    /// Parses a resolution mix.
    pub fn resolutions(spec: &str) -> Result<Self, LoadError> {
        Mix::parse_with(spec, Resolution::parse)
    }
}

impl Mix<Priority> {
    /// Parses a priority mix (`urgent=5,normal=95`).
    pub fn priorities(spec: &str) -> Result<Self, LoadError> {
        Mix::parse_with(spec, |name| {
            Priority::ALL
                .into_iter()
                .find(|p| p.as_str() == name.to_ascii_lowercase())
                .ok_or_else(|| {
                    LoadError::Mix(format!(
                        "unknown priority {name:?} (emergency, urgent, normal, background)"
                    ))
                })
        })
    }
}

/// Formats a mix back as `name=weight,...`.
pub fn describe<T>(mix: &Mix<T>, name: impl Fn(&T) -> String) -> String {
    mix.entries
        .iter()
        .map(|(t, w)| format!("{}={w}", name(t)))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_and_explicit_resolutions_parse() {
        assert_eq!(
            Resolution::parse("4K").unwrap(),
            Resolution {
                width: 3840,
                height: 2160
            }
        );
        assert_eq!(Resolution::parse("320x240").unwrap().label(), "320x240");
        assert!(Resolution::parse("8x8").is_err());
        assert!(Resolution::parse("huge").is_err());
    }

    #[test]
    fn every_prefix_follows_the_weights() {
        let mix = Mix::priorities("urgent=5,normal=95").unwrap();
        let a = mix.assign(200);
        assert_eq!(a.iter().filter(|p| **p == Priority::Urgent).count(), 10);
        for n in [20, 40, 100] {
            let urgent = a[..n].iter().filter(|p| **p == Priority::Urgent).count();
            assert_eq!(urgent, n / 20, "prefix of {n}");
        }
    }

    #[test]
    fn bad_mixes_are_refused_with_a_reason() {
        assert!(Mix::priorities("loud=5").is_err());
        assert!(Mix::priorities("urgent=-1").is_err());
        assert!(Mix::priorities("urgent=0").is_err());
        assert!(Mix::resolutions("720p=x").is_err());
        let m = Mix::resolutions("720p=80,1080p=15,4k=5").unwrap();
        assert_eq!(describe(&m, Resolution::label), "720p=80,1080p=15,4k=5");
    }
}
