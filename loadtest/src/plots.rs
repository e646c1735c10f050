//! PNG plots of a report (plotters, bitmap backend).
//!
//! Text needs a TrueType font. None is bundled: the font is read at run time from
//! `ITS_LOADTEST_FONT` or DejaVu Sans (Debian package `fonts-dejavu-core`, installed by
//! `scripts/setup.sh`). Without one, the plots are drawn without any text.

use std::path::Path;
use std::sync::OnceLock;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::report::{ProcessMemory, Timeline};

const FONT_CANDIDATES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers a font once; whether text can be drawn.
fn have_font() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let from_env = std::env::var("ITS_LOADTEST_FONT").ok();
        let paths = from_env.iter().map(String::as_str).chain(FONT_CANDIDATES);
        for p in paths {
            if let Ok(bytes) = std::fs::read(p) {
                // Registered once per process for its lifetime, as plotters requires.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        tracing::warn!("no TrueType font found (set ITS_LOADTEST_FONT): plots have no text");
        false
    })
}

/// Errors of drawing, as text.
type PlotResult = Result<(), String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

const SIZE: (u32, u32) = (1000, 560);

/// Draws the latency histogram (microsecond histogram) to `path`.
pub fn latency_histogram(path: &Path, title: &str, h: &Histogram<u64>) -> PlotResult {
    let text = have_font();
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let top_ms = if h.is_empty() {
        1.0
    } else {
        (h.value_at_quantile(0.999) as f64 / 1e3 * 1.15).max(1.0)
    };
    let bins = 80usize;
    let width = top_ms / bins as f64;
    let mut counts = vec![0u64; bins];
    for v in h.iter_recorded() {
        let ms = v.value_iterated_to() as f64 / 1e3;
        let i = ((ms / width) as usize).min(bins - 1);
        counts[i] += v.count_at_value();
    }
    let ymax = counts.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.05;
    let mut b = ChartBuilder::on(&root);
    b.margin(15);
    if text {
        b.caption(title, ("sans-serif", 20))
            .x_label_area_size(40)
            .y_label_area_size(70);
    }
    let mut chart = b.build_cartesian_2d(0.0..top_ms, 0.0..ymax).map_err(err)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("latency, ms (last bin holds everything above)")
            .y_desc("frames");
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(err)?;
    chart
        .draw_series(counts.iter().enumerate().map(|(i, &c)| {
            let x0 = i as f64 * width;
            Rectangle::new([(x0, 0.0), (x0 + width * 0.9, c as f64)], BLUE.filled())
        }))
        .map_err(err)?;
    root.present().map_err(err)
}

/// Draws named series over seconds to `path`.
fn lines(
    path: &Path,
    title: &str,
    y_desc: &str,
    x: &[f64],
    series: &[(&str, Vec<f64>, RGBColor)],
) -> PlotResult {
    let text = have_font();
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let xmax = x.last().copied().unwrap_or(1.0).max(1.0);
    let ymax = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.1;
    let mut b = ChartBuilder::on(&root);
    b.margin(15);
    if text {
        b.caption(title, ("sans-serif", 20))
            .x_label_area_size(40)
            .y_label_area_size(70);
    }
    let mut chart = b.build_cartesian_2d(0.0..xmax, 0.0..ymax).map_err(err)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("seconds since the load started").y_desc(y_desc);
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(err)?;
    for (name, ys, colour) in series {
        let colour = *colour;
        let s = chart
            .draw_series(LineSeries::new(
                x.iter().copied().zip(ys.iter().copied()),
                colour.stroke_width(2),
            ))
            .map_err(err)?;
        if text {
            s.label(*name).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}

/// Latency p50, p99 and max per second.
pub fn latency_over_time(path: &Path, title: &str, t: &Timeline) -> PlotResult {
    let x: Vec<f64> = t.second.iter().map(|s| *s as f64).collect();
    lines(
        path,
        title,
        "latency of results received in that second, ms",
        &x,
        &[
            ("p50", t.p50_ms.clone(), BLUE),
            ("p99", t.p99_ms.clone(), RED),
            ("max", t.max_ms.clone(), RGBColor(150, 150, 150)),
        ],
    )
}

/// Frames sent, answered and dropped per second.
pub fn throughput_over_time(path: &Path, title: &str, t: &Timeline) -> PlotResult {
    let x: Vec<f64> = t.second.iter().map(|s| *s as f64).collect();
    let f = |v: &[u64]| v.iter().map(|c| *c as f64).collect::<Vec<_>>();
    lines(
        path,
        title,
        "frames per second",
        &x,
        &[
            ("sent", f(&t.sent), BLUE),
            ("results", f(&t.answered), GREEN),
            ("drops", f(&t.dropped), RED),
        ],
    )
}

/// RSS of each sampled process over time.
pub fn memory_over_time(path: &Path, title: &str, procs: &[ProcessMemory]) -> PlotResult {
    let palette = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    let x: Vec<f64> = procs
        .iter()
        .max_by_key(|p| p.t_s.len())
        .map(|p| p.t_s.clone())
        .unwrap_or_default();
    let names: Vec<String> = procs
        .iter()
        .map(|p| format!("{} ({})", p.name, p.pid))
        .collect();
    let series: Vec<(&str, Vec<f64>, RGBColor)> = procs
        .iter()
        .zip(&names)
        .enumerate()
        .map(|(i, (p, n))| {
            let ys: Vec<f64> = p.rss_bytes.iter().map(|b| *b as f64 / 1048576.0).collect();
            (n.as_str(), ys, palette[i % palette.len()])
        })
        .collect();
    lines(path, title, "RSS, MiB", &x, &series)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_written_as_png() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in [1000u64, 2000, 2500, 40_000] {
            h.record(v).unwrap();
        }
        let t = Timeline {
            second: vec![0, 1, 2],
            sent: vec![10, 20, 20],
            answered: vec![9, 20, 21],
            dropped: vec![0, 1, 0],
            p50_ms: vec![1.0, 2.0, 1.5],
            p99_ms: vec![3.0, 4.0, 3.5],
            max_ms: vec![5.0, 6.0, 5.5],
        };
        let a = dir.path().join("h.png");
        let b = dir.path().join("l.png");
        let c = dir.path().join("t.png");
        latency_histogram(&a, "test", &h).unwrap();
        latency_over_time(&b, "test", &t).unwrap();
        throughput_over_time(&c, "test", &t).unwrap();
        for p in [a, b, c] {
            let bytes = std::fs::read(&p).unwrap();
            assert_eq!(
                &bytes[..8],
                b"\x89PNG\r\n\x1a\n",
                "{} is a PNG",
                p.display()
            );
        }
    }
}
