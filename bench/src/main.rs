//! `lanyard-bench`: see the crate docs and BENCHMARKS.md.
//!
//! ```sh
//! cargo run --release -p lanyard-bench -- [all|translate|fanout|reconnect|idle|churn|kube-churn] \
//!     [--sizes 1000,5000] [--smoke] [--out target/bench]
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lanyard_bench::scenarios::{self, Config, idle::Mode};

#[derive(Parser, Debug)]
#[command(about = "Scale benchmarks of Lanyard's translator and ADS server")]
struct Args {
    #[command(subcommand)]
    scenario: Option<Scenario>,
    /// Sizes: Services for `translate`, proxies for the others.
    #[arg(long, global = true, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// Tiny sizes and short runs: a check that everything works, not a measurement.
    #[arg(long, global = true)]
    smoke: bool,
    /// Where to write `<scenario>.json`.
    #[arg(long, global = true, default_value = "target/bench")]
    out: PathBuf,
    /// Services of the mesh proxies get in fanout, reconnect, idle and churn.
    #[arg(long, global = true, default_value_t = 100)]
    mesh_services: usize,
    /// How long the churn soak runs, seconds.
    #[arg(long, global = true, default_value_t = 300)]
    churn_secs: u64,
    /// How long the Pod churn of `kube-churn` runs, seconds.
    #[arg(long, global = true, default_value_t = 60)]
    kube_churn_secs: u64,
    /// The `lanyard-bench-client` binary (default: next to this one).
    #[arg(long, global = true)]
    client: Option<PathBuf>,
}

#[derive(Subcommand, Debug, Clone, PartialEq)]
enum Scenario {
    /// Every scenario, in order.
    All,
    Translate,
    Fanout,
    Reconnect,
    Idle,
    Churn,
    /// The controller in Kubernetes mode against the loopback API server, under Pod
    /// updates that change nothing it reads (not part of `all`: needs the
    /// `lanyard-controller` and `lanyard-test-apiserver` binaries next to this one).
    KubeChurn,
    /// The abuse suite: attacks on the release `lanyard-controller` (not part of `all`).
    /// Exits non-zero when the server does not hold.
    Abuse {
        /// The controller binary (a release build).
        #[arg(
            long,
            env = "LANYARD_ABUSE_CONTROLLER",
            default_value = "target/release/lanyard-controller"
        )]
        controller: PathBuf,
        /// The manifests it serves (copied; the copy is changed).
        #[arg(long, default_value = "examples")]
        examples: PathBuf,
        /// Multiplies every attack's size.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Only these attacks (comma-separated).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Seconds a server has to close a connection or stream that sends nothing (the
        /// hardened server closes an idle connection after 60 s).
        #[arg(long, default_value_t = 90)]
        close_bound_secs: u64,
        /// Also write the Markdown table here.
        #[arg(long)]
        markdown: Option<PathBuf>,
    },
    /// (internal) The churn scenario's server process.
    #[command(hide = true)]
    ChurnServer {
        #[arg(long)]
        services: usize,
    },
    /// (internal) Serve for the idle scenario until stdin closes.
    #[command(hide = true)]
    Serve {
        #[arg(long, value_enum)]
        mode: Mode,
        #[arg(long)]
        services: usize,
        /// Proxies the floor with config prepares responses for.
        #[arg(long, default_value_t = 0)]
        count: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let scenario = args.scenario.clone().unwrap_or(Scenario::All);
    if let Scenario::Serve {
        mode,
        services,
        count,
    } = scenario
    {
        return runtime.block_on(scenarios::idle::serve(mode, services, count));
    }
    if let Scenario::ChurnServer { services } = scenario {
        let duration = Duration::from_secs(if args.smoke { 3 } else { args.churn_secs });
        return runtime.block_on(scenarios::churn::serve(services, duration, args.smoke));
    }
    if let Scenario::Abuse {
        controller,
        examples,
        scale,
        only,
        close_bound_secs,
        markdown,
    } = scenario
    {
        let options = lanyard_bench::abuse::Options {
            controller,
            examples,
            scale,
            only,
            close_bound: Duration::from_secs(close_bound_secs),
        };
        let report = runtime.block_on(lanyard_bench::abuse::run(options))?;
        let table = report.markdown();
        println!("{table}");
        if let Some(path) = markdown {
            std::fs::write(path, &table)?;
        }
        let failures = report.failures();
        if !failures.is_empty() {
            eprintln!("abuse: {} checks failed", failures.len());
            std::process::exit(1);
        }
        std::process::exit(0);
    }
    let bench = std::env::current_exe()?;
    let client = args.client.clone().unwrap_or_else(|| {
        bench.with_file_name(format!(
            "lanyard-bench-client{}",
            std::env::consts::EXE_SUFFIX
        ))
    });
    let config = Config {
        out: args.out,
        client,
        bench,
        smoke: args.smoke,
        sizes: args.sizes,
        mesh_services: args.mesh_services,
        churn: Duration::from_secs(if args.smoke { 3 } else { args.churn_secs }),
        kube_churn: Duration::from_secs(args.kube_churn_secs),
    };
    println!(
        "lanyard-bench: {} cores, {:.1} GiB memory{}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_gib(),
        if config.smoke {
            " (smoke: tiny sizes, not a measurement)"
        } else {
            ""
        }
    );
    runtime.block_on(async {
        let all = scenario == Scenario::All;
        if all || scenario == Scenario::Translate {
            scenarios::translate::run(&config)?;
        }
        if all || scenario == Scenario::Fanout {
            scenarios::fanout::run(&config).await?;
        }
        if all || scenario == Scenario::Reconnect {
            scenarios::fanout::reconnect(&config).await?;
        }
        if all || scenario == Scenario::Idle {
            scenarios::idle::run(&config).await?;
        }
        if all || scenario == Scenario::Churn {
            scenarios::churn::run(&config).await?;
        }
        if scenario == Scenario::KubeChurn {
            scenarios::kube::run(&config).await?;
        }
        anyhow::Ok(())
    })?;
    // Streams of stopped servers may still be winding down.
    std::process::exit(0)
}

fn memory_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0)
}
