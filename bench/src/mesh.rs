//! The synthetic mesh: N Services spread over namespaces, each with an EndpointSlice of
//! [`PODS_PER_SERVICE`] pods, the Pods themselves, and an HTTPRoute of [`RULES`] rules
//! (path and header matches, a header filter, a 90/10 weighted split), plus one consumer
//! route (namespace `ns-1` overriding `svc-0` of `ns-0`) so that one change is seen by one
//! namespace only.
//!
//! Objects are written as the JSON `kubectl apply` would read and parsed by the index's own
//! parser, so the translator sees exactly what it sees in production.

use lanyard_index::{Object, Objects, Parsed, parse_value};
use serde_json::{Value, json};

/// Rules per HTTPRoute.
pub const RULES: usize = 10;
/// Endpoints (and Pods) per Service.
pub const PODS_PER_SERVICE: usize = 3;
/// Namespaces at full size.
pub const NAMESPACES: usize = 50;
/// The Service port.
pub const PORT: u16 = 8080;
/// The namespace whose consumer route overrides `svc-0`.
pub const CONSUMER_NAMESPACE: &str = "ns-1";

/// The size of a synthetic mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Services (each with one HTTPRoute).
    pub services: usize,
    /// Namespaces the Services are spread over (round robin).
    pub namespaces: usize,
}

impl Shape {
    /// `services` Services in [`NAMESPACES`] namespaces, fewer when there are too few
    /// Services to give every namespace two.
    pub fn new(services: usize) -> Shape {
        let services = services.max(2);
        Shape {
            services,
            namespaces: NAMESPACES.min(services / 2).max(1),
        }
    }

    /// The namespace of Service `i`.
    pub fn namespace_of(&self, service: usize) -> String {
        format!("ns-{}", service % self.namespaces)
    }

    /// The other Service of `i`'s namespace its routes split traffic to.
    fn canary_of(&self, i: usize) -> usize {
        if i + self.namespaces < self.services {
            i + self.namespaces
        } else {
            i - self.namespaces
        }
    }

    /// Who simulated proxy `i` is: `(node id, namespace, pod)`. Proxies are pods of the
    /// mesh, round robin over Services then over each Service's pods; beyond
    /// `services × PODS_PER_SERVICE` proxies several streams share a pod.
    pub fn proxy(&self, i: usize) -> (String, String, String) {
        let service = i % self.services;
        let pod = (i / self.services) % PODS_PER_SERVICE;
        (
            format!("proxy-{i}"),
            self.namespace_of(service),
            format!("svc-{service}-{pod}"),
        )
    }

    /// The proxy index in a node id `proxy-<i>`.
    pub fn proxy_index(node_id: &str) -> Option<usize> {
        node_id.strip_prefix("proxy-")?.parse().ok()
    }
}

fn ipv4(base: u8, n: usize) -> String {
    format!(
        "10.{}.{}.{}",
        base as usize + (n >> 16),
        (n >> 8) & 0xff,
        n & 0xff
    )
}

/// The address endpoint 0 of a Service gets at event `k` (see [`endpoint_event`]).
pub fn event_ip(k: usize) -> String {
    ipv4(200, k)
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn service(shape: &Shape, i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": shape.namespace_of(i)},
        "spec": {
            "clusterIP": ipv4(96, i),
            "selector": {"app": format!("svc-{i}")},
            "ports": [{"name": "http", "port": PORT, "targetPort": PORT, "appProtocol": "http"}]
        }
    })
}

fn pod(shape: &Shape, i: usize, k: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("svc-{i}-{k}"), "namespace": shape.namespace_of(i),
                     "labels": {"app": format!("svc-{i}")}},
        "spec": {"serviceAccountName": format!("svc-{i}"),
                 "containers": [{"name": "app", "image": "app:1",
                                 "ports": [{"name": "http", "containerPort": PORT}]}]},
        "status": {"phase": "Running", "podIP": ipv4(128, i * PODS_PER_SERVICE + k)}
    })
}

/// The EndpointSlice of Service `i`; endpoint 0 has `first_ip` when given.
fn endpoint_slice(shape: &Shape, i: usize, first_ip: Option<&str>) -> Value {
    let endpoints: Vec<Value> = (0..PODS_PER_SERVICE)
        .map(|k| {
            let ip = match (k, first_ip) {
                (0, Some(ip)) => ip.to_string(),
                _ => ipv4(128, i * PODS_PER_SERVICE + k),
            };
            json!({
                "addresses": [ip],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "zone": format!("zone-{}", k % 3),
                "targetRef": {"kind": "Pod", "namespace": shape.namespace_of(i),
                              "name": format!("svc-{i}-{k}")}
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-slice"), "namespace": shape.namespace_of(i),
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": PORT, "protocol": "TCP", "appProtocol": "http"}],
        "endpoints": endpoints
    })
}

/// The producer HTTPRoute of Service `i`: rule 0 splits `weight` / `100 - weight`.
fn http_route(shape: &Shape, i: usize, weight: u32) -> Value {
    let canary = shape.canary_of(i);
    let rules: Vec<Value> = (0..RULES)
        .map(|r| {
            let w = if r == 0 { weight } else { 90 };
            let path = if r == RULES - 1 {
                "/".to_string()
            } else {
                format!("/api/v{r}")
            };
            let mut matches = json!([{"path": {"type": "PathPrefix", "value": path}}]);
            if r % 2 == 1 {
                matches[0]["headers"] = json!([{"name": "x-tenant", "value": format!("t{r}")}]);
            }
            json!({
                "matches": matches,
                "filters": [{"type": "RequestHeaderModifier",
                             "requestHeaderModifier": {"set": [{"name": "x-rule", "value": r.to_string()}]}}],
                "backendRefs": [
                    {"name": format!("svc-{i}"), "port": PORT, "weight": w},
                    {"name": format!("svc-{canary}"), "port": PORT, "weight": 100 - w}
                ],
                "timeouts": {"request": "10s"}
            })
        })
        .collect();
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": format!("svc-{i}"), "namespace": shape.namespace_of(i)},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": format!("svc-{i}"), "port": PORT}],
            "rules": rules
        }
    })
}

/// The consumer route of [`CONSUMER_NAMESPACE`] on `svc-0`: only clients there see it.
fn consumer_route(shape: &Shape, weight: u32) -> Value {
    let target = shape.namespace_of(0);
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "consumer-svc-0", "namespace": CONSUMER_NAMESPACE},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "namespace": target, "name": "svc-0", "port": PORT}],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [
                    {"name": "svc-0", "namespace": target, "port": PORT, "weight": weight},
                    {"name": format!("svc-{}", shape.canary_of(0)), "namespace": target, "port": PORT, "weight": 100 - weight}
                ]
            }]
        }
    })
}

fn reference_grant(shape: &Shape) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": "from-consumers", "namespace": shape.namespace_of(0)},
        "spec": {
            "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": CONSUMER_NAMESPACE}],
            "to": [{"group": "", "kind": "Service"}]
        }
    })
}

fn parse(value: Value) -> Object {
    let mut parsed = parse_value(value, "default");
    match parsed.pop() {
        Some(Ok(Parsed::Object { object, .. })) => *object,
        other => panic!("the generator wrote an object the index cannot read: {other:?}"),
    }
}

/// Every object of the mesh.
pub fn objects(shape: &Shape) -> Objects {
    let mut objects = Objects::default();
    for n in 0..shape.namespaces {
        objects.apply(parse(namespace(&format!("ns-{n}"))));
    }
    for i in 0..shape.services {
        objects.apply(parse(service(shape, i)));
        objects.apply(parse(endpoint_slice(shape, i, None)));
        for k in 0..PODS_PER_SERVICE {
            objects.apply(parse(pod(shape, i, k)));
        }
        objects.apply(parse(http_route(shape, i, 90)));
    }
    if shape.namespaces > 1 {
        objects.apply(parse(consumer_route(shape, 90)));
        objects.apply(parse(reference_grant(shape)));
    }
    objects
}

/// A change only clients in [`CONSUMER_NAMESPACE`] see: the consumer route's weight.
pub fn consumer_weight(objects: &mut Objects, shape: &Shape, weight: u32) {
    objects.apply(parse(consumer_route(shape, weight)));
}

/// A change every client sees: rule 0's weight of Service `service`'s producer route.
pub fn producer_weight(objects: &mut Objects, shape: &Shape, service: usize, weight: u32) {
    objects.apply(parse(http_route(shape, service, weight)));
}

/// An endpoint change: endpoint 0 of Service `service` moves to [`event_ip`]`(k)`.
pub fn endpoint_event(objects: &mut Objects, shape: &Shape, service: usize, k: usize) {
    objects.apply(parse(endpoint_slice(shape, service, Some(&event_ip(k)))));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mesh_translates_with_every_route_accepted() {
        let shape = Shape::new(20);
        let objects = objects(&shape);
        let t = lanyard_index::translate(&objects, &lanyard_index::Options::default());
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        assert_eq!(t.model.services.len(), 20);
        assert_eq!(t.statuses.len(), 21);
        for status in &t.statuses {
            let text = format!("{status:?}");
            assert!(!text.contains("False"), "{text}");
        }
    }
}
