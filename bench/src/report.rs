//! Figures: percentiles, process memory and CPU from `/proc`, the printed table and the
//! JSON file of each scenario.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// The `p` quantile (0..=1) of a sorted list, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// p50, p99 and max of a list of milliseconds, as JSON.
pub fn distribution(values: &mut [f64]) -> Value {
    values.sort_by(f64::total_cmp);
    serde_json::json!({
        "count": values.len(),
        "p50_ms": round(percentile(values, 0.5)),
        "p90_ms": round(percentile(values, 0.9)),
        "p99_ms": round(percentile(values, 0.99)),
        "max_ms": round(values.last().copied().unwrap_or(f64::NAN)),
    })
}

/// Rounds to 0.01 (for readable JSON).
pub fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Milliseconds between two epoch-nanosecond times.
pub fn ms_between(from: u64, to: u64) -> f64 {
    (to as f64 - from as f64) / 1e6
}

/// Milliseconds of a duration.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS:")
}

/// Peak resident memory of a process since start or the last [`reset_peak_rss`], KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmHWM:")
}

/// Resets this process's peak RSS (Linux ≥ 4.0; ignored elsewhere).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// CPU time (user + system) a process has used.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let total = ticks(11) + ticks(12);
    let hz = rustix::param::clock_ticks_per_second();
    Duration::from_secs_f64(total as f64 / hz.max(1) as f64)
}

/// This process's id.
pub fn self_pid() -> u32 {
    std::process::id()
}

/// A printed table: a title, a header and rows of cells.
#[derive(Debug, Default)]
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, header: &[&str]) -> Table {
        Table {
            title: title.to_string(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as Markdown (it reads fine on a terminal too).
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(cell.len());
                }
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let mut out = format!("\n## {}\n\n", self.title);
        out.push_str(&line(&self.header));
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&line(&rule));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// Prints the table and writes `<out>/<scenario>.json`.
pub fn publish(out: &Path, scenario: &str, table: &Table, json: &Value) -> anyhow::Result<()> {
    print!("{}", table.render());
    std::fs::create_dir_all(out)?;
    let path = out.join(format!("{scenario}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(json)? + "\n")?;
    println!("\n(written to {})", path.display());
    Ok(())
}

/// `x` with two decimals.
pub fn f2(x: f64) -> String {
    format!("{x:.2}")
}

/// `a / b` as "N.NN×", or "-" without a floor.
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() {
        format!("{:.2}×", a / b)
    } else {
        "-".to_string()
    }
}
