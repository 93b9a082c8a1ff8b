//! API listeners for proxyless gRPC: a client with the target `xds:///NAME` asks LDS for a
//! Listener named exactly `NAME`, holding an HttpConnectionManager in `api_listener`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use lanyard_model::{Model, NamespaceName, Protocol, ServiceKey, ServicePortKey};

use crate::listeners::filters::{http_connection_manager, inline_routes, rds, router};
use crate::names;
use crate::protobuf::any;
use crate::routes;

/// Port a name without `:port` resolves to when the Service has it.
const DEFAULT_PORT: u16 = 80;

/// What name resolution needs to know about the mesh: every Service's ports and ClusterIPs.
#[derive(Clone, Debug, Default)]
pub struct ServiceDirectory {
    cluster_domain: String,
    ports: BTreeMap<ServiceKey, Vec<(u16, Protocol)>>,
    by_ip: BTreeMap<IpAddr, ServiceKey>,
}

impl ServiceDirectory {
    /// Indexes the Services of `model`.
    pub fn new(model: &Model, cluster_domain: &str) -> Self {
        let mut directory = ServiceDirectory {
            cluster_domain: cluster_domain.to_string(),
            ..Default::default()
        };
        for (key, service) in &model.services {
            directory.ports.insert(
                key.clone(),
                service.ports.iter().map(|p| (p.port, p.protocol)).collect(),
            );
            for ip in &service.cluster_ips {
                directory.by_ip.insert(*ip, key.clone());
            }
        }
        directory
    }

    /// Resolves `NAME` for a client in `client_namespace`: `svc.ns.svc.<domain>`, `svc.ns.svc`,
    /// `svc.ns`, `svc` (in the client's namespace) or a ClusterIP (IPv6 in brackets when a
    /// port follows), each with an optional `:port`. Without a port: 80 if the Service has
    /// it, else its only port. `None` when nothing in the mesh matches.
    pub fn resolve(
        &self,
        name: &str,
        client_namespace: &NamespaceName,
    ) -> Option<(ServicePortKey, Protocol)> {
        let (host, port) = split_host_port(name)?;
        let service = match host.parse::<IpAddr>() {
            Ok(ip) => self.by_ip.get(&ip)?.clone(),
            Err(_) => self.service_by_name(host, client_namespace)?,
        };
        let ports = self.ports.get(&service)?;
        let (port, protocol) = match port {
            Some(port) => *ports.iter().find(|(p, _)| *p == port)?,
            None => match ports.iter().find(|(p, _)| *p == DEFAULT_PORT) {
                Some(found) => *found,
                None if ports.len() == 1 => ports[0],
                None => return None,
            },
        };
        Some((ServicePortKey::new(service, port), protocol))
    }

    /// The protocol of a Service port the directory knows.
    pub fn protocol(&self, key: &ServicePortKey) -> Option<Protocol> {
        let ports = self.ports.get(&key.service)?;
        ports
            .iter()
            .find(|(p, _)| *p == key.port)
            .map(|&(_, protocol)| protocol)
    }

    fn service_by_name(&self, host: &str, client_namespace: &NamespaceName) -> Option<ServiceKey> {
        let host = host.strip_suffix('.').unwrap_or(host);
        let labels: Vec<&str> = host.split('.').collect();
        let (name, namespace) = match labels.as_slice() {
            [name] => (*name, client_namespace.as_str()),
            [name, namespace] | [name, namespace, "svc"] => (*name, *namespace),
            [name, namespace, "svc", domain @ ..] if domain.join(".") == self.cluster_domain => {
                (*name, *namespace)
            }
            _ => return None,
        };
        if name.is_empty() || namespace.is_empty() {
            return None;
        }
        let key = ServiceKey::new(namespace, name);
        self.ports.contains_key(&key).then_some(key)
    }
}

/// Splits `host[:port]` / `[v6][:port]` / a bare IPv6 address, as gRPC's xDS resolver
/// sends it: the `NAME` of the target `xds:///NAME`, as written (grpc-go v1.7x
/// xds/internal/resolver/xds_resolver.go: the listener name is the target's endpoint put in
/// the `%s` template). Only the canonical spelling of a port and of an IP is read; any
/// other (`+9080`, `09080`, `0`, `99999`, `[FD00:0::5]`) is `None`, a name that resolves to
/// nothing. Otherwise `u16::from_str`, which takes a `+` and any number of leading zeros,
/// would give one Service port endlessly many names, each its own listener.
fn split_host_port(name: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = name.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        if !matches!(host.parse::<IpAddr>(), Ok(IpAddr::V6(ip)) if ip.to_string() == host) {
            return None;
        }
        let port = match after {
            "" => None,
            _ => Some(canonical_port(after.strip_prefix(':')?)?),
        };
        return Some((host, port));
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        return (ip.to_string() == name).then_some((name, None));
    }
    let (host, port) = match name.rsplit_once(':') {
        Some((host, port)) => (host, Some(canonical_port(port)?)),
        None => (name, None),
    };
    match host.parse::<IpAddr>() {
        // An IPv6 address before a port needs brackets.
        Ok(IpAddr::V6(_)) => None,
        Ok(ip) if ip.to_string() != host => None,
        _ => Some((host, port)),
    }
}

/// A port as a URI authority writes it: decimal digits without sign or leading zero, 1 to
/// 65535.
fn canonical_port(text: &str) -> Option<u16> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || text.starts_with('0') || text.len() > 5 {
        return None;
    }
    text.parse().ok()
}

/// The API listener `name` for a Service port: RDS `<fqdn>:<port>` for HTTP ports; for a TCP
/// port (which has no RouteConfiguration) an inline pass-through route to the port's cluster,
/// so a gRPC client can still reach it. `http_filters` is just the router.
pub fn api_listener(
    name: &str,
    port: &ServicePortKey,
    protocol: Protocol,
    cluster_domain: &str,
) -> Listener {
    let route_config = names::route_config(port, cluster_domain);
    let routes = if protocol.is_http() {
        rds(&route_config)
    } else {
        inline_routes(routes::single_cluster(
            &route_config,
            &names::outbound_cluster(port, cluster_domain),
        ))
    };
    let hcm = http_connection_manager(name, routes, vec![router()]);
    Listener {
        name: name.to_string(),
        api_listener: Some(ApiListener {
            api_listener: Some(any(&hcm)),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, http_connection_manager::RouteSpecifier,
    };
    use prost::Message;

    use super::*;
    use crate::fixtures::{mk_model, mk_service, spk};

    fn directory() -> ServiceDirectory {
        let model = mk_model(
            vec![
                mk_service(
                    "shop",
                    "cart",
                    &["10.96.0.5", "fd00::5"],
                    &[(80, Protocol::Http), (9090, Protocol::Grpc)],
                ),
                mk_service("shop", "grpc", &["10.96.0.6"], &[(50051, Protocol::Grpc)]),
                mk_service(
                    "shop",
                    "multi",
                    &[],
                    &[(81, Protocol::Http), (82, Protocol::Http)],
                ),
                mk_service("other", "cart", &["10.96.0.7"], &[(80, Protocol::Http)]),
            ],
            vec![],
        );
        ServiceDirectory::new(&model, "cluster.local")
    }

    fn resolve(name: &str, ns: &str) -> Option<ServicePortKey> {
        directory()
            .resolve(name, &NamespaceName::new(ns))
            .map(|(key, _)| key)
    }

    #[test]
    fn all_name_forms_with_ports() {
        let cart9090 = Some(spk("shop", "cart", 9090));
        assert_eq!(resolve("cart.shop.svc.cluster.local:9090", "x"), cart9090);
        assert_eq!(resolve("cart.shop.svc:9090", "x"), cart9090);
        assert_eq!(resolve("cart.shop:9090", "x"), cart9090);
        assert_eq!(resolve("cart:9090", "shop"), cart9090);
        assert_eq!(resolve("10.96.0.5:9090", "x"), cart9090);
        assert_eq!(resolve("[fd00::5]:9090", "x"), cart9090);
    }

    #[test]
    fn short_names_resolve_in_the_client_namespace() {
        assert_eq!(resolve("cart", "other"), Some(spk("other", "cart", 80)));
        assert_eq!(resolve("cart", "shop"), Some(spk("shop", "cart", 80)));
        assert_eq!(resolve("cart", "nowhere"), None);
    }

    #[test]
    fn default_ports() {
        assert_eq!(resolve("cart.shop", "x"), Some(spk("shop", "cart", 80)));
        assert_eq!(resolve("fd00::5", "x"), Some(spk("shop", "cart", 80)));
        assert_eq!(
            resolve("grpc.shop.svc.cluster.local", "x"),
            Some(spk("shop", "grpc", 50051))
        );
        assert_eq!(resolve("multi.shop", "x"), None);
        assert_eq!(
            resolve("multi.shop:82", "x"),
            Some(spk("shop", "multi", 82))
        );
    }

    #[test]
    fn unknown_names_and_ports() {
        assert_eq!(resolve("cart.shop:1234", "x"), None);
        assert_eq!(resolve("cart.shop.svc.example.org:80", "x"), None);
        assert_eq!(resolve("cart.shop.pod:80", "x"), None);
        assert_eq!(resolve("10.1.1.1:80", "x"), None);
        assert_eq!(resolve("cart.shop:http", "x"), None);
        assert_eq!(resolve("", "x"), None);
    }

    #[test]
    fn only_the_canonical_spelling_of_a_port_or_an_ip_resolves() {
        let cart9090 = Some(spk("shop", "cart", 9090));
        assert_eq!(resolve("cart.shop:9090", "x"), cart9090);
        for name in [
            "cart.shop:+9090",
            "cart.shop:09090",
            "cart.shop:+0009090",
            "cart.shop:-9090",
            "cart.shop: 9090",
            "cart.shop:",
            "cart.shop:0",
            "cart.shop:65536",
            "cart.shop:4294976386",
            "[fd00:0::5]:9090",
            "[FD00::5]:9090",
            "[fd00::5]:09090",
            "[10.96.0.5]:9090",
            "fd00:0::5",
            "010.96.0.5:9090",
        ] {
            assert_eq!(resolve(name, "x"), None, "{name}");
        }
        assert_eq!(resolve("[fd00::5]:9090", "x"), cart9090);
        assert_eq!(resolve("10.96.0.5:9090", "x"), cart9090);
    }

    fn hcm(listener: &Listener) -> HttpConnectionManager {
        let any = listener
            .api_listener
            .as_ref()
            .unwrap()
            .api_listener
            .as_ref()
            .unwrap();
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
        );
        HttpConnectionManager::decode(any.value.as_slice()).unwrap()
    }

    #[test]
    fn api_listener_uses_rds_and_ends_with_router() {
        let listener = api_listener(
            "cart:9090",
            &spk("shop", "cart", 9090),
            Protocol::Grpc,
            "cluster.local",
        );
        assert_eq!(listener.name, "cart:9090");
        assert_eq!(listener.address, None);
        let hcm = hcm(&listener);
        let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
            panic!("no RDS");
        };
        assert_eq!(rds.route_config_name, "cart.shop.svc.cluster.local:9090");
        assert_eq!(
            hcm.http_filters.last().unwrap().name,
            "envoy.filters.http.router"
        );
    }

    #[test]
    fn tcp_ports_get_inline_passthrough_routes() {
        let listener = api_listener(
            "db:5432",
            &spk("shop", "db", 5432),
            Protocol::Tcp,
            "cluster.local",
        );
        let Some(RouteSpecifier::RouteConfig(config)) = hcm(&listener).route_specifier else {
            panic!("no inline routes");
        };
        assert_eq!(config.name, "db.shop.svc.cluster.local:5432");
    }
}
