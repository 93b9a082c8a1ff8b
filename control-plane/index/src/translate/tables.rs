//! Routes merged into per-port tables, producer and consumer; conflicts; route status.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use lanyard_model::{
    NamespaceName, PortRouting, Protocol, Route, RouteTable, ServiceKey, ServicePortKey,
};

use crate::api::ParentReference;
use crate::objects::{Kind, ObjectKey, ObjectRef, Objects};
use crate::status::{Condition, ParentStatus, RouteStatus, reasons};
use crate::translate::Options;
use crate::translate::backends::{self, Resolver, ServicesByName};
use crate::translate::filters::Findings;
use crate::translate::parents::{self, Attachment};
use crate::translate::precedence::{Rank, Ranked, TieBreak};
use crate::translate::services::Services;
use crate::translate::{grpc, http};

/// Everything route attachment decided.
pub(super) struct Tables {
    pub routing: BTreeMap<ServicePortKey, PortRouting>,
    pub statuses: Vec<RouteStatus>,
    /// The protocol each routed port is served with, from the kind of table attached.
    pub routed_protocols: BTreeMap<ServicePortKey, Protocol>,
}

/// Who sees a table: every client (producer routes) or one namespace's clients.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Audience {
    Producer,
    Consumer(NamespaceName),
}

/// One route on its way through attachment.
struct Candidate {
    route: ObjectRef,
    generation: Option<i64>,
    parents: Vec<(ParentReference, Attachment)>,
    /// The ranks of `routes`, one each.
    ranks: Vec<Rank>,
    routes: Vec<Route>,
    findings: Findings,
}

impl Candidate {
    fn is_grpc(&self) -> bool {
        self.route.kind == Kind::GrpcRoute
    }
}

pub(super) fn build(objects: &Objects, services: &Services, options: &Options) -> Tables {
    let lookup = Lookup {
        objects,
        services,
        by_name: backends::by_name(services),
    };
    let mut candidates = Vec::with_capacity(objects.http_routes.len() + objects.grpc_routes.len());
    for (key, route) in &objects.http_routes {
        candidates.extend(candidate(
            &lookup,
            Kind::HttpRoute,
            key,
            &route.metadata,
            &route.spec.parent_refs,
            |tie, resolver, findings| http::lower(route, tie, resolver, findings),
        ));
    }
    for (key, route) in &objects.grpc_routes {
        candidates.extend(candidate(
            &lookup,
            Kind::GrpcRoute,
            key,
            &route.metadata,
            &route.spec.parent_refs,
            |tie, resolver, findings| grpc::lower(route, tie, resolver, findings),
        ));
    }

    // Which valid routes attach to each port, for each audience.
    let mut groups: BTreeMap<(ServicePortKey, Audience), BTreeSet<usize>> = BTreeMap::new();
    for (index, c) in candidates.iter().enumerate() {
        if !c.findings.invalid.is_empty() {
            continue;
        }
        for (_, attachment) in &c.parents {
            let Attachment::Ports(service, ports) = attachment else {
                continue;
            };
            let audience = if service.namespace.as_str() == c.route.key.namespace {
                Audience::Producer
            } else {
                Audience::Consumer(NamespaceName::new(&c.route.key.namespace))
            };
            for port in ports {
                groups
                    .entry((port.clone(), audience.clone()))
                    .or_default()
                    .insert(index);
            }
        }
    }

    // GRPCRoute wins over HTTPRoute on the same parent port and audience.
    let mut lost: BTreeMap<(usize, ServicePortKey), ObjectRef> = BTreeMap::new();
    let mut routing: BTreeMap<ServicePortKey, PortRouting> = BTreeMap::new();
    let mut routed_protocols = BTreeMap::new();
    // The members whose routes go into each group's table, and how many tables each
    // candidate's routes go into: the last takes them, the others copy them.
    let groups: Vec<((ServicePortKey, Audience), Vec<usize>, bool)> = groups
        .into_iter()
        .map(|((port, audience), members)| {
            let grpc_winner = members.iter().find(|&&i| candidates[i].is_grpc()).copied();
            let mut kept = Vec::with_capacity(members.len());
            for i in members {
                match grpc_winner {
                    Some(winner) if !candidates[i].is_grpc() => {
                        lost.insert((i, port.clone()), candidates[winner].route.clone());
                    }
                    _ => kept.push(i),
                }
            }
            ((port, audience), kept, grpc_winner.is_some())
        })
        .collect();
    let mut uses = vec![0usize; candidates.len()];
    for (_, kept, _) in &groups {
        for &i in kept {
            uses[i] += 1;
        }
    }
    let mut routes: Vec<Vec<Option<Route>>> = candidates
        .iter_mut()
        .map(|c| c.routes.drain(..).map(Some).collect())
        .collect();
    for ((port, audience), kept, grpc) in groups {
        let mut ranked: Vec<(usize, usize)> = kept
            .iter()
            .flat_map(|&i| (0..candidates[i].ranks.len()).map(move |j| (i, j)))
            .collect();
        ranked.sort_by(|&(a, i), &(b, j)| candidates[a].ranks[i].cmp(&candidates[b].ranks[j]));
        let protocol = if grpc { Protocol::Grpc } else { Protocol::Http };
        routed_protocols.entry(port.clone()).or_insert(protocol);
        let table = RouteTable {
            protocol,
            routes: ranked
                .into_iter()
                .filter_map(|(i, j)| {
                    if uses[i] == 1 {
                        routes[i][j].take()
                    } else {
                        routes[i][j].clone()
                    }
                })
                .collect(),
        };
        for &i in &kept {
            uses[i] -= 1;
        }
        let entry = routing.entry(port).or_default();
        match audience {
            Audience::Producer => entry.producer = Some(table),
            Audience::Consumer(ns) => {
                entry.consumers.insert(ns, table);
            }
        }
    }

    let statuses = candidates
        .iter()
        .enumerate()
        .map(|(index, c)| status(index, c, &lost, options))
        .collect();
    Tables {
        routing,
        statuses,
        routed_protocols,
    }
}

/// What lowering a route looks things up in.
struct Lookup<'a> {
    objects: &'a Objects,
    services: &'a Services,
    by_name: ServicesByName<'a>,
}

/// Lowers one route, or `None` when none of its parentRefs names a Service (then it
/// belongs to a Gateway controller and gets no status from Lanyard).
fn candidate(
    lookup: &Lookup<'_>,
    kind: Kind,
    key: &ObjectKey,
    metadata: &ObjectMeta,
    parent_refs: &[ParentReference],
    lower: impl FnOnce(&TieBreak, &Resolver<'_>, &mut Findings) -> Vec<Ranked>,
) -> Option<Candidate> {
    let parents: Vec<(ParentReference, Attachment)> = parent_refs
        .iter()
        .filter(|p| p.is_service())
        .map(|p| {
            (
                p.clone(),
                parents::attach(&key.namespace, p, lookup.services),
            )
        })
        .collect();
    if parents.is_empty() {
        return None;
    }
    let parent_services: Vec<ServiceKey> = parents
        .iter()
        .map(|(p, _)| {
            ServiceKey::new(
                p.namespace.as_deref().unwrap_or(&key.namespace),
                p.name.clone(),
            )
        })
        .collect();
    let resolver = Resolver {
        objects: lookup.objects,
        by_name: &lookup.by_name,
        route_kind: kind,
        route_namespace: &key.namespace,
        parents: &parent_services,
    };
    let tie = TieBreak {
        created: metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| serde_json::to_value(t).ok())
            .and_then(|v| v.as_str().map(Rc::from))
            .unwrap_or_else(|| Rc::from("")),
        route: Rc::from(key.to_string()),
        rule: 0,
        matched: 0,
    };
    let mut findings = Findings::default();
    let (ranks, routes) = lower(&tie, &resolver, &mut findings)
        .into_iter()
        .map(|r| (r.rank, r.route))
        .unzip();
    Some(Candidate {
        route: ObjectRef {
            kind,
            key: key.clone(),
        },
        generation: metadata.generation,
        parents,
        ranks,
        routes,
        findings,
    })
}

fn status(
    index: usize,
    c: &Candidate,
    lost: &BTreeMap<(usize, ServicePortKey), ObjectRef>,
    options: &Options,
) -> RouteStatus {
    let generation = c.generation;
    let resolved = match c.findings.problems.first() {
        None => Condition::new(
            reasons::RESOLVED_REFS,
            true,
            reasons::RESOLVED_REFS,
            "All references resolved",
            generation,
        ),
        Some(first) => Condition::new(
            reasons::RESOLVED_REFS,
            false,
            first.reason,
            c.findings
                .problems
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            generation,
        ),
    };
    let parents = c
        .parents
        .iter()
        .map(|(parent_ref, attachment)| {
            let accepted = if !c.findings.invalid.is_empty() {
                Condition::new(
                    reasons::ACCEPTED,
                    false,
                    reasons::UNSUPPORTED_VALUE,
                    c.findings.invalid.join("; "),
                    generation,
                )
            } else {
                match attachment {
                    Attachment::Rejected { reason, message } => Condition::new(
                        reasons::ACCEPTED,
                        false,
                        reason,
                        message.clone(),
                        generation,
                    ),
                    Attachment::Ports(_, ports) => accepted(index, ports, lost, generation),
                }
            };
            ParentStatus {
                parent_ref: parent_ref.clone(),
                controller_name: options.controller_name.clone(),
                conditions: vec![accepted, resolved.clone()],
            }
        })
        .collect();
    RouteStatus {
        route: c.route.clone(),
        generation,
        parents,
    }
}

fn accepted(
    index: usize,
    ports: &[ServicePortKey],
    lost: &BTreeMap<(usize, ServicePortKey), ObjectRef>,
    generation: Option<i64>,
) -> Condition {
    let lost_here: Vec<(&ServicePortKey, &ObjectRef)> = ports
        .iter()
        .filter_map(|p| lost.get(&(index, p.clone())).map(|winner| (p, winner)))
        .collect();
    let describe = || {
        lost_here
            .iter()
            .map(|(port, winner)| format!("{port} ({winner})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !ports.is_empty() && lost_here.len() == ports.len() {
        Condition::new(
            reasons::ACCEPTED,
            false,
            reasons::CONFLICTED,
            format!(
                "a GRPCRoute takes precedence over this HTTPRoute on {}",
                describe()
            ),
            generation,
        )
    } else if lost_here.is_empty() {
        Condition::new(
            reasons::ACCEPTED,
            true,
            reasons::ACCEPTED,
            "Route is accepted",
            generation,
        )
    } else {
        Condition::new(
            reasons::ACCEPTED,
            true,
            reasons::ACCEPTED,
            format!(
                "Route is accepted, except on {} where a GRPCRoute takes precedence",
                describe()
            ),
            generation,
        )
    }
}
