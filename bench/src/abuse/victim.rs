//! The well-behaved proxy connected throughout: a SotW client subscribing CDS, EDS, LDS and
//! RDS that ACKs everything, and the change it must see: a Service written into the watched
//! directory (a new name each time, so its cluster shows up in CDS).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::wire::{TYPES, node};

/// The victim proxy: the cluster names of the last CDS response it got.
pub struct Victim {
    clusters: watch::Receiver<BTreeSet<String>>,
    task: tokio::task::JoinHandle<()>,
    config_dir: PathBuf,
    changes: usize,
}

impl Drop for Victim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Victim {
    /// Connects as `victim-0.bookinfo` and waits for its first CDS response.
    pub async fn connect(xds: SocketAddr, config_dir: &Path) -> anyhow::Result<Victim> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{xds}"))?
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await?;
        let mut client =
            AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20);
        let (requests, rx) = mpsc::unbounded_channel();
        let node = node("victim-0.bookinfo", "bookinfo", "victim-0");
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
        let (tx, mut clusters) = watch::channel(BTreeSet::new());
        let task = tokio::spawn(async move {
            while let Ok(Some(response)) = responses.message().await {
                let _ = requests.send(DiscoveryRequest {
                    version_info: response.version_info.clone(),
                    type_url: response.type_url.clone(),
                    response_nonce: response.nonce.clone(),
                    ..Default::default()
                });
                if response.type_url == lanyard_xds::type_url::CLUSTER {
                    let names = response
                        .resources
                        .iter()
                        .filter_map(|any| {
                            <lanyard_xds::Cluster as prost::Message>::decode(any.value.as_slice())
                                .ok()
                        })
                        .map(|c| c.name)
                        .collect();
                    let _ = tx.send(names);
                }
            }
        });
        tokio::time::timeout(
            Duration::from_secs(30),
            clusters.wait_for(|c| !c.is_empty()),
        )
        .await
        .context("the victim got no clusters within 30 s")??;
        Ok(Victim {
            clusters,
            task,
            config_dir: config_dir.to_path_buf(),
            changes: 0,
        })
    }

    /// Writes a change into the watched directory and waits, at most `bound`, for the
    /// victim to get it: the time it took, `None` if it did not come.
    pub async fn change(&mut self, bound: Duration) -> Option<Duration> {
        self.changes += 1;
        let name = format!("abuse-canary-{}", self.changes);
        let cluster = format!("outbound|80||{name}.bookinfo.svc.cluster.local");
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: bookinfo\nspec:\n  clusterIP: 10.96.250.{}\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n",
            self.changes % 250 + 1
        );
        let start = Instant::now();
        // Written beside and renamed, so the watcher never reads half a file.
        let partial = self.config_dir.join(".abuse-canary.yaml.partial");
        std::fs::write(&partial, yaml).ok()?;
        std::fs::rename(&partial, self.config_dir.join("abuse-canary.yaml")).ok()?;
        tokio::time::timeout(bound, self.clusters.wait_for(|c| c.contains(&cluster)))
            .await
            .ok()?
            .ok()?;
        Some(start.elapsed())
    }
}
