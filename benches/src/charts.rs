//! SVG charts of a run: grouped bar charts on a logarithmic scale, one
//! group per workload and one bar per subject, with min–max whiskers when a
//! measurement has more than one round.
//!
//! Drawn with plotters' SVG backend only: text is written as SVG `<text>`,
//! so no font files or system libraries are needed.

use std::io;
use std::ops::Range;
use std::path::Path;

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{
    families, format_ms, format_rate, ordered, subjects, workloads, SUBJECTS, THROUGHPUT_FAMILIES,
};
use crate::results::{Measurement, Results};

/// Width and height of every chart, in pixels.
pub const CHART_SIZE: (u32, u32) = (1000, 500);

/// Checkpoint workloads drawn in `checkpoints.svg`, in order (the `sync`
/// parts and byte counts stay in the report's table).
pub const CHART_CHECKPOINT_WORKLOADS: &[&str] = &[
    "first.total",
    "second.total",
    "restore",
    "rescale.1-2",
    "rescale.2-1",
    "rescale.4-3",
];

/// Colours of the subjects: the nine of [`SUBJECTS`] in order, then the
/// colours unknown subjects take in turn.
const PALETTE: &[RGBColor] = &[
    RGBColor(31, 119, 180),  // memory
    RGBColor(255, 127, 14),  // fs
    RGBColor(44, 160, 44),   // fs-incremental
    RGBColor(214, 39, 40),   // rocksdb
    RGBColor(148, 103, 189), // rocksdb-full
    RGBColor(140, 86, 75),   // raw-hashmap
    RGBColor(227, 119, 194), // raw-rocksdb
    RGBColor(127, 127, 127), // raw-rocksdb-layout
    RGBColor(188, 189, 34),  // sled
    RGBColor(23, 190, 207),  // binary-heap
    RGBColor(57, 59, 121),   // raw-rocksdb-timers
    RGBColor(173, 73, 74),
    RGBColor(99, 121, 57),
];

/// Width of the legend column at the right of a chart, in pixels.
const LEGEND_WIDTH: u32 = 190;

/// Colours by subject, the same in every chart of a run.
struct Colours {
    unknown: Vec<String>,
}

impl Colours {
    fn new(results: &Results) -> Self {
        let unknown = ordered(
            SUBJECTS,
            results.measurements.iter().map(|m| m.subject.as_str()),
        )
        .into_iter()
        .filter(|s| !SUBJECTS.contains(&s.as_str()))
        .collect();
        Colours { unknown }
    }

    fn of(&self, subject: &str) -> RGBColor {
        let index = SUBJECTS
            .iter()
            .position(|s| *s == subject)
            .or_else(|| {
                let extra = PALETTE.len() - SUBJECTS.len();
                self.unknown
                    .iter()
                    .position(|s| s == subject)
                    .map(|i| SUBJECTS.len() + i % extra)
            })
            .unwrap_or(0);
        PALETTE[index % PALETTE.len()]
    }
}

/// The x axis of a chart: one slot of width 1 per workload, ticks at the
/// slots' centres labelled with the workloads' names.
struct WorkloadAxis {
    names: Vec<String>,
}

impl Ranged for WorkloadAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let slots = self.names.len().max(1) as f64;
        let length = f64::from(limit.1 - limit.0);
        limit.0 + (value / slots * length).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            return Vec::new();
        }
        (0..self.names.len()).map(|i| i as f64 + 0.5).collect()
    }

    fn range(&self) -> Range<f64> {
        0.0..self.names.len() as f64
    }
}

impl ValueFormatter<f64> for WorkloadAxis {
    fn format_ext(&self, value: &f64) -> String {
        let slot = value.floor();
        if slot >= 0.0 {
            self.names.get(slot as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    }
}

/// One chart: bars of `subjects` over `workloads`.
struct Chart<'a> {
    title: String,
    y_desc: &'static str,
    format: fn(f64) -> String,
    workloads: Vec<String>,
    subjects: Vec<String>,
    family: &'a str,
}

/// A tick label: `text` without trailing zeros in its number (`1.00 M`
/// becomes `1 M`).
fn tick(text: String) -> String {
    let (number, rest) = text.split_once(' ').unwrap_or((&text, ""));
    let number = if number.contains('.') {
        number.trim_end_matches('0').trim_end_matches('.')
    } else {
        number
    };
    if rest.is_empty() {
        number.to_string()
    } else {
        format!("{number} {rest}")
    }
}

/// A tick label of the ops/s axis.
fn rate_tick(value: f64) -> String {
    tick(format_rate(value))
}

/// A tick label of the ms axis (the unit is in the axis title).
fn ms_tick(value: f64) -> String {
    tick(format_ms(value).trim_end_matches(" ms").to_string())
}

fn to_io(error: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("drawing a chart: {error}"))
}

/// A figure that can stand on a log scale.
fn positive(value: f64) -> Option<f64> {
    (value.is_finite() && value > 0.0).then_some(value)
}

/// The log-scale range covering every drawable figure, widened to whole
/// powers of ten; `None` when nothing can be drawn.
///
/// Only measurements with a positive median count, and of their min and
/// max only the positive ones.
fn y_range<'a>(measurements: impl Iterator<Item = &'a Measurement>) -> Option<(f64, f64)> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for m in measurements {
        let Some(median) = positive(m.median) else {
            continue;
        };
        for v in [median, m.min, m.max].into_iter().filter_map(positive) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if !lo.is_finite() || !hi.is_finite() {
        return None;
    }
    // Strictly below the smallest and above the largest figure, so a bar
    // exactly on a power of ten still shows.
    let lo = 10f64.powf(lo.log10().ceil() - 1.0);
    let hi = 10f64.powf(hi.log10().floor() + 1.0);
    Some((lo, hi))
}

fn draw(results: &Results, colours: &Colours, chart: &Chart<'_>) -> io::Result<Option<String>> {
    let find = |w: &str, s: &str| {
        results
            .find(chart.family, w, s)
            .filter(|m| positive(m.median).is_some())
    };
    let drawn: Vec<&Measurement> = chart
        .workloads
        .iter()
        .flat_map(|w| chart.subjects.iter().filter_map(move |s| find(w, s)))
        .collect();
    let Some((lo, hi)) = y_range(drawn.iter().copied()) else {
        return Ok(None);
    };
    // Only the subjects and workloads with a bar.
    let subjects: Vec<&String> = chart
        .subjects
        .iter()
        .filter(|s| chart.workloads.iter().any(|w| find(w, s).is_some()))
        .collect();
    let workloads: Vec<&String> = chart
        .workloads
        .iter()
        .filter(|w| chart.subjects.iter().any(|s| find(w, s).is_some()))
        .collect();

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(to_io)?;
        let (plot, legend) = root.split_horizontally(CHART_SIZE.0 - LEGEND_WIDTH);

        let mut ctx = ChartBuilder::on(&plot)
            .caption(&chart.title, ("sans-serif", 26))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                WorkloadAxis {
                    names: workloads.iter().map(|w| w.to_string()).collect(),
                },
                (lo..hi).log_scale(),
            )
            .map_err(to_io)?;

        let y_label = |y: &f64| (chart.format)(*y);
        ctx.configure_mesh()
            .disable_x_mesh()
            .x_desc("workload")
            .y_desc(chart.y_desc)
            .y_label_formatter(&y_label)
            .label_style(("sans-serif", 17))
            .axis_desc_style(("sans-serif", 18))
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.12))
            .draw()
            .map_err(to_io)?;

        // Bars fill 80% of a group's slot, side by side in subject order.
        let width = 0.8 / subjects.len().max(1) as f64;
        for (k, subject) in subjects.iter().enumerate() {
            let colour = colours.of(subject);
            let mut bars = Vec::new();
            let mut whiskers = Vec::new();
            for (i, w) in workloads.iter().enumerate() {
                let Some(m) = find(w, subject) else {
                    continue;
                };
                let x0 = i as f64 + 0.1 + k as f64 * width;
                let x1 = x0 + width;
                let median = m.median.min(hi);
                bars.push(Rectangle::new([(x0, lo), (x1, median)], colour.filled()));
                if let (true, Some(min), Some(max)) =
                    (m.rounds.len() > 1, positive(m.min), positive(m.max))
                {
                    if max > min {
                        let xm = (x0 + x1) / 2.0;
                        let cap = width / 4.0;
                        let (min, max) = (min.max(lo), max.min(hi));
                        for path in [
                            vec![(xm, min), (xm, max)],
                            vec![(xm - cap, min), (xm + cap, min)],
                            vec![(xm - cap, max), (xm + cap, max)],
                        ] {
                            whiskers.push(PathElement::new(path, BLACK.stroke_width(1)));
                        }
                    }
                }
            }
            ctx.draw_series(bars).map_err(to_io)?;
            ctx.draw_series(whiskers).map_err(to_io)?;
        }

        // The legend, in its own column so it never hides a bar.
        let top = 50;
        let text =
            TextStyle::from(("sans-serif", 17).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        for (k, subject) in subjects.iter().enumerate() {
            let y = top + 24 * k as i32;
            legend
                .draw(&Rectangle::new(
                    [(8, y - 7), (22, y + 7)],
                    colours.of(subject).filled(),
                ))
                .map_err(to_io)?;
            legend
                .draw(&Text::new(subject.to_string(), (30, y), text.clone()))
                .map_err(to_io)?;
        }
        root.present().map_err(to_io)?;
    }
    Ok(Some(svg))
}

/// A file name made of `family`: letters, digits, `-`, `_` and `.` kept,
/// anything else replaced by `_`.
fn file_name(family: &str) -> String {
    let stem: String = family
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{stem}.svg")
}

/// Writes an SVG chart into `dir` for every family of `results` with data
/// to draw: `throughput.svg`, `throughput-string.svg`, `large-state.svg`
/// (ops/s per workload and subject), `checkpoints.svg` (checkpoint, restore
/// and rescale times), and `<family>.svg` for an unknown family measured in
/// ops/s. Returns the names of the files written, in display order.
pub fn write_charts(results: &Results, dir: &Path) -> io::Result<Vec<String>> {
    let colours = Colours::new(results);
    let mut charts = Vec::new();
    for family in families(results) {
        let in_family = || results.measurements.iter().filter(|m| m.family == family);
        let known_rate = THROUGHPUT_FAMILIES.contains(&family.as_str());
        let unknown_rate = !known_rate
            && family != "checkpoint"
            && family != "memory"
            && in_family().all(|m| m.unit == "ops/s");
        let (name, chart) = if known_rate || unknown_rate {
            let title = match family.as_str() {
                "throughput" => "Throughput, i64 keys".to_string(),
                "throughput-string" => "Throughput, String keys of 16–32 bytes".to_string(),
                "large-state" => "Large state".to_string(),
                other => other.to_string(),
            };
            let chart = Chart {
                title: format!("{title} — ops/s, median"),
                y_desc: "ops/s (log scale)",
                format: rate_tick,
                workloads: workloads(results, &family),
                subjects: subjects(results, &family),
                family: &family,
            };
            (file_name(&family), chart)
        } else if family == "checkpoint" {
            let present = workloads(results, &family);
            let chart = Chart {
                title: "Checkpoints, restore and rescaling — ms, median".to_string(),
                y_desc: "ms (log scale)",
                format: ms_tick,
                workloads: CHART_CHECKPOINT_WORKLOADS
                    .iter()
                    .filter(|w| present.iter().any(|p| p == *w))
                    .map(|w| w.to_string())
                    .collect(),
                subjects: subjects(results, &family),
                family: &family,
            };
            ("checkpoints.svg".to_string(), chart)
        } else {
            continue;
        };
        if charts.contains(&name) {
            continue;
        }
        if let Some(svg) = draw(results, &colours, &chart)? {
            std::fs::write(dir.join(&name), svg)?;
            charts.push(name);
        }
    }
    Ok(charts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Better, Machine, RunOptions, RESULTS_VERSION};

    fn run(measurements: Vec<Measurement>) -> Results {
        Results {
            version: RESULTS_VERSION,
            machine: Machine::default(),
            date: "2025-01-02T03:04:05Z".to_string(),
            commit: None,
            options: RunOptions::default(),
            measurements,
        }
    }

    fn scratch_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "flowbench-charts-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        dir
    }

    #[test]
    fn writes_a_chart_per_family_with_data() {
        let mut measurements = Vec::new();
        for (i, subject) in ["memory", "fs", "raw-hashmap", "sled", "newdb"]
            .iter()
            .enumerate()
        {
            for workload in ["value.update", "value.get", "map.get"] {
                let base = 5.0e4 * 10f64.powi(i as i32);
                measurements.push(Measurement::new(
                    "throughput",
                    workload,
                    subject,
                    "ops/s",
                    Better::Higher,
                    vec![base, base * 1.2, base * 0.9],
                ));
            }
        }
        for subject in ["fs", "rocksdb"] {
            for workload in ["first.sync", "first.total", "restore", "rescale.1-2"] {
                measurements.push(Measurement::new(
                    "checkpoint",
                    workload,
                    subject,
                    "ms",
                    Better::Lower,
                    vec![0.04, 120.0],
                ));
            }
        }
        // Nothing drawable: no chart for this family.
        measurements.push(Measurement::new(
            "large-state",
            "value.get",
            "rocksdb",
            "ops/s",
            Better::Higher,
            vec![f64::NAN],
        ));
        measurements.push(Measurement::new(
            "memory",
            "resident",
            "memory",
            "bytes/entry",
            Better::Lower,
            vec![80.0],
        ));
        let results = run(measurements);
        let dir = scratch_dir("some");
        let written = write_charts(&results, &dir).expect("charts");
        assert_eq!(written, ["throughput.svg", "checkpoints.svg"]);
        let throughput = std::fs::read_to_string(dir.join("throughput.svg")).expect("read");
        assert!(throughput.starts_with("<svg"));
        for name in [
            "memory",
            "fs",
            "raw-hashmap",
            "sled",
            "newdb",
            "value.update",
            "map.get",
        ] {
            assert!(throughput.contains(&format!("\n{name}\n")), "{name}");
        }
        let checkpoints = std::fs::read_to_string(dir.join("checkpoints.svg")).expect("read");
        assert!(checkpoints.starts_with("<svg"));
        for name in ["fs", "rocksdb", "first.total", "rescale.1-2"] {
            assert!(checkpoints.contains(&format!("\n{name}\n")), "{name}");
        }
        assert!(!checkpoints.contains("\nfirst.sync\n"));
        assert!(!dir.join("large-state.svg").exists());
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn no_measurements_no_charts() {
        let dir = scratch_dir("none");
        let written = write_charts(&run(Vec::new()), &dir).expect("charts");
        assert!(written.is_empty());
        assert_eq!(std::fs::read_dir(&dir).expect("list").count(), 0);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn range_is_strictly_wider() {
        let m = |v: f64| Measurement::new("f", "w", "s", "ops/s", Better::Higher, vec![v]);
        let (a, b) = (m(1.0e6), m(3.0e5));
        assert_eq!(y_range([&a, &b].into_iter()), Some((1.0e5, 1.0e7)));
        let (nan, zero) = (m(f64::NAN), m(0.0));
        assert_eq!(y_range([&nan, &zero].into_iter()), None);
    }

    #[test]
    fn ticks() {
        assert_eq!(rate_tick(1.0e6), "1 M");
        assert_eq!(rate_tick(1.0e4), "10 k");
        assert_eq!(rate_tick(100.0), "100");
        assert_eq!(ms_tick(0.01), "0.01");
        assert_eq!(ms_tick(1000.0), "1000");
    }

    #[test]
    fn colours_are_stable() {
        let results = run(vec![Measurement::new(
            "throughput",
            "value.get",
            "zeta",
            "ops/s",
            Better::Higher,
            vec![1.0],
        )]);
        let colours = Colours::new(&results);
        assert_eq!(colours.of("memory"), PALETTE[0]);
        assert_eq!(colours.of("sled"), PALETTE[8]);
        assert_eq!(colours.of("binary-heap"), PALETTE[9]);
        assert_eq!(colours.of("raw-rocksdb-timers"), PALETTE[10]);
        assert_eq!(colours.of("zeta"), PALETTE[11]);
    }
}
