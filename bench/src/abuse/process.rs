//! The controller under attack: the release `lanyard-controller` binary in file mode on a
//! temporary copy of `examples/`, observed from outside: CPU and RSS from `/proc`, log
//! bytes from its stdout and stderr, `/healthz` over HTTP.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// The controller process, killed when dropped.
pub struct Controller {
    child: Child,
    pid: u32,
    /// The directory it watches (a copy of `examples/`).
    pub config_dir: PathBuf,
    _dir: tempfile::TempDir,
    /// Every `NAME listening on ADDR` it printed, by NAME (`xds`, `debug`, ...).
    pub addresses: BTreeMap<String, SocketAddr>,
    log_bytes: Arc<AtomicU64>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Controller {
    /// Starts `binary` with `--config-dir <copy of examples> --xds-address 127.0.0.1:0
    /// --debug-address 127.0.0.1:0` at its default log level, and waits for the `xds` and
    /// `debug` addresses it prints.
    pub async fn start(binary: &Path, examples: &Path) -> anyhow::Result<Controller> {
        if !binary.is_file() {
            bail!(
                "no controller at {} (build it with `cargo build --release --bin lanyard-controller`)",
                binary.display()
            );
        }
        let dir = tempfile::tempdir()?;
        let config_dir = dir.path().join("examples");
        copy_dir(examples, &config_dir).with_context(|| format!("copy {}", examples.display()))?;
        let mut child = Command::new(binary)
            .arg("--config-dir")
            .arg(&config_dir)
            .args([
                "--xds-address",
                "127.0.0.1:0",
                "--debug-address",
                "127.0.0.1:0",
            ])
            .env_remove("LANYARD_CONFIG_DIR")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let pid = child.id().context("the controller has no pid")?;
        let log_bytes = Arc::new(AtomicU64::new(0));
        let (tx, mut rx) = watch::channel(BTreeMap::<String, SocketAddr>::new());
        let tx = Arc::new(tx);
        let stdout = child.stdout.take().context("piped stdout")?;
        let stderr = child.stderr.take().context("piped stderr")?;
        tokio::spawn(count_lines(stdout, log_bytes.clone(), tx.clone()));
        tokio::spawn(count_lines(stderr, log_bytes.clone(), tx));
        let wanted =
            |a: &BTreeMap<String, SocketAddr>| a.contains_key("xds") && a.contains_key("debug");
        tokio::time::timeout(Duration::from_secs(60), rx.wait_for(wanted))
            .await
            .context("the controller printed no `xds listening on ADDR` and `debug listening on ADDR` within 60 s")?
            .context("the controller exited")?;
        let addresses = rx.borrow().clone();
        Ok(Controller {
            child,
            pid,
            config_dir,
            _dir: dir,
            addresses,
            log_bytes,
        })
    }

    /// The ADS address.
    pub fn xds(&self) -> SocketAddr {
        self.addresses["xds"]
    }

    /// The debug address (`/healthz`, `/debug/...`).
    pub fn debug(&self) -> SocketAddr {
        self.addresses["debug"]
    }

    /// Bytes the controller has written to stdout and stderr so far.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes.load(Ordering::Relaxed)
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// CPU time (user + system) the process has used, seconds.
    pub fn cpu_secs(&self) -> f64 {
        crate::report::cpu_time(self.pid).as_secs_f64()
    }

    /// Resident set size, bytes.
    pub fn rss(&self) -> u64 {
        crate::report::rss_kib(self.pid) * 1024
    }

    /// Samples RSS every 50 ms until the returned guard is dropped; its `peak()` is the
    /// highest seen.
    pub fn rss_sampler(&self) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(self.rss()));
        let stop = Arc::new(AtomicBool::new(false));
        let pid = self.pid;
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                // 0 once the process is gone: never above the peak.
                p.fetch_max(crate::report::rss_kib(pid) * 1024, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler { peak, stop }
    }

    /// Waits until the CPU time stops growing (less than 20 ms over 500 ms), at most
    /// `bound`: the server has finished the work a request gave it.
    pub async fn settle(&self, bound: Duration) {
        let start = Instant::now();
        let mut last = self.cpu_secs();
        while start.elapsed() < bound {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = self.cpu_secs();
            if now - last < 0.02 {
                return;
            }
            last = now;
        }
    }

    /// Waits until RSS is at most `target`, polling for up to `bound`; returns the last RSS.
    pub async fn rss_down_to(&self, target: u64, bound: Duration) -> u64 {
        let start = Instant::now();
        loop {
            let now = self.rss();
            if now <= target || start.elapsed() >= bound {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `GET path` on the debug address: the status code, the body's size and how long the
    /// answer took (`None` when it did not come within `bound`).
    pub async fn get(&self, path: &str, bound: Duration) -> Option<(u16, Vec<u8>, Duration)> {
        http_get(self.debug(), path, bound).await
    }
}

/// See [`Controller::rss_sampler`].
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    /// The highest RSS seen so far, bytes.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn count_lines(
    stream: impl AsyncRead + Unpin,
    bytes: Arc<AtomicU64>,
    addresses: Arc<watch::Sender<BTreeMap<String, SocketAddr>>>,
) {
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                bytes.fetch_add(n as u64, Ordering::Relaxed);
                // `NAME listening on ADDR`, whatever NAME: the controller may add listeners.
                if line.len() < 512 {
                    let text = String::from_utf8_lossy(&line);
                    if let Some((name, address)) = text.trim().split_once(" listening on ")
                        && let Ok(address) = address.trim().parse::<SocketAddr>()
                    {
                        let name = name.rsplit(' ').next().unwrap_or(name).to_string();
                        addresses.send_modify(|a| {
                            a.insert(name, address);
                        });
                    }
                }
            }
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// A plain HTTP/1.1 GET: the status, the body (chunked framing left in: only its size
/// matters here) and the time to the end of the answer.
pub async fn http_get(
    address: SocketAddr,
    path: &str,
    bound: Duration,
) -> Option<(u16, Vec<u8>, Duration)> {
    let start = Instant::now();
    let fetch = async {
        let mut stream = TcpStream::connect(address).await.ok()?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let code = std::str::from_utf8(answer.get(9..12)?).ok()?.parse().ok()?;
        Some((code, answer.split_off(head_end)))
    };
    let (code, body) = tokio::time::timeout(bound, fetch).await.ok()??;
    Some((code, body, start.elapsed()))
}
