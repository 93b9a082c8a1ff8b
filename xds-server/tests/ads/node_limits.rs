//! What a proxy's node may carry (`NodeLimits`): a node over a limit is refused with a
//! short RESOURCE_EXHAUSTED status and counted; other proxies are served as before.

use std::collections::HashMap;

use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use lanyard_xds::testing::TestServer;
use lanyard_xds::testing::client::{SotwClient, node, node_in};

use crate::mesh::*;

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

async fn refused(
    server: &TestServer,
    node: envoy_types::pb::envoy::config::core::v3::Node,
) -> tonic::Status {
    let mut client = SotwClient::connect(server.ads, node).await;
    client.subscribe(CDS, &[]);
    client.next().await.unwrap_err()
}

#[tokio::test]
async fn a_16_mb_node_id_or_15_mb_of_labels_is_refused_with_a_short_message() {
    let server = TestServer::start(&base()).await;

    let status = refused(&server, node(&format!("{}.shop", "x".repeat(16_000_000)))).await;
    assert_eq!(
        status.code(),
        tonic::Code::ResourceExhausted,
        "{}",
        status.message()
    );
    assert_eq!(
        status.message(),
        "node id is 16000005 bytes, over the limit of 1024 (--node-id-max-bytes)"
    );

    // 15 MB of labels, each within Kubernetes' bounds on keys and values.
    let labels: HashMap<String, Value> = (0..225_000)
        .map(|i| (format!("example.com/label-{i:08}"), string(&"v".repeat(32))))
        .collect();
    let mut big = node_in("cart-0.shop", "shop", Some("cart-0"));
    big.metadata.as_mut().unwrap().fields.insert(
        lanyard_xds::node::LABELS.to_string(),
        Value {
            kind: Some(Kind::StructValue(Struct { fields: labels })),
        },
    );
    let status = refused(&server, big).await;
    assert_eq!(
        status.code(),
        tonic::Code::ResourceExhausted,
        "{}",
        status.message()
    );
    assert!(
        status.message().len() < 200,
        "{} bytes",
        status.message().len()
    );
    assert!(
        status.message().contains("--node-metadata-max-bytes"),
        "{}",
        status.message()
    );

    // Counted, and a proxy within the limits is served.
    let metrics = server.get("/metrics").await.1;
    for limit in ["node_id", "node_metadata"] {
        let line = format!("lanyard_xds_limit_refusals_total{{limit=\"{limit}\"}} 1\n");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    let mut good = SotwClient::connect(server.ads, node(CART_0)).await;
    good.subscribe(CDS, &[]);
    assert!(!good.recv_type(CDS).await.resources.is_empty());
}
