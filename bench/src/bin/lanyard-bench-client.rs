//! Simulated proxies for `lanyard-bench`, in their own process so that their cost is not
//! charged to the server: N ADS streams, each on its own HTTP/2 connection, each
//! subscribing like a sidecar (CDS, EDS, LDS, RDS; wildcard), ACKing every response at
//! once and reporting each one on stdout (see `lanyard_bench::wire`). Runs until stdin
//! closes or says `quit`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use lanyard_bench::mesh::Shape;
use lanyard_bench::wire::{Event, Protocol, TYPES, node, now_ns, short_type};
use prost::Message;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

#[derive(Parser, Debug)]
struct Args {
    /// The ADS server.
    #[arg(long)]
    addr: SocketAddr,
    /// How many proxies.
    #[arg(long)]
    count: usize,
    /// Services of the mesh (proxies are its pods; see `Shape::proxy`).
    #[arg(long)]
    services: usize,
    #[arg(long, value_enum, default_value = "sotw")]
    protocol: Protocol,
    /// Connections start evenly over this many milliseconds.
    #[arg(long, default_value_t = 0)]
    spread_ms: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    raise_fd_limit();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?
        .block_on(run(args))
}

/// Raises the soft open-file limit to the hard one: one socket per proxy.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    let _ = setrlimit(Resource::Nofile, limit);
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (events, mut rx) = mpsc::unbounded_channel::<Event>();
    let writer = tokio::spawn(async move {
        let mut out = tokio::io::BufWriter::new(tokio::io::stdout());
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            for event in batch {
                let mut line = serde_json::to_vec(&event).expect("events serialize");
                line.push(b'\n');
                if out.write_all(&line).await.is_err() {
                    return;
                }
            }
            if out.flush().await.is_err() {
                return;
            }
        }
    });
    let shape = Shape::new(args.services);
    let start = tokio::time::Instant::now();
    for p in 0..args.count {
        let at = start
            + Duration::from_millis(args.spread_ms) * u32::try_from(p).unwrap_or(u32::MAX)
                / u32::try_from(args.count.max(1)).unwrap_or(1);
        let events = events.clone();
        let (id, namespace, pod) = shape.proxy(p);
        let node = node(&id, &namespace, &pod);
        let addr = args.addr;
        let protocol = args.protocol;
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            // Like a sidecar: a failed stream is opened again, after a backoff.
            let mut backoff = Duration::from_millis(100);
            let mut ready = Readiness::new();
            loop {
                let result = match protocol {
                    Protocol::Sotw => sotw(addr, node.clone(), p, &events, &mut ready).await,
                    Protocol::Delta => delta(addr, node.clone(), p, &events, &mut ready).await,
                };
                let msg = match result {
                    Ok(()) => "the server ended the stream".to_string(),
                    Err(e) => format!("{e:#}"),
                };
                let _ = events.send(Event::Retry {
                    p,
                    msg,
                    at: now_ns(),
                });
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        });
    }
    drop(events);
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = stdin.next_line().await {
        if line.trim() == "quit" {
            break;
        }
    }
    writer.abort();
    std::process::exit(0);
}

async fn connect(
    addr: SocketAddr,
) -> anyhow::Result<AggregatedDiscoveryServiceClient<tonic::transport::Channel>> {
    // One Channel per proxy: its own TCP connection and HTTP/2 session, as a sidecar has.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(30))
        .connect()
        .await?;
    Ok(AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(512 << 20))
}

/// Tracks which types a proxy has and reports `Ready` once it has all four.
struct Readiness {
    seen: [bool; 4],
    done: bool,
}

impl Readiness {
    fn new() -> Self {
        Readiness {
            seen: [false; 4],
            done: false,
        }
    }

    fn got(&mut self, type_url: &str) -> bool {
        if let Some(i) = TYPES.iter().position(|t| *t == type_url) {
            self.seen[i] = true;
        }
        let now = !self.done && self.seen.iter().all(|s| *s);
        self.done |= now;
        now
    }
}

async fn sotw(
    addr: SocketAddr,
    node: Node,
    p: usize,
    events: &mpsc::UnboundedSender<Event>,
    ready: &mut Readiness,
) -> anyhow::Result<()> {
    let mut client = connect(addr).await?;
    let (requests, rx) = mpsc::unbounded_channel();
    for (i, type_url) in TYPES.iter().enumerate() {
        requests.send(DiscoveryRequest {
            node: (i == 0).then(|| node.clone()),
            type_url: type_url.to_string(),
            ..Default::default()
        })?;
    }
    let mut responses = client
        .stream_aggregated_resources(UnboundedReceiverStream::new(rx))
        .await?
        .into_inner();
    let _ = events.send(Event::Open { p, at: now_ns() });
    while let Some(response) = responses.message().await? {
        let at = now_ns();
        requests.send(DiscoveryRequest {
            version_info: response.version_info.clone(),
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })?;
        let _ = events.send(Event::Resp {
            p,
            t: short_type(&response.type_url).to_string(),
            v: response.version_info.clone(),
            n: response.resources.len(),
            r: 0,
            b: response.encoded_len(),
            at,
        });
        if ready.got(&response.type_url) {
            let _ = events.send(Event::Ready { p, at });
        }
    }
    Ok(())
}

async fn delta(
    addr: SocketAddr,
    node: Node,
    p: usize,
    events: &mpsc::UnboundedSender<Event>,
    ready: &mut Readiness,
) -> anyhow::Result<()> {
    let mut client = connect(addr).await?;
    let (requests, rx) = mpsc::unbounded_channel();
    for (i, type_url) in TYPES.iter().enumerate() {
        requests.send(DeltaDiscoveryRequest {
            node: (i == 0).then(|| node.clone()),
            type_url: type_url.to_string(),
            resource_names_subscribe: vec!["*".to_string()],
            ..Default::default()
        })?;
    }
    let mut responses = client
        .delta_aggregated_resources(UnboundedReceiverStream::new(rx))
        .await?
        .into_inner();
    let _ = events.send(Event::Open { p, at: now_ns() });
    while let Some(response) = responses.message().await? {
        let at = now_ns();
        requests.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })?;
        let _ = events.send(Event::Resp {
            p,
            t: short_type(&response.type_url).to_string(),
            v: response.system_version_info.clone(),
            n: response.resources.len(),
            r: response.removed_resources.len(),
            b: response.encoded_len(),
            at,
        });
        if ready.got(&response.type_url) {
            let _ = events.send(Event::Ready { p, at });
        }
    }
    Ok(())
}
