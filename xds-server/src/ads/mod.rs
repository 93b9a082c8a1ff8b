//! The Aggregated Discovery Service: `StreamAggregatedResources` (state of the world) and
//! `DeltaAggregatedResources` (incremental), each stream run by one task over the shared
//! core in [`core`].

pub mod core;
pub mod delta;
pub mod sotw;
pub mod subscription;

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_server::AggregatedDiscoveryService,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::server::Shared;

/// The tonic service.
#[derive(Clone, Debug)]
pub struct AdsService {
    shared: Arc<Shared>,
}

impl AdsService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        AdsService { shared }
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        // One slot: the stream task computes a response only when the previous one left.
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(core::drive::<sotw::Sotw>(
            self.shared.clone(),
            request.into_inner(),
            tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(core::drive::<delta::Delta>(
            self.shared.clone(),
            request.into_inner(),
            tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
