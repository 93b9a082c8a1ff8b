//! The abuse suite (issue 13, "Proven"): each attack a local client can make on the ADS
//! port and the debug endpoint, repeated against the release `lanyard-controller` in file
//! mode on a copy of `examples/`, measured from outside the process.
//!
//! For every attack the suite asserts, with ratios and generous bounds only (it runs on a
//! loaded 2-core CI machine):
//! - the server's CPU grows linearly with the request where the attack has a size (the
//!   ratio between two sizes, 4x apart, at most [`LINEAR_RATIO`]; quadratic work gives 16x);
//! - its RSS returns to within [`RSS_MARGIN`] (or 25%) of its baseline once the client has
//!   left, and where the attack is about memory its peak stays bounded too;
//! - a well-behaved proxy connected throughout still gets a change within 10x its usual
//!   delay (at least [`VICTIM_FLOOR`]);
//! - `/healthz` answers within [`HEALTHZ_BOUND`];
//! - the log grows by less than [`LOG_BOUND`];
//! - and what each attack is about: refused in time, closed in time, a bounded answer.
//!
//! `lanyard-bench abuse --controller target/release/lanyard-controller [--scale 1]` runs it
//! by hand; `bench/tests/abuse.rs` runs it in CI (tests/run.sh).

mod attacks;
pub mod clients;
pub mod process;
pub mod rawh2;
pub mod victim;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use process::Controller;
use victim::Victim;

/// The CPU of a request 4x the size may cost at most this many times as much.
pub const LINEAR_RATIO: f64 = 6.0;
/// CPU below this counts as this much in a ratio (the clock ticks at 10 ms, and the victim
/// and the file watcher use a little meanwhile).
pub const CPU_FLOOR: f64 = 0.1;
/// RSS after the client left may exceed the baseline by this much (or 25%, if larger).
pub const RSS_MARGIN: u64 = 64 << 20;
/// How long RSS has to come back down.
pub const RSS_WAIT: Duration = Duration::from_secs(10);
/// The victim's change delay bound is 10x its usual delay, and at least this.
pub const VICTIM_FLOOR: Duration = Duration::from_secs(5);
/// `/healthz` must answer within this during an attack.
pub const HEALTHZ_BOUND: Duration = Duration::from_secs(5);
/// Bytes an attack may add to the log.
pub const LOG_BOUND: u64 = 1 << 20;
/// A gRPC status message a client gets back may be this long at most.
pub const STATUS_MESSAGE_BOUND: usize = 4 << 10;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `lanyard-controller` binary (a release build).
    pub controller: PathBuf,
    /// The manifests the controller serves (a copy is watched and changed).
    pub examples: PathBuf,
    /// Multiplies every attack's size.
    pub scale: f64,
    /// Only these attacks (all when empty).
    pub only: Vec<String>,
    /// How long a server has to close a connection or stream that sends nothing.
    pub close_bound: Duration,
}

impl Options {
    /// `n` scaled, at least `min`.
    fn size(&self, n: usize, min: usize) -> usize {
        ((n as f64 * self.scale) as usize).max(min)
    }
}

/// The figures of one attack and the checks it failed.
#[derive(Clone, Debug, Default)]
pub struct Row {
    /// The attack.
    pub attack: String,
    /// Its size, in words.
    pub size: String,
    /// Server CPU during the attack, seconds.
    pub cpu: f64,
    /// RSS before, at the highest and after the client left, bytes.
    pub rss_before: u64,
    pub rss_peak: u64,
    pub rss_after: u64,
    /// The victim's change delay during the attack (`None`: not within the wait).
    pub victim: Option<Duration>,
    /// `/healthz` latency during the attack (`None`: no answer within the wait).
    pub healthz: Option<Duration>,
    /// Bytes the attack added to the log.
    pub log_bytes: u64,
    /// Attack-specific figures.
    pub notes: Vec<String>,
    /// What went wrong; empty when the server held.
    pub failures: Vec<String>,
}

impl Row {
    fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    fn fail(&mut self, failure: impl Into<String>) {
        self.failures.push(failure.into());
    }

    /// Checks that `big` (4x the request of `small`) cost at most [`LINEAR_RATIO`] times the CPU.
    fn linear(&mut self, what: &str, small: f64, big: f64) {
        let ratio = big.max(CPU_FLOOR) / small.max(CPU_FLOOR);
        self.note(format!(
            "{what}: CPU {small:.2} s at N, {big:.2} s at 4N (x{ratio:.1})"
        ));
        if ratio > LINEAR_RATIO {
            self.fail(format!(
                "{what}: CPU at 4N is x{ratio:.1} that at N (linear would be x4, at most x{LINEAR_RATIO})"
            ));
        }
    }

    /// Checks a gRPC status message a client got back.
    fn status_message(&mut self, what: &str, status: Option<&tonic::Status>) {
        let Some(status) = status else {
            return;
        };
        let len = status.message().len();
        self.note(format!("{what}: {:?}, message {len} bytes", status.code()));
        if len > STATUS_MESSAGE_BOUND {
            self.fail(format!(
                "{what}: the status message is {len} bytes (at most {STATUS_MESSAGE_BOUND})"
            ));
        }
    }
}

/// What an attack works with.
pub struct Ctx {
    pub options: Options,
    pub controller: Controller,
    victim: Victim,
    /// The victim's change delay bound.
    pub victim_bound: Duration,
}

impl Ctx {
    /// While the attack holds: the victim's change delay and `/healthz`'s latency.
    pub async fn probe(&mut self, row: &mut Row) {
        let wait = (self.victim_bound * 4).max(Duration::from_secs(60));
        let debug = self.controller.debug();
        let healthz = tokio::spawn(async move {
            process::http_get(debug, "/healthz", Duration::from_secs(60))
                .await
                .map(|(_, _, t)| t)
        });
        row.victim = self.victim.change(wait).await;
        row.healthz = healthz.await.ok().flatten();
    }
}

/// The result of a run.
#[derive(Debug, Default)]
pub struct Report {
    /// The victim's usual change delay, and `/healthz`'s (the highest of the runs).
    pub baseline_victim: Duration,
    pub baseline_healthz: Duration,
    pub victim_bound: Duration,
    pub scale: f64,
    pub rows: Vec<Row>,
}

impl Report {
    /// Every failed check, as `attack: failure`.
    pub fn failures(&self) -> Vec<String> {
        self.rows
            .iter()
            .flat_map(|r| r.failures.iter().map(move |f| format!("{}: {f}", r.attack)))
            .collect()
    }

    /// A Markdown table of the figures, then each attack's notes and failures.
    pub fn markdown(&self) -> String {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let secs = |d: Option<Duration>| {
            d.map_or("none".to_string(), |d| format!("{:.2}", d.as_secs_f64()))
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scale {}; a fresh controller per attack; the victim's usual change delay at most {:.2} s (bound {:.1} s), /healthz at most {:.3} s\n",
            self.scale,
            self.baseline_victim.as_secs_f64(),
            self.victim_bound.as_secs_f64(),
            self.baseline_healthz.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "| attack | size | CPU s | RSS before / peak / after MiB | victim delay s | /healthz s | log bytes | held? |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} | {:.0} / {:.0} / {:.0} | {} | {} | {} | {} |",
                r.attack,
                r.size,
                r.cpu,
                mib(r.rss_before),
                mib(r.rss_peak),
                mib(r.rss_after),
                secs(r.victim),
                secs(r.healthz),
                r.log_bytes,
                if r.failures.is_empty() {
                    "yes".to_string()
                } else {
                    format!("NO ({})", r.failures.len())
                }
            );
        }
        for r in &self.rows {
            let _ = writeln!(out, "\n**{}**", r.attack);
            for n in &r.notes {
                let _ = writeln!(out, "- {n}");
            }
            for f in &r.failures {
                let _ = writeln!(out, "- FAILED: {f}");
            }
        }
        out
    }
}

/// Every attack, in the order run.
pub const ATTACKS: &[&str] = &[
    "delta-unknown-types",
    "log-flood",
    "debug-echo",
    "huge-node",
    "api-listener-names",
    "delta-unknown-names",
    "idle-streams",
    "unfinished-messages",
    "no-preface",
];

/// A fresh controller with the victim connected, and the victim's usual change delay (the
/// median of three) and `/healthz` latency.
async fn fresh(options: &Options) -> anyhow::Result<(Ctx, Duration, Duration)> {
    let controller = Controller::start(&options.controller, &options.examples).await?;
    let mut victim = Victim::connect(controller.xds(), &controller.config_dir).await?;
    let mut delays = Vec::new();
    for _ in 0..3 {
        let delay = victim
            .change(Duration::from_secs(30))
            .await
            .ok_or_else(|| anyhow::anyhow!("the victim got no change within 30 s at rest"))?;
        delays.push(delay);
    }
    delays.sort();
    let usual = delays[1];
    let healthz = controller
        .get("/healthz", Duration::from_secs(10))
        .await
        .ok_or_else(|| anyhow::anyhow!("no /healthz at rest"))?
        .2;
    let ctx = Ctx {
        options: options.clone(),
        controller,
        victim,
        victim_bound: (usual * 10).max(VICTIM_FLOOR),
    };
    Ok((ctx, usual, healthz))
}

/// Runs each attack on a controller of its own (so that what one leaves behind does not
/// hide what the next does), with the victim connected throughout, and checks what every
/// attack must leave intact.
pub async fn run(options: Options) -> anyhow::Result<Report> {
    for name in &options.only {
        anyhow::ensure!(
            ATTACKS.contains(&name.as_str()),
            "no attack {name}; the attacks: {}",
            ATTACKS.join(", ")
        );
    }
    let mut report = Report {
        scale: options.scale,
        ..Default::default()
    };
    for &name in ATTACKS {
        if !options.only.is_empty() && !options.only.iter().any(|o| o == name) {
            continue;
        }
        eprintln!("abuse: {name}...");
        let (mut ctx, usual, healthz) = fresh(&options).await?;
        report.baseline_victim = report.baseline_victim.max(usual);
        report.baseline_healthz = report.baseline_healthz.max(healthz);
        report.victim_bound = report.victim_bound.max(ctx.victim_bound);
        ctx.controller.settle(Duration::from_secs(30)).await;
        let mut row = Row {
            attack: name.to_string(),
            rss_before: ctx.controller.rss(),
            ..Default::default()
        };
        let cpu = ctx.controller.cpu_secs();
        let log = ctx.controller.log_bytes();
        let sampler = ctx.controller.rss_sampler();
        attacks::run(name, &mut ctx, &mut row).await?;
        ctx.controller.settle(Duration::from_secs(60)).await;
        row.cpu = ctx.controller.cpu_secs() - cpu;
        row.rss_peak = sampler.peak();
        drop(sampler);
        let allowed = row.rss_before + RSS_MARGIN.max(row.rss_before / 4);
        row.rss_after = ctx.controller.rss_down_to(allowed, RSS_WAIT).await;
        row.rss_peak = row.rss_peak.max(row.rss_after);
        row.log_bytes = ctx.controller.log_bytes() - log;
        check(&mut ctx, &mut row, allowed);
        eprintln!(
            "abuse: {name}: {}",
            if row.failures.is_empty() {
                "held".to_string()
            } else {
                row.failures.join("; ")
            }
        );
        report.rows.push(row);
    }
    Ok(report)
}

/// What every attack must leave intact.
fn check(ctx: &mut Ctx, row: &mut Row, rss_allowed: u64) {
    let mib = |b: u64| b >> 20;
    match row.victim {
        Some(d) if d <= ctx.victim_bound => {}
        Some(d) => row.fail(format!(
            "the victim's change took {:.1} s (bound {:.1} s)",
            d.as_secs_f64(),
            ctx.victim_bound.as_secs_f64()
        )),
        None => row.fail("the victim got no change at all"),
    }
    match row.healthz {
        Some(d) if d <= HEALTHZ_BOUND => {}
        Some(d) => row.fail(format!(
            "/healthz took {:.1} s (bound {:.0} s)",
            d.as_secs_f64(),
            HEALTHZ_BOUND.as_secs_f64()
        )),
        None => row.fail("/healthz did not answer"),
    }
    if row.rss_after > rss_allowed {
        row.fail(format!(
            "RSS {} MiB {:.0} s after the client left, baseline {} MiB (allowed {} MiB)",
            mib(row.rss_after),
            RSS_WAIT.as_secs_f64(),
            mib(row.rss_before),
            mib(rss_allowed)
        ));
    }
    if row.log_bytes > LOG_BOUND {
        row.fail(format!(
            "the log grew by {} bytes (bound {LOG_BOUND})",
            row.log_bytes
        ));
    }
    if !ctx.controller.alive() {
        row.fail("the controller exited");
    }
}
