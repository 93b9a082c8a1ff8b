//! The driver's side of the client process: spawns `lanyard-bench-client`, collects its
//! events, and answers questions about them.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::mpsc;

use crate::wire::{Event, Protocol};

/// A running client process and every event it reported so far.
pub struct Fleet {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: mpsc::UnboundedReceiver<Event>,
    /// Every event, in arrival order.
    pub events: Vec<Event>,
    /// How many proxies.
    pub count: usize,
}

/// How to start the client process.
#[derive(Clone, Debug)]
pub struct FleetSpec<'a> {
    pub client: &'a Path,
    pub addr: SocketAddr,
    pub count: usize,
    pub services: usize,
    pub protocol: Protocol,
    pub spread: Duration,
}

impl<'a> FleetSpec<'a> {
    /// The usual fleet: its proxies connect spread over `count / 2` milliseconds.
    pub fn spread_out(
        client: &'a Path,
        addr: SocketAddr,
        count: usize,
        services: usize,
        protocol: Protocol,
    ) -> Self {
        FleetSpec {
            client,
            addr,
            count,
            services,
            protocol,
            spread: Duration::from_millis(count as u64 / 2),
        }
    }
}

impl Fleet {
    /// Starts the client process, waits until every proxy has its full config and lets the
    /// acknowledgements settle for 500 ms; returns the fleet and when the last proxy was
    /// ready (epoch nanoseconds).
    pub async fn start_settled(
        spec: &FleetSpec<'_>,
        timeout: Duration,
    ) -> anyhow::Result<(Fleet, u64)> {
        let mut fleet = Fleet::spawn(spec)?;
        let ready = fleet.wait_ready(timeout).await?;
        fleet.settle(Duration::from_millis(500)).await?;
        Ok((fleet, ready))
    }

    /// Starts the client process; its proxies begin connecting at once.
    pub fn spawn(spec: &FleetSpec<'_>) -> anyhow::Result<Fleet> {
        let mut child = Command::new(spec.client)
            .arg("--addr")
            .arg(spec.addr.to_string())
            .arg("--count")
            .arg(spec.count.to_string())
            .arg("--services")
            .arg(spec.services.to_string())
            .arg("--protocol")
            .arg(spec.protocol.name())
            .arg("--spread-ms")
            .arg(spec.spread.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", spec.client.display()))?;
        let stdout = child.stdout.take().context("client stdout")?;
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                match serde_json::from_str::<Event>(&line) {
                    Ok(event) => {
                        if tx.send(event).is_err() {
                            return;
                        }
                    }
                    Err(e) => eprintln!("client said something unexpected ({e}): {line}"),
                }
            }
        });
        Ok(Fleet {
            stdin: child.stdin.take(),
            child,
            rx,
            events: Vec::new(),
            count: spec.count,
        })
    }

    /// The client process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Takes in what has arrived.
    fn drain(&mut self) -> anyhow::Result<()> {
        while let Ok(event) = self.rx.try_recv() {
            self.events.push(event);
        }
        Ok(())
    }

    /// Streams that failed and were opened again, with the first reason.
    pub fn retries(&self) -> (usize, Option<String>) {
        let mut first = None;
        let mut count = 0;
        for e in &self.events {
            if let Event::Retry { msg, .. } = e {
                count += 1;
                first.get_or_insert_with(|| msg.clone());
            }
        }
        (count, first)
    }

    /// Waits (at most `timeout`) until `done(events)` holds.
    pub async fn wait_until(
        &mut self,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&[Event]) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.drain()?;
            if done(&self.events) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            match tokio::time::timeout(left.min(Duration::from_millis(50)), self.rx.recv()).await {
                Ok(Some(event)) => self.events.push(event),
                Ok(None) => bail!("the client process exited while waiting for {what}"),
                Err(_) => {}
            }
        }
    }

    /// Waits until every proxy has a response of every type; returns when the last did.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<u64> {
        let count = self.count;
        self.wait_until(timeout, "every proxy's full config", |events| {
            events
                .iter()
                .filter(|e| matches!(e, Event::Ready { .. }))
                .count()
                >= count
        })
        .await?;
        Ok(self
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Ready { at, .. } => Some(*at),
                _ => None,
            })
            .max()
            .unwrap_or(0))
    }

    /// Waits until every stream is open.
    pub async fn wait_open(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let count = self.count;
        self.wait_until(timeout, "every stream open", |events| {
            events
                .iter()
                .filter(|e| matches!(e, Event::Open { .. }))
                .count()
                >= count
        })
        .await
    }

    /// Takes in whatever arrives for `quiet`.
    pub async fn settle(&mut self, quiet: Duration) -> anyhow::Result<()> {
        tokio::time::sleep(quiet).await;
        self.drain()
    }

    /// Responses received at or after `since` (epoch ns).
    pub fn responses_since(&self, since: u64) -> impl Iterator<Item = Response<'_>> {
        self.events.iter().filter_map(move |e| match e {
            Event::Resp {
                p,
                t,
                v,
                n,
                r,
                b,
                at,
            } if *at >= since => Some(Response {
                proxy: *p,
                ty: t,
                version: v,
                resources: *n,
                removed: *r,
                bytes: *b,
                at: *at,
            }),
            _ => None,
        })
    }

    /// Stops the client process.
    pub fn stop(mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "quit");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One response a proxy reported.
#[derive(Clone, Copy, Debug)]
pub struct Response<'a> {
    pub proxy: usize,
    pub ty: &'a str,
    pub version: &'a str,
    pub resources: usize,
    pub removed: usize,
    pub bytes: usize,
    pub at: u64,
}
