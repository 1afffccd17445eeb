//! Renders a run's [`Results`] as `report.md`: medians with their spread,
//! ratios between figures of the same run, checkpoint and memory tables,
//! links to the charts and, optionally, a comparison with an earlier run.
//!
//! Nothing here panics on odd data: a missing measurement, a zero median or
//! a NaN shows as "–".

use std::collections::HashSet;
use std::fmt::Write as _;

use crate::results::{Better, Measurement, Results};

/// Subjects (backends, then baselines) in display order; unknown subjects
/// follow in order of appearance.
pub const SUBJECTS: &[&str] = &[
    "memory",
    "fs",
    "fs-incremental",
    "rocksdb",
    "rocksdb-full",
    "raw-hashmap",
    "raw-rocksdb",
    "raw-rocksdb-layout",
    "sled",
    "binary-heap",
    "raw-rocksdb-timers",
];

/// Workload families in display order; unknown families follow in order of
/// appearance.
pub const FAMILIES: &[&str] = &[
    "throughput",
    "throughput-string",
    "large-state",
    "checkpoint",
    "memory",
    "timers",
];

/// Families whose figures are operations per second, shown as a table of
/// workloads × subjects followed by a table of ratios.
pub const THROUGHPUT_FAMILIES: &[&str] = &["throughput", "throughput-string", "large-state"];

/// Workloads of the throughput families, in display order.
pub const THROUGHPUT_WORKLOADS: &[&str] = &[
    "value.update",
    "value.get",
    "list.add",
    "list.get",
    "map.put",
    "map.get",
];

/// Workloads of the `checkpoint` family, in display order.
pub const CHECKPOINT_WORKLOADS: &[&str] = &[
    "first.sync",
    "first.total",
    "first.bytes",
    "second.sync",
    "second.total",
    "second.bytes",
    "restore",
    "rescale.1-2",
    "rescale.2-1",
    "rescale.4-3",
];

/// Workloads of the `timers` family, in display order.
pub const TIMER_WORKLOADS: &[&str] = &["register", "fire"];

/// Workloads of the `memory` family, in display order.
pub const MEMORY_WORKLOADS: &[&str] = &["resident"];

/// The baseline the memory figures are divided by.
pub const MEMORY_BASELINE: &str = "raw-hashmap";

/// Ratios of the throughput tables, `(numerator, denominator)`: each heap
/// backend against the per-key-group HashMap, `rocksdb` against the raw
/// stores, then backends against each other.
pub const RATIOS: &[(&str, &str)] = &[
    ("memory", "raw-hashmap"),
    ("fs", "raw-hashmap"),
    ("fs-incremental", "raw-hashmap"),
    ("rocksdb", "raw-rocksdb"),
    ("rocksdb", "raw-rocksdb-layout"),
    ("rocksdb", "sled"),
    ("fs", "memory"),
    ("fs-incremental", "fs"),
    ("rocksdb", "fs"),
    ("memory", "binary-heap"),
    ("rocksdb", "raw-rocksdb-timers"),
];

/// Two runs' figures within this fraction of each other are called `same`.
pub const SAME_WITHIN: f64 = 0.05;

/// What a cell shows for a missing or meaningless figure.
pub const MISSING: &str = "–";

/// Short descriptions of the baselines, shown under the header for the
/// baselines that ran.
const BASELINES: &[(&str, &str)] = &[
    (
        "raw-hashmap",
        "a HashMap per key group, the upper limit for the heap backends",
    ),
    (
        "raw-rocksdb",
        "rust-rocksdb with the backend's options and plain keys",
    ),
    (
        "raw-rocksdb-layout",
        "rust-rocksdb with the backend's options and key bytes (key-group prefix, lengths)",
    ),
    (
        "binary-heap",
        "a std BinaryHeap of (timestamp, key) timers, the upper limit for heap timers",
    ),
    (
        "raw-rocksdb-timers",
        "rust-rocksdb with the backend's options and timestamp|key keys, fired by one iterator",
    ),
    ("sled", "sled 0.34 with the backend's key bytes"),
];

/// The known workloads of `family`, in display order (empty for an unknown
/// family).
pub fn known_workloads(family: &str) -> &'static [&'static str] {
    match family {
        "throughput" | "throughput-string" | "large-state" => THROUGHPUT_WORKLOADS,
        "checkpoint" => CHECKPOINT_WORKLOADS,
        "memory" => MEMORY_WORKLOADS,
        "timers" => TIMER_WORKLOADS,
        _ => &[],
    }
}

/// The distinct names of `seen`: those in `known` first, in `known`'s
/// order, then the others in order of appearance.
pub fn ordered<'a>(known: &[&str], seen: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let seen: Vec<&str> = seen.into_iter().collect();
    let present: HashSet<&str> = seen.iter().copied().collect();
    let mut names: Vec<String> = known
        .iter()
        .filter(|name| present.contains(**name))
        .map(|name| name.to_string())
        .collect();
    for name in seen {
        if !known.contains(&name) && !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

/// The families of `results`, in display order.
pub fn families(results: &Results) -> Vec<String> {
    ordered(
        FAMILIES,
        results.measurements.iter().map(|m| m.family.as_str()),
    )
}

/// The workloads of `family` in `results`, in display order.
pub fn workloads(results: &Results, family: &str) -> Vec<String> {
    ordered(
        known_workloads(family),
        of_family(results, family).map(|m| m.workload.as_str()),
    )
}

/// The subjects of `family` in `results`, in display order.
pub fn subjects(results: &Results, family: &str) -> Vec<String> {
    ordered(
        SUBJECTS,
        of_family(results, family).map(|m| m.subject.as_str()),
    )
}

fn of_family<'a>(results: &'a Results, family: &'a str) -> impl Iterator<Item = &'a Measurement> {
    results
        .measurements
        .iter()
        .filter(move |m| m.family == family)
}

/// `value` with three significant digits, scaled by the largest of `units`
/// (`(factor, suffix)`, largest first) it reaches; `None` for a non-finite
/// value.
fn scaled(value: f64, units: &[(f64, &str)]) -> Option<String> {
    if !value.is_finite() {
        return None;
    }
    let magnitude = value.abs();
    // 999.6 k rounds to "1000 k": move such values up a unit.
    let (factor, suffix) = units
        .iter()
        .copied()
        .find(|(factor, _)| magnitude >= factor * 0.9995)
        .unwrap_or((1.0, ""));
    Some(format!("{}{suffix}", significant(value / factor, 3)))
}

/// `value` with `digits` significant digits, no exponent, at least the
/// units digit (so 950 stays 950 and 12.34 becomes 12.3).
fn significant(value: f64, digits: i32) -> String {
    if value == 0.0 || !value.is_finite() {
        return if value == 0.0 { "0" } else { MISSING }.to_string();
    }
    // Round first, so 9.996 becomes 10.0 and 0.9997 becomes 1.00.
    let step = 10f64.powi(value.abs().log10().floor() as i32 - digits + 1);
    let rounded = (value / step).round() * step;
    let magnitude = rounded.abs().log10().floor() as i32;
    let decimals = (digits - 1 - magnitude).clamp(0, 9) as usize;
    format!("{rounded:.decimals$}")
}

/// An operations-per-second figure: `4.21 M`, `458 k`, `950`; "–" when
/// not finite.
pub fn format_rate(value: f64) -> String {
    scaled(
        value,
        &[(1e12, " T"), (1e9, " G"), (1e6, " M"), (1e3, " k")],
    )
    .unwrap_or_else(|| MISSING.to_string())
}

/// A byte count in decimal units: `950 B`, `1.2 kB`, `12.3 MB`, `458 MB`;
/// "–" when not finite.
pub fn format_bytes(value: f64) -> String {
    if !value.is_finite() {
        return MISSING.to_string();
    }
    let units = [(1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")];
    let magnitude = value.abs();
    let (factor, suffix) = units
        .iter()
        .copied()
        .find(|(factor, _)| magnitude >= factor * 0.99995)
        .unwrap_or((1.0, "B"));
    let v = value / factor;
    if factor == 1.0 || v.abs() >= 99.95 {
        format!("{v:.0} {suffix}")
    } else {
        format!("{v:.1} {suffix}")
    }
}

/// A time in milliseconds: `1234 ms`, `56.7 ms`, `3.21 ms`, `0.041 ms` (two
/// significant digits below a millisecond); "–" when not finite.
pub fn format_ms(value: f64) -> String {
    if !value.is_finite() {
        return MISSING.to_string();
    }
    let magnitude = value.abs();
    let decimals = if magnitude == 0.0 || magnitude >= 99.95 {
        0
    } else if magnitude >= 9.995 {
        1
    } else if magnitude >= 0.9995 {
        2
    } else {
        // Two significant digits: 0.41, 0.041, 0.0041.
        ((-magnitude.log10()).ceil() as usize + 1).min(9)
    };
    format!("{value:.decimals$} ms")
}

/// A ratio: `0.43×`, `1.00×`, `12.3×`; "–" when not finite.
pub fn format_ratio(value: f64) -> String {
    if !value.is_finite() {
        return MISSING.to_string();
    }
    let magnitude = value.abs();
    if magnitude >= 99.5 {
        format!("{value:.0}×")
    } else if magnitude >= 9.995 {
        format!("{value:.1}×")
    } else {
        format!("{value:.2}×")
    }
}

/// A figure in `unit`: `ops/s` as [`format_rate`], `ms` as [`format_ms`],
/// `bytes` as [`format_bytes`], anything else with three significant
/// digits and the unit.
pub fn format_value(value: f64, unit: &str) -> String {
    if !value.is_finite() {
        return MISSING.to_string();
    }
    match unit {
        "ops/s" => format_rate(value),
        "ms" => format_ms(value),
        "bytes" => format_bytes(value),
        "bytes/entry" => significant(value, 3),
        "" => significant(value, 3),
        _ => format!("{} {unit}", significant(value, 3)),
    }
}

/// A spread as `±12%` (`±2.5%` under 10%); `None` when not finite.
pub fn format_spread(spread: f64) -> Option<String> {
    if !spread.is_finite() {
        return None;
    }
    let percent = spread.abs() * 100.0;
    Some(if percent >= 9.95 {
        format!("±{percent:.0}%")
    } else {
        format!("±{percent:.1}%")
    })
}

/// `numerator / denominator`, `None` unless both are finite and the
/// denominator is not zero.
pub fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    let r = numerator / denominator;
    (numerator.is_finite() && denominator.is_finite() && denominator != 0.0 && r.is_finite())
        .then_some(r)
}

/// A measurement's median in its unit, with the spread when it has more
/// than one round.
fn figure(m: &Measurement) -> String {
    let median = format_value(m.median, &m.unit);
    if m.rounds.len() > 1 && m.median.is_finite() && m.median != 0.0 {
        if let Some(spread) = format_spread(m.spread()) {
            return format!("{median} {spread}");
        }
    }
    median
}

fn figure_or_missing(m: Option<&Measurement>) -> String {
    m.map_or_else(|| MISSING.to_string(), figure)
}

/// Text made safe for a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// Digits grouped by thousands: `1,000,000`.
fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A Markdown table: the first `left` columns left-aligned, the others
/// right.
fn table(out: &mut String, left: usize, header: &[String], rows: &[Vec<String>]) {
    let line = |cells: &[String]| {
        let cells: Vec<String> = cells.iter().map(|c| cell(c)).collect();
        format!("| {} |\n", cells.join(" | "))
    };
    out.push_str(&line(header));
    let align: Vec<&str> = (0..header.len())
        .map(|i| if i < left { ":---" } else { "---:" })
        .collect();
    let _ = writeln!(out, "| {} |", align.join(" | "));
    for row in rows {
        out.push_str(&line(row));
    }
    out.push('\n');
}

fn family_title(family: &str, results: &Results) -> String {
    let options = &results.options;
    match family {
        "throughput" => format!(
            "Throughput, i64 keys (ops/s; {} keys, {} operations a round)",
            group_digits(options.keys),
            group_digits(options.operations)
        ),
        "throughput-string" => format!(
            "Throughput, String keys of 16–32 bytes (ops/s; {} keys, {} operations a round)",
            group_digits(options.keys),
            group_digits(options.operations)
        ),
        "large-state" => format!(
            "Large state (ops/s; {} keys)",
            group_digits(options.large_keys)
        ),
        "checkpoint" => format!(
            "Checkpoints ({} keys)",
            group_digits(options.checkpoint_keys)
        ),
        "memory" => format!(
            "Memory (bytes per entry; {} entries)",
            group_digits(options.memory_entries)
        ),
        "timers" => format!(
            "Timers (timers/s; {} registered, then fired by one watermark)",
            group_digits(options.timers)
        ),
        other => {
            let units = ordered(&[], of_family(results, other).map(|m| m.unit.as_str()));
            if units.is_empty() {
                other.to_string()
            } else {
                format!("{other} ({})", units.join(", "))
            }
        }
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn list_or_missing(items: &[String]) -> String {
    if items.is_empty() {
        MISSING.to_string()
    } else {
        items.join(", ")
    }
}

fn memory_gib(bytes: u64) -> String {
    if bytes == 0 {
        "unknown memory".to_string()
    } else {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    }
}

fn header(out: &mut String, results: &Results) {
    let machine = &results.machine;
    let options = &results.options;
    out.push_str("# flowbench report\n\n");
    let _ = writeln!(out, "- **Date:** {}", results.date);
    let _ = writeln!(
        out,
        "- **Commit:** {}",
        results
            .commit
            .as_deref()
            .unwrap_or("none (not a git checkout)")
    );
    let _ = writeln!(
        out,
        "- **Machine:** {}, {} cores, {}, {}",
        machine.cpu,
        machine.cores,
        memory_gib(machine.memory_bytes),
        machine.os
    );
    let _ = writeln!(
        out,
        "- **Build:** {}",
        if machine.optimized {
            "optimized"
        } else {
            "**DEBUG BUILD — figures are not meaningful**"
        }
    );
    let _ = writeln!(
        out,
        "- **Options:** quick: {}, rounds: {}, seed: {}",
        yes_no(options.quick),
        options.rounds,
        options.seed
    );
    let _ = writeln!(
        out,
        "- **Sizes:** keys: {}, operations: {}, large keys: {}, checkpoint keys: {}, memory entries: {}",
        group_digits(options.keys),
        group_digits(options.operations),
        group_digits(options.large_keys),
        group_digits(options.checkpoint_keys),
        group_digits(options.memory_entries)
    );
    let _ = writeln!(
        out,
        "- **Workloads:** {}",
        list_or_missing(&options.workloads)
    );
    let _ = writeln!(
        out,
        "- **Backends:** {}",
        list_or_missing(&options.backends)
    );
    out.push('\n');
    if !machine.optimized {
        out.push_str("> **DEBUG BUILD — figures are not meaningful.**\n\n");
    }

    let present: HashSet<&str> = results
        .measurements
        .iter()
        .map(|m| m.subject.as_str())
        .collect();
    let baselines: Vec<String> = BASELINES
        .iter()
        .filter(|(name, _)| present.contains(name))
        .map(|(name, about)| format!("`{name}`: {about}"))
        .collect();
    if !baselines.is_empty() {
        let _ = writeln!(out, "Baselines: {}.\n", baselines.join("; "));
    }
    out.push_str(
        "Every figure is the median over the rounds; spread = (max − min) / median over the \
         rounds. Every ratio is between medians of this same run.\n\n",
    );
}

/// A table with a row per `rows` item (named in the first column, headed
/// `corner`) and a column per `columns` item; `cell(row, column)` fills it.
fn grid(
    out: &mut String,
    corner: &str,
    rows: &[String],
    columns: &[String],
    cell: impl Fn(&str, &str) -> String,
) {
    let mut head = vec![corner.to_string()];
    head.extend(columns.iter().cloned());
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![r.clone()];
            row.extend(columns.iter().map(|c| cell(r, c)));
            row
        })
        .collect();
    table(out, 1, &head, &rows);
}

/// Workloads × subjects table of a family, then its ratio table.
fn throughput_section(out: &mut String, results: &Results, family: &str, with_ratios: bool) {
    let workloads = workloads(results, family);
    let subjects = subjects(results, family);
    let _ = writeln!(out, "## {}\n", family_title(family, results));

    grid(out, "workload", &workloads, &subjects, |w, s| {
        figure_or_missing(results.find(family, w, s))
    });

    if !with_ratios {
        return;
    }
    let pairs: Vec<(&str, &str)> = RATIOS
        .iter()
        .copied()
        .filter(|(a, b)| subjects.iter().any(|s| s == a) && subjects.iter().any(|s| s == b))
        .collect();
    if pairs.is_empty() {
        return;
    }
    out.push_str("Ratios of medians (above 1× the left one is faster):\n\n");
    let mut head = vec!["workload".to_string()];
    head.extend(pairs.iter().map(|(a, b)| format!("{a} ÷ {b}")));
    let rows: Vec<Vec<String>> = workloads
        .iter()
        .map(|w| {
            let mut row = vec![w.clone()];
            row.extend(pairs.iter().map(|(a, b)| {
                match (results.find(family, w, a), results.find(family, w, b)) {
                    (Some(a), Some(b)) => {
                        ratio(a.median, b.median).map_or_else(|| MISSING.to_string(), format_ratio)
                    }
                    _ => MISSING.to_string(),
                }
            }));
            row
        })
        .collect();
    table(out, 1, &head, &rows);
}

/// Subjects × workloads table of the checkpoint family.
fn checkpoint_section(out: &mut String, results: &Results, family: &str) {
    let workloads = workloads(results, family);
    let subjects = subjects(results, family);
    let _ = writeln!(out, "## {}\n", family_title(family, results));
    out.push_str(
        "`sync` is the synchronous part of a checkpoint, `total` the whole of it, `bytes` what \
         it wrote; `second` follows updates to a part of the keys. Lower is better.\n\n",
    );
    grid(out, "subject", &subjects, &workloads, |s, w| {
        figure_or_missing(results.find(family, w, s))
    });
}

/// Subjects × (workload, ratio to the baseline) table of the memory family.
fn memory_section(out: &mut String, results: &Results, family: &str) {
    let workloads = workloads(results, family);
    let subjects = subjects(results, family);
    let _ = writeln!(out, "## {}\n", family_title(family, results));
    let mut head = vec!["subject".to_string()];
    for w in &workloads {
        head.push(w.clone());
        head.push(format!("÷ {MEMORY_BASELINE}"));
    }
    let rows: Vec<Vec<String>> = subjects
        .iter()
        .map(|s| {
            let mut row = vec![s.clone()];
            for w in &workloads {
                let m = results.find(family, w, s);
                row.push(figure_or_missing(m));
                let baseline = results.find(family, w, MEMORY_BASELINE);
                row.push(match (m, baseline) {
                    (Some(m), Some(b)) => {
                        ratio(m.median, b.median).map_or_else(|| MISSING.to_string(), format_ratio)
                    }
                    _ => MISSING.to_string(),
                });
            }
            row
        })
        .collect();
    table(out, 1, &head, &rows);
}

fn charts_section(out: &mut String, charts: &[String]) {
    if charts.is_empty() {
        return;
    }
    out.push_str("## Charts\n\n");
    for name in charts {
        let stem = name.strip_suffix(".svg").unwrap_or(name);
        let _ = writeln!(out, "![{stem}]({name})\n");
    }
}

/// How `now` compares with `then` for a figure where `better` is the good
/// direction: `better`, `worse` or `same` (within [`SAME_WITHIN`]); `None`
/// when the ratio is meaningless.
pub fn verdict(now: f64, then: f64, better: Better) -> Option<&'static str> {
    let r = ratio(now, then)?;
    if (r - 1.0).abs() <= SAME_WITHIN {
        return Some("same");
    }
    let higher = r > 1.0;
    Some(match (better, higher) {
        (Better::Higher, true) | (Better::Lower, false) => "better",
        _ => "worse",
    })
}

fn compare_section(out: &mut String, results: &Results, previous: &Results) {
    out.push_str("## Compared with\n\n");
    let _ = writeln!(
        out,
        "The run of {}, commit {}, on {}{}.\n",
        previous.date,
        previous.commit.as_deref().unwrap_or("none"),
        previous.machine.cpu,
        if previous.machine.optimized {
            ""
        } else {
            " (**DEBUG BUILD**)"
        }
    );
    let mut notes = vec![format!(
        "Ratios across runs include the noise of the machines (`same` is within ±{:.0}%).",
        SAME_WITHIN * 100.0
    )];
    if previous.machine.cpu != results.machine.cpu
        || previous.machine.cores != results.machine.cores
    {
        notes.push("The machines differ.".to_string());
    }
    let (a, b) = (&previous.options, &results.options);
    if (
        a.keys,
        a.operations,
        a.large_keys,
        a.checkpoint_keys,
        a.memory_entries,
    ) != (
        b.keys,
        b.operations,
        b.large_keys,
        b.checkpoint_keys,
        b.memory_entries,
    ) {
        notes.push("The sizes differ, so the figures are not comparable as such.".to_string());
    }
    let _ = writeln!(out, "{}\n", notes.join(" "));

    let mut any = false;
    for family in families(results) {
        let workloads = workloads(results, &family);
        let subjects = subjects(results, &family);
        let mut rows = Vec::new();
        for w in &workloads {
            for s in &subjects {
                let (Some(now), Some(then)) =
                    (results.find(&family, w, s), previous.find(&family, w, s))
                else {
                    continue;
                };
                let comparable = now.unit == then.unit;
                let r = ratio(now.median, then.median).filter(|_| comparable);
                let word = if comparable {
                    verdict(now.median, then.median, now.better)
                } else {
                    None
                };
                rows.push(vec![
                    w.clone(),
                    s.clone(),
                    figure(now),
                    figure(then),
                    r.map_or_else(|| MISSING.to_string(), format_ratio),
                    word.unwrap_or(MISSING).to_string(),
                ]);
            }
        }
        if rows.is_empty() {
            continue;
        }
        any = true;
        let _ = writeln!(out, "### {family}\n");
        let head: Vec<String> = [
            "workload",
            "subject",
            "now",
            "then",
            "now ÷ then",
            "verdict",
        ]
        .iter()
        .map(|h| h.to_string())
        .collect();
        table(out, 2, &head, &rows);
    }
    if !any {
        out.push_str("No measurement was taken in both runs.\n\n");
    }
}

/// Renders `report.md` for `results`: header, one section per family,
/// the `charts` (file names relative to the report) and, with `previous`,
/// a comparison with that earlier run.
pub fn render_report(results: &Results, previous: Option<&Results>, charts: &[String]) -> String {
    let mut out = String::new();
    header(&mut out, results);
    let families = families(results);
    if families.is_empty() {
        out.push_str("No measurements were taken.\n\n");
    }
    for family in &families {
        match family.as_str() {
            "checkpoint" => checkpoint_section(&mut out, results, family),
            "memory" => memory_section(&mut out, results, family),
            "timers" => throughput_section(&mut out, results, family, true),
            f if THROUGHPUT_FAMILIES.contains(&f) => {
                throughput_section(&mut out, results, family, true)
            }
            _ => throughput_section(&mut out, results, family, false),
        }
    }
    charts_section(&mut out, charts);
    if let Some(previous) = previous {
        compare_section(&mut out, results, previous);
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Machine, RunOptions, RESULTS_VERSION};

    fn run(measurements: Vec<Measurement>) -> Results {
        Results {
            version: RESULTS_VERSION,
            machine: Machine {
                cpu: "Test CPU".to_string(),
                cores: 2,
                memory_bytes: 8 << 30,
                os: "Linux 6.1".to_string(),
                optimized: true,
            },
            date: "2025-01-02T03:04:05Z".to_string(),
            commit: Some("abc123".to_string()),
            options: RunOptions {
                quick: false,
                rounds: 3,
                workloads: vec!["throughput".to_string()],
                backends: vec![],
                keys: 1_000_000,
                operations: 2_000_000,
                large_keys: 10_000_000,
                checkpoint_keys: 100_000,
                memory_entries: 1_000_000,
                seed: 42,
                timers: 0,
                checkpoint_location: None,
            },
            measurements,
        }
    }

    fn ops(family: &str, workload: &str, subject: &str, rounds: Vec<f64>) -> Measurement {
        Measurement::new(family, workload, subject, "ops/s", Better::Higher, rounds)
    }

    fn ms(workload: &str, subject: &str, rounds: Vec<f64>) -> Measurement {
        Measurement::new("checkpoint", workload, subject, "ms", Better::Lower, rounds)
    }

    /// The cells of the table row starting with `first` after `heading`.
    fn row<'a>(text: &'a str, heading: &str, first: &str) -> Vec<&'a str> {
        let start = text.find(heading).expect("heading");
        let prefix = format!("| {first} |");
        let line = text[start..]
            .lines()
            .find(|l| l.starts_with(&prefix))
            .expect("row");
        line.trim_matches('|').split(" | ").map(str::trim).collect()
    }

    #[test]
    fn formats() {
        assert_eq!(format_rate(4_213_000.0), "4.21 M");
        assert_eq!(format_rate(458_000.0), "458 k");
        assert_eq!(format_rate(950.0), "950");
        assert_eq!(format_rate(999_700.0), "1.00 M");
        assert_eq!(format_rate(12_340.0), "12.3 k");
        assert_eq!(format_rate(9.996), "10.0");
        assert_eq!(format_rate(f64::NAN), "–");
        assert_eq!(format_rate(0.0), "0");
        assert_eq!(format_bytes(12_345_678.0), "12.3 MB");
        assert_eq!(format_bytes(1_200.0), "1.2 kB");
        assert_eq!(format_bytes(950.0), "950 B");
        assert_eq!(format_bytes(458_000_000.0), "458 MB");
        assert_eq!(format_bytes(f64::INFINITY), "–");
        assert_eq!(format_ms(0.0412), "0.041 ms");
        assert_eq!(format_ms(0.41), "0.41 ms");
        assert_eq!(format_ms(3.214), "3.21 ms");
        assert_eq!(format_ms(56.71), "56.7 ms");
        assert_eq!(format_ms(1234.4), "1234 ms");
        assert_eq!(format_ms(0.0), "0 ms");
        assert_eq!(format_ratio(0.4321), "0.43×");
        assert_eq!(format_ratio(12.34), "12.3×");
        assert_eq!(format_spread(0.123), Some("±12%".to_string()));
        assert_eq!(format_spread(0.025), Some("±2.5%".to_string()));
        assert_eq!(group_digits(1_234_567), "1,234,567");
        assert_eq!(group_digits(12), "12");
    }

    #[test]
    fn ordering_puts_unknown_last() {
        let names = ordered(SUBJECTS, ["zeta", "sled", "memory", "zeta", "alpha"]);
        assert_eq!(names, ["memory", "sled", "zeta", "alpha"]);
    }

    #[test]
    fn throughput_table_and_ratios() {
        let results = run(vec![
            ops(
                "throughput",
                "value.get",
                "memory",
                vec![4.0e6, 4.2e6, 4.4e6],
            ),
            ops("throughput", "value.get", "raw-hashmap", vec![1.0e7]),
            ops("throughput", "value.update", "memory", vec![2.0e6]),
            ops("throughput", "value.update", "raw-hashmap", vec![4.0e6]),
            ops("throughput", "value.update", "rocksdb", vec![5.0e5]),
        ]);
        let text = render_report(&results, None, &[]);
        assert!(text.starts_with("# flowbench report\n"));
        assert!(text.contains("abc123"));
        assert!(text.contains("Test CPU, 2 cores, 8.0 GiB"));
        assert!(!text.contains("DEBUG BUILD"));
        // Display order of workloads and subjects, spread only with rounds.
        let heading = "## Throughput, i64 keys";
        assert_eq!(
            row(&text, heading, "workload"),
            ["workload", "memory", "rocksdb", "raw-hashmap"]
        );
        assert_eq!(
            row(&text, heading, "value.get"),
            ["value.get", "4.20 M ±9.5%", "–", "10.0 M"]
        );
        assert!(text.find("| value.update |") < text.find("| value.get |"));
        // Ratios: only pairs with both sides present.
        let ratios = "Ratios of medians";
        assert_eq!(
            row(&text, ratios, "workload"),
            ["workload", "memory ÷ raw-hashmap"]
        );
        assert_eq!(row(&text, ratios, "value.get"), ["value.get", "0.42×"]);
        assert_eq!(
            row(&text, ratios, "value.update"),
            ["value.update", "0.50×"]
        );
        assert!(!text.contains("rocksdb ÷"));
        assert!(!text.contains("## Checkpoints"));
        assert!(!text.contains("## Compared with"));
        assert!(!text.contains("## Charts"));
    }

    #[test]
    fn checkpoint_memory_and_charts() {
        let mut results = run(vec![
            ms("first.sync", "fs", vec![0.0412]),
            ms("first.total", "fs", vec![120.0, 130.0]),
            Measurement::new(
                "checkpoint",
                "first.bytes",
                "rocksdb",
                "bytes",
                Better::Lower,
                vec![12_345_678.0],
            ),
            Measurement::new(
                "memory",
                "resident",
                "memory",
                "bytes/entry",
                Better::Lower,
                vec![90.0],
            ),
            Measurement::new(
                "memory",
                "resident",
                "raw-hashmap",
                "bytes/entry",
                Better::Lower,
                vec![60.0],
            ),
        ]);
        results.machine.optimized = false;
        let charts = vec!["throughput.svg".to_string(), "checkpoints.svg".to_string()];
        let text = render_report(&results, None, &charts);
        assert!(text.contains("DEBUG BUILD — figures are not meaningful"));
        let heading = "## Checkpoints";
        assert_eq!(
            row(&text, heading, "subject"),
            ["subject", "first.sync", "first.total", "first.bytes"]
        );
        assert_eq!(
            row(&text, heading, "fs"),
            ["fs", "0.041 ms", "125 ms ±8.0%", "–"]
        );
        assert_eq!(
            row(&text, heading, "rocksdb"),
            ["rocksdb", "–", "–", "12.3 MB"]
        );
        let heading = "## Memory";
        assert_eq!(row(&text, heading, "memory"), ["memory", "90.0", "1.50×"]);
        assert_eq!(
            row(&text, heading, "raw-hashmap"),
            ["raw-hashmap", "60.0", "1.00×"]
        );
        assert!(text.contains("## Charts\n\n![throughput](throughput.svg)\n"));
        assert!(text.contains("![checkpoints](checkpoints.svg)"));
    }

    #[test]
    fn unknown_names_are_shown_after_known_ones() {
        let results = run(vec![
            ops("custom", "w1", "memory", vec![1.0e3]),
            ops("throughput", "scan", "newdb", vec![2.0e3]),
            ops("throughput", "value.get", "fs", vec![3.0e3]),
        ]);
        let text = render_report(&results, None, &[]);
        assert!(text.find("## Throughput") < text.find("## custom (ops/s)"));
        let heading = "## Throughput";
        assert_eq!(row(&text, heading, "workload"), ["workload", "fs", "newdb"]);
        assert_eq!(row(&text, heading, "scan"), ["scan", "–", "2.00 k"]);
        assert!(text.find("| value.get |") < text.find("| scan |"));
        assert_eq!(row(&text, "## custom", "w1"), ["w1", "1.00 k"]);
    }

    #[test]
    fn odd_figures_do_not_panic() {
        let results = run(vec![
            ops("throughput", "value.get", "memory", vec![f64::NAN, 1.0]),
            ops("throughput", "value.get", "raw-hashmap", vec![0.0]),
            ops("throughput", "value.update", "memory", vec![0.0, 0.0]),
            ops("throughput", "value.update", "raw-hashmap", vec![]),
            ms("restore", "fs", vec![f64::INFINITY]),
            Measurement::new(
                "memory",
                "resident",
                "memory",
                "bytes/entry",
                Better::Lower,
                vec![],
            ),
        ]);
        let mut previous = results.clone();
        previous.measurements[0].median = 0.0;
        let text = render_report(&results, Some(&previous), &[]);
        assert_eq!(
            row(&text, "Ratios of medians", "value.get"),
            ["value.get", "–"]
        );
        assert_eq!(
            row(&text, "Ratios of medians", "value.update"),
            ["value.update", "–"]
        );
        assert_eq!(row(&text, "## Checkpoints", "fs"), ["fs", "–"]);
        assert_eq!(row(&text, "## Memory", "memory"), ["memory", "0", "–"]);
        assert!(!text.contains("NaN"));
        assert!(!text.contains("inf"));

        let empty = run(vec![]);
        let text = render_report(&empty, Some(&empty), &[]);
        assert!(text.contains("No measurements were taken."));
        assert!(text.contains("No measurement was taken in both runs."));
    }

    #[test]
    fn comparison_follows_the_better_direction() {
        let previous = run(vec![
            ops("throughput", "value.get", "memory", vec![1.0e6]),
            ops("throughput", "value.get", "fs", vec![1.0e6]),
            ops("throughput", "value.get", "rocksdb", vec![1.0e6]),
            ms("restore", "fs", vec![100.0]),
            ms("restore", "rocksdb", vec![100.0]),
            ms("restore", "sled", vec![100.0]),
        ]);
        let mut results = run(vec![
            ops("throughput", "value.get", "memory", vec![2.0e6]),
            ops("throughput", "value.get", "fs", vec![0.5e6]),
            ops("throughput", "value.get", "rocksdb", vec![1.04e6]),
            ms("restore", "fs", vec![50.0]),
            ms("restore", "rocksdb", vec![200.0]),
            ms("restore", "memory", vec![10.0]),
        ]);
        results.machine.cpu = "Other CPU".to_string();
        let text = render_report(&results, Some(&previous), &[]);
        let heading = "## Compared with";
        assert!(text.contains("The run of 2025-01-02T03:04:05Z, commit abc123, on Test CPU."));
        assert!(text.contains("The machines differ."));
        assert!(text.contains("noise"));
        assert_eq!(
            row(&text, heading, "value.get"),
            ["value.get", "memory", "2.00 M", "1.00 M", "2.00×", "better"]
        );
        let section = &text[text.find(heading).expect("section")..];
        assert!(section.contains("| value.get | fs | 500 k | 1.00 M | 0.50× | worse |"));
        assert!(section.contains("| value.get | rocksdb | 1.04 M | 1.00 M | 1.04× | same |"));
        assert!(section.contains("| restore | fs | 50.0 ms | 100 ms | 0.50× | better |"));
        assert!(section.contains("| restore | rocksdb | 200 ms | 100 ms | 2.00× | worse |"));
        // Only in one of the runs: not compared.
        assert!(!section.contains("| restore | memory |"));
        assert!(!section.contains("| restore | sled |"));
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(1.06, 1.0, Better::Higher), Some("better"));
        assert_eq!(verdict(1.06, 1.0, Better::Lower), Some("worse"));
        assert_eq!(verdict(0.9, 1.0, Better::Lower), Some("better"));
        assert_eq!(verdict(0.96, 1.0, Better::Higher), Some("same"));
        assert_eq!(verdict(1.0, 0.0, Better::Higher), None);
        assert_eq!(verdict(f64::NAN, 1.0, Better::Higher), None);
    }
}
