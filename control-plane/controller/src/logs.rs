//! What the controller logs about each snapshot: diagnostics, route status, a summary.
//!
//! Against the previous snapshot, only what changed is logged again: new diagnostics and
//! routes whose status changed (or appeared).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use lanyard_index::status::ParentStatus;
use lanyard_index::{RouteStatus, SmiOutcome, SmiReport};
use tracing::{error, info, warn};

use crate::diagnostics::{Diagnostic, Severity};
use crate::snapshot::Snapshot;

/// Logs a snapshot; with `previous`, only what changed since.
pub fn log_snapshot(snapshot: &Snapshot, previous: Option<&Snapshot>) {
    let seen: BTreeSet<String> = previous
        .map(|p| p.diagnostics.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    for diagnostic in &snapshot.diagnostics {
        if !seen.contains(&diagnostic.to_string()) {
            log_diagnostic(diagnostic);
        }
    }
    let old_warnings: BTreeSet<&String> = previous
        .map(|p| p.translation.warnings.iter().collect())
        .unwrap_or_default();
    for warning in &snapshot.translation.warnings {
        if !old_warnings.contains(warning) {
            warn!("{warning}");
        }
    }
    for status in &snapshot.translation.statuses {
        let unchanged = previous.is_some_and(|p| p.translation.statuses.contains(status));
        if !unchanged {
            log_route_status(status);
        }
    }
    for report in &snapshot.translation.smi {
        let unchanged = previous.is_some_and(|p| p.translation.smi.contains(report));
        if !unchanged {
            log_smi_report(report);
        }
    }
    let summary = snapshot.summary();
    info!(
        generation = snapshot.generation,
        services = summary.services,
        routes = summary.routes,
        workloads = summary.workloads,
        errors = summary.errors,
        warnings = summary.warnings,
        "translated"
    );
}

fn log_diagnostic(diagnostic: &Diagnostic) {
    let file = diagnostic.file.display();
    let object = diagnostic.object.as_deref();
    let message = &diagnostic.message;
    match diagnostic.severity {
        Severity::Error => error!(%file, object, "{message}"),
        Severity::Warning => warn!(%file, object, "{message}"),
        Severity::Info => info!(%file, object, "{message}"),
    }
}

/// One line per TrafficSplit: applied at info, applied with backends left out and ignored at
/// warning, invalid at error level.
fn log_smi_report(report: &SmiReport) {
    let split = &report.split;
    let service = &report.service;
    let message = &report.message;
    match &report.outcome {
        SmiOutcome::Applied => info!(%split, %service, "TrafficSplit applied: {message}"),
        SmiOutcome::Degraded { reason } => {
            warn!(%split, %service, reason, "TrafficSplit applied with backends left out: {message}")
        }
        SmiOutcome::Ignored { reason } => {
            warn!(%split, %service, reason, "TrafficSplit ignored: {message}")
        }
        SmiOutcome::Invalid { reason } => {
            error!(%split, %service, reason, "TrafficSplit invalid: {message}")
        }
    }
}

/// One line per route: every Service parent with its conditions and their reasons, at
/// warning level when a condition is false.
fn log_route_status(status: &RouteStatus) {
    let healthy = status
        .parents
        .iter()
        .all(|p| p.conditions.iter().all(|c| c.is_true()));
    let line = route_status_line(status);
    if healthy {
        info!("{line}");
    } else {
        warn!("{line}");
    }
}

/// `HTTPRoute ns/r: Service ns/s:80 Accepted=True (Accepted), ResolvedRefs=False
/// (BackendNotFound: ...)`, parents separated by `; `.
pub fn route_status_line(status: &RouteStatus) -> String {
    let mut line = format!("{}:", status.route);
    if status.parents.is_empty() {
        line.push_str(" no Service parent");
    }
    for (i, parent) in status.parents.iter().enumerate() {
        if i > 0 {
            line.push(';');
        }
        let _ = write!(
            line,
            " {}",
            parent_name(parent, &status.route.key.namespace)
        );
        for (j, c) in parent.conditions.iter().enumerate() {
            let sep = if j == 0 { " " } else { ", " };
            let _ = write!(line, "{sep}{}={} ({}", c.type_, c.status, c.reason);
            if !c.is_true() && !c.message.is_empty() {
                let _ = write!(line, ": {}", c.message);
            }
            line.push(')');
        }
    }
    line
}

fn parent_name(parent: &ParentStatus, route_namespace: &str) -> String {
    let r = &parent.parent_ref;
    let kind = r.kind.as_deref().unwrap_or("Gateway");
    let namespace = r.namespace.as_deref().unwrap_or(route_namespace);
    let mut name = format!("{kind} {namespace}/{}", r.name);
    if let Some(port) = r.port {
        let _ = write!(name, ":{port}");
    }
    if let Some(section) = &r.section_name {
        let _ = write!(name, " ({section})");
    }
    name
}

#[cfg(test)]
mod tests {
    use lanyard_index::api::ParentReference;
    use lanyard_index::status::Condition;
    use lanyard_index::{Kind, ObjectKey, ObjectRef};

    use super::*;

    #[test]
    fn a_route_status_line_names_parents_conditions_and_reasons() {
        let status = RouteStatus {
            route: ObjectRef {
                kind: Kind::HttpRoute,
                key: ObjectKey::new("ns", "r"),
            },
            generation: None,
            parents: vec![ParentStatus {
                parent_ref: ParentReference {
                    group: Some(String::new()),
                    kind: Some("Service".into()),
                    name: "reviews".into(),
                    port: Some(9080),
                    ..Default::default()
                },
                controller_name: "c".into(),
                conditions: vec![
                    Condition::new("Accepted", true, "Accepted", "fine", None),
                    Condition::new(
                        "ResolvedRefs",
                        false,
                        "BackendNotFound",
                        "Service ns/gone not found",
                        None,
                    ),
                ],
            }],
        };
        assert_eq!(
            route_status_line(&status),
            "HTTPRoute ns/r: Service ns/reviews:9080 Accepted=True (Accepted), ResolvedRefs=False (BackendNotFound: Service ns/gone not found)"
        );
    }
}
