//! Memory of processes, read from `/proc` (Linux).

use crate::report::ProcessMemory;

/// Resident set size of `pid`, bytes (`VmRSS` of `/proc/PID/status`); None once it has exited.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The command name of `pid` (`/proc/PID/comm`).
pub fn name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

/// The direct children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| parent(p) == Some(pid))
        .collect()
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: read after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Samples of one process.
#[derive(Debug, Clone)]
pub struct Series {
    /// Process id.
    pub pid: u32,
    /// Its name.
    pub name: String,
    /// (seconds since start, RSS bytes).
    pub samples: Vec<(f64, u64)>,
}

impl Series {
    /// An empty series for `pid`.
    pub fn new(pid: u32) -> Self {
        Series {
            pid,
            name: name(pid),
            samples: Vec::new(),
        }
    }

    /// Takes a sample at `t` seconds; false once the process is gone.
    pub fn sample(&mut self, t: f64) -> bool {
        match rss_bytes(self.pid) {
            Some(b) => {
                self.samples.push((t, b));
                true
            }
            None => false,
        }
    }

    /// The verdict over the samples after `warmup_s`.
    pub fn summarise(&self, warmup_s: f64) -> ProcessMemory {
        let mut after: Vec<(f64, u64)> = self
            .samples
            .iter()
            .copied()
            .filter(|(t, _)| *t >= warmup_s)
            .collect();
        if after.is_empty() {
            // A run shorter than the warm-up: judge what there is.
            after = self.samples.clone();
        }
        let base = after.first().map(|s| s.1).unwrap_or(0);
        let last = self.samples.last().map(|s| s.1).unwrap_or(0);
        let max = self.samples.iter().map(|s| s.1).max().unwrap_or(0);
        let slope = slope(&after) * 3600.0 / (1024.0 * 1024.0);
        let grow_limit = (16 * 1024 * 1024).max(base / 10);
        ProcessMemory {
            pid: self.pid,
            name: self.name.clone(),
            t_s: self.samples.iter().map(|s| s.0).collect(),
            rss_bytes: self.samples.iter().map(|s| s.1).collect(),
            rss_after_warmup: base,
            rss_last: last,
            rss_max: max,
            slope_mib_per_hour: slope,
            grows: after.len() >= 2 && last > base + grow_limit,
        }
    }
}

/// Least-squares slope of bytes over seconds.
fn slope(points: &[(f64, u64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1 as f64).sum::<f64>() / n;
    let cov: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 as f64 - my)).sum();
    let var: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if var == 0.0 { 0.0 } else { cov / var }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_rss_is_read_and_children_are_found() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 0);
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(children(me).contains(&child.id()));
        assert_eq!(name(child.id()), "sleep");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn growth_verdict_ignores_warmup_and_sees_a_leak() {
        let mib = 1024 * 1024;
        let mut s = Series::new(std::process::id());
        s.samples = vec![
            (0.0, 10 * mib),
            (10.0, 100 * mib),
            (20.0, 101 * mib),
            (30.0, 100 * mib),
        ];
        let flat = s.summarise(10.0);
        assert!(!flat.grows);
        assert_eq!(flat.rss_after_warmup, 100 * mib);
        s.samples.push((40.0, 200 * mib));
        let leak = s.summarise(10.0);
        assert!(leak.grows);
        assert!(leak.slope_mib_per_hour > 0.0);
    }
}
