//! Routes merged into per-port tables, producer and consumer; conflicts; route status.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use lanyard_model::{
    Action, BackendTarget, NamespaceName, PortRouting, Protocol, Route, RouteTable, ServiceKey,
    ServicePortKey,
};

use crate::api::ParentReference;
use crate::objects::{Kind, ObjectKey, ObjectRef, Objects};
use crate::status::{Condition, ParentStatus, RouteStatus, reasons};
use crate::translate::backends::{self, Resolver, ServicesByName};
use crate::translate::filters::{Findings, rule_label};
use crate::translate::parents::{self, Attachment};
use crate::translate::precedence::{Rank, Ranked, TieBreak};
use crate::translate::services::{DeclaredProtocol, Services};
use crate::translate::{Options, PortProvenance, RuleRef};
use crate::translate::{grpc, http};

/// Everything route attachment decided.
pub(super) struct Tables {
    pub routing: BTreeMap<ServicePortKey, PortRouting>,
    pub statuses: Vec<RouteStatus>,
    /// The protocol each routed port is served with, from the kind of table attached.
    pub routed_protocols: BTreeMap<ServicePortKey, Protocol>,
    /// The rule behind each route of each table in `routing`.
    pub provenance: BTreeMap<ServicePortKey, PortProvenance>,
    /// Ports that declare no protocol and that a GRPCRoute sends to (backends and mirrors):
    /// they carry gRPC, so they are served as HTTP/2.
    pub grpc_backends: BTreeSet<ServicePortKey>,
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
    /// The name of each rule in `spec.rules`, for messages.
    rule_names: Vec<Option<String>>,
    /// Rules left out for a spec violation or a receiver's refusal; the others still route.
    dropped: BTreeSet<usize>,
}

impl Candidate {
    fn is_grpc(&self) -> bool {
        self.route.kind == Kind::GrpcRoute
    }

    /// Whether the route attaches nowhere: a violation outside any rule, or no valid rule
    /// left.
    fn rejected(&self) -> bool {
        self.findings.route_invalid()
            || (!self.rule_names.is_empty() && self.dropped.len() >= self.rule_names.len())
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
            route.spec.rules.iter().map(|r| r.name.clone()).collect(),
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
            route.spec.rules.iter().map(|r| r.name.clone()).collect(),
            |tie, resolver, findings| grpc::lower(route, tie, resolver, findings),
        ));
    }

    // Which valid routes attach to each port, for each audience.
    let mut groups: BTreeMap<(ServicePortKey, Audience), BTreeSet<usize>> = BTreeMap::new();
    for c in &mut candidates {
        drop_rules(c, &options.rejected_rules);
    }
    for (index, c) in candidates.iter().enumerate() {
        if c.rejected() {
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
    let mut provenance: BTreeMap<ServicePortKey, PortProvenance> = BTreeMap::new();
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
        let mut sources = Vec::with_capacity(ranked.len());
        let table = RouteTable {
            protocol,
            routes: ranked
                .into_iter()
                .filter_map(|(i, j)| {
                    let route = if uses[i] == 1 {
                        routes[i][j].take()
                    } else {
                        routes[i][j].clone()
                    };
                    // Pushed with its route, so the two lists stay aligned.
                    if route.is_some() {
                        sources.push(RuleRef {
                            route: candidates[i].route.clone(),
                            rule: candidates[i].ranks[j].tie.rule,
                        });
                    }
                    route
                })
                .collect(),
        };
        for &i in &kept {
            uses[i] -= 1;
        }
        let entry = routing.entry(port.clone()).or_default();
        let origin = provenance.entry(port).or_default();
        match audience {
            Audience::Producer => {
                entry.producer = Some(table);
                origin.producer = sources;
            }
            Audience::Consumer(ns) => {
                entry.consumers.insert(ns.clone(), table);
                origin.consumers.insert(ns, sources);
            }
        }
    }

    let statuses = candidates
        .iter()
        .enumerate()
        .map(|(index, c)| status(index, c, &lost, options))
        .collect();
    let grpc_backends = grpc_backends(&routing, services);
    Tables {
        routing,
        statuses,
        routed_protocols,
        provenance,
        grpc_backends,
    }
}

/// The ports that declare no protocol among the backends and mirrors of GRPCRoute tables.
fn grpc_backends(
    routing: &BTreeMap<ServicePortKey, PortRouting>,
    services: &Services,
) -> BTreeSet<ServicePortKey> {
    let tables = routing
        .values()
        .flat_map(|r| r.producer.iter().chain(r.consumers.values()))
        .filter(|t| t.protocol == Protocol::Grpc);
    let mut out = BTreeSet::new();
    for route in tables.flat_map(|t| &t.routes) {
        let backends = match &route.action {
            Action::Forward(forward) => forward.backends.as_slice(),
            _ => &[],
        };
        let targets = backends
            .iter()
            .filter_map(|b| match &b.target {
                BackendTarget::Service(port) => Some(port),
                BackendTarget::Unresolved => None,
            })
            .chain(route.mirrors.iter().map(|m| &m.target));
        for port in targets {
            if services
                .declared
                .get(&(port.service.clone(), port.port))
                .is_none_or(|d| *d == DeclaredProtocol::Unknown)
            {
                out.insert(port.clone());
            }
        }
    }
    out
}

/// Records the rules a receiver refused as violations of those rules, then leaves out the
/// routes of every rule with a violation (the spec's "Dropped Rule" choice for
/// `PartiallyInvalid`: pure, and the same in file and Kubernetes mode).
fn drop_rules(c: &mut Candidate, rejected: &BTreeMap<RuleRef, String>) {
    let from = RuleRef {
        route: c.route.clone(),
        rule: 0,
    };
    let to = RuleRef {
        route: c.route.clone(),
        rule: c.rule_names.len(),
    };
    for (rule, why) in rejected.range(from..to) {
        let at = rule_label(rule.rule, c.rule_names[rule.rule].as_deref());
        c.findings.in_rule(Some(rule.rule));
        c.findings.invalid(format!("{at}: {why}"));
    }
    c.findings.in_rule(None);
    c.dropped = c.findings.invalid_rules();
    if c.dropped.is_empty() {
        return;
    }
    let (ranks, routes) = std::mem::take(&mut c.ranks)
        .into_iter()
        .zip(std::mem::take(&mut c.routes))
        .filter(|(rank, _)| !c.dropped.contains(&rank.tie.rule))
        .unzip();
    c.ranks = ranks;
    c.routes = routes;
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
    rule_names: Vec<Option<String>>,
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
        declared: &lookup.services.declared,
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
        rule_names,
        dropped: BTreeSet::new(),
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
            let accepted = if c.rejected() {
                Condition::new(
                    reasons::ACCEPTED,
                    false,
                    reasons::UNSUPPORTED_VALUE,
                    c.findings
                        .invalid
                        .iter()
                        .map(|i| i.message.as_str())
                        .collect::<Vec<_>>()
                        .join("; "),
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
            let mut conditions = vec![accepted, resolved.clone()];
            // The spec sets PartiallyInvalid only on a route that is accepted with some rules
            // invalid, and only ever as True.
            if !c.dropped.is_empty() && conditions[0].is_true() {
                conditions.push(partially_invalid(c, generation));
            }
            ParentStatus {
                parent_ref: parent_ref.clone(),
                controller_name: options.controller_name.clone(),
                conditions,
            }
        })
        .collect();
    RouteStatus {
        route: c.route.clone(),
        generation,
        parents,
    }
}

/// `PartiallyInvalid=True`, its message naming each dropped rule and why, starting with
/// "Dropped Rule" as the spec requires of that choice.
fn partially_invalid(c: &Candidate, generation: Option<i64>) -> Condition {
    let rules = c
        .dropped
        .iter()
        .map(|&rule| {
            let name = c.rule_names.get(rule).and_then(|n| n.as_deref());
            // The messages start with the rule's label; the list names the rule once.
            let label = rule_label(rule, name).to_string();
            let why = c
                .findings
                .invalid
                .iter()
                .filter(|i| i.rule == Some(rule))
                .map(|i| {
                    i.message
                        .strip_prefix(label.as_str())
                        .and_then(|m| m.strip_prefix(": "))
                        .unwrap_or(&i.message)
                })
                .collect::<Vec<_>>()
                .join(", ");
            match name {
                Some(name) => format!("{rule} ({name}): {why}"),
                None => format!("{rule}: {why}"),
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    Condition::new(
        reasons::PARTIALLY_INVALID,
        true,
        reasons::UNSUPPORTED_VALUE,
        format!("Dropped Rule(s) {rules}"),
        generation,
    )
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
