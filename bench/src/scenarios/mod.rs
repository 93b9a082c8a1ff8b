//! The scenarios. Each prints a table, writes `<out>/<name>.json` and returns the JSON
//! (the smoke tests assert on it).

pub mod churn;
pub mod fanout;
pub mod idle;
pub mod kube;
pub mod translate;

use std::path::PathBuf;
use std::time::Duration;

/// What every scenario needs to know.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the JSON files go.
    pub out: PathBuf,
    /// The `lanyard-bench-client` binary.
    pub client: PathBuf,
    /// The `lanyard-bench` binary (the idle scenario runs its server in a child process).
    pub bench: PathBuf,
    /// Tiny sizes, short runs: a correctness check, not a measurement.
    pub smoke: bool,
    /// Sizes given on the command line (Services for translate, proxies otherwise).
    pub sizes: Option<Vec<usize>>,
    /// Services of the mesh the proxies of the proxy scenarios get.
    pub mesh_services: usize,
    /// How long the churn soak runs.
    pub churn: Duration,
    /// How long the Pod churn of `kube-churn` runs.
    pub kube_churn: Duration,
}

impl Config {
    /// The sizes of a scenario: the command line's, else the smoke or full defaults.
    pub fn sizes(&self, smoke: &[usize], full: &[usize]) -> Vec<usize> {
        match (&self.sizes, self.smoke) {
            (Some(sizes), _) => sizes.clone(),
            (None, true) => smoke.to_vec(),
            (None, false) => full.to_vec(),
        }
    }

    /// Services of the proxies' mesh.
    pub fn mesh_services(&self) -> usize {
        if self.smoke {
            self.mesh_services.min(20)
        } else {
            self.mesh_services
        }
    }

    /// How long to wait for anything a scenario waits for.
    pub fn timeout(&self, proxies: usize) -> Duration {
        Duration::from_secs(60 + (proxies as u64) / 20)
    }
}
