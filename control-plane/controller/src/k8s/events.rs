//! Kubernetes Events for SMI TrafficSplits, which have no status field.
//!
//! Whenever what became of a TrafficSplit changes (applied, ignored because a Gateway API
//! route or an older split takes precedence, invalid, or applied with backends left out), the
//! replica holding the Lease records an `events.k8s.io/v1` Event regarding the split:
//! `Normal` when applied as written, `Warning` otherwise, with the reason and the translator's message as its note, so that
//! `kubectl describe trafficsplit` and `kubectl get events` show it. The same report is in
//! the controller's log and on the debug endpoint (`/debug/translation`).
//!
//! A report is recorded once per change, not once per snapshot. A replica that starts
//! leading records the current reports again, since it cannot know what the previous leader
//! recorded.
//!
//! When connected proxies reject the configuration of a split in effect (see
//! [`crate::nacks`]), a `Warning` Event with reason [`PROXIES_REJECTED`] names the rejection
//! (proxies, resource, version, a proxy's message); when they accept a later version, a
//! `Normal` Event with reason [`PROXIES_ACCEPTED`]. These follow the damped rejections, so
//! they are rate-limited and do not flap, and are recorded once per change as well.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use lanyard_index::api::TrafficSplit;
use lanyard_index::api::smi::SPLIT_GROUP;
use lanyard_index::{ObjectRef, SmiOutcome, SmiReport};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::lease::{LeaderWork, while_leading};
use crate::nacks::{Rejection, Rejections};
use crate::snapshot::Snapshot;

/// The Event `action` of every report.
pub const ACTION: &str = "Translate";
/// The Event `reason` of an applied split (other outcomes carry the translator's reason).
pub const APPLIED: &str = "Applied";
/// The Event `reason` when proxies reject a split's configuration.
pub const PROXIES_REJECTED: &str = "ProxiesRejected";
/// The Event `reason` when they accept a later version.
pub const PROXIES_ACCEPTED: &str = "ProxiesAccepted";
/// Events notes are limited to 1 kB by the API server.
const NOTE_LIMIT: usize = 1024;

/// The Event for a report.
pub fn event_for(report: &SmiReport) -> Event {
    let (type_, reason) = match &report.outcome {
        SmiOutcome::Applied => (EventType::Normal, APPLIED.to_string()),
        SmiOutcome::Degraded { reason }
        | SmiOutcome::Ignored { reason }
        | SmiOutcome::Invalid { reason } => (EventType::Warning, reason.clone()),
    };
    let outcome = match &report.outcome {
        SmiOutcome::Applied => "applied",
        SmiOutcome::Degraded { .. } => "applied without some backends",
        SmiOutcome::Ignored { .. } => "ignored",
        SmiOutcome::Invalid { .. } => "invalid",
    };
    let note = truncate(
        format!(
            "{outcome} on Service {}: {}",
            report.service, report.message
        ),
        NOTE_LIMIT,
    );
    Event {
        type_,
        reason,
        note: Some(note),
        action: ACTION.to_string(),
        secondary: None,
    }
}

/// The Event for what proxies reject of a split's configuration (`None`: they accept it
/// again).
pub fn rejection_event(rejection: Option<&Rejection>) -> Event {
    match rejection {
        Some(rejection) => Event {
            type_: EventType::Warning,
            reason: PROXIES_REJECTED.to_string(),
            note: Some(truncate(rejection.summary(), NOTE_LIMIT)),
            action: ACTION.to_string(),
            secondary: None,
        },
        None => Event {
            type_: EventType::Normal,
            reason: PROXIES_ACCEPTED.to_string(),
            note: Some("proxies accept the split's configuration again".to_string()),
            action: ACTION.to_string(),
            secondary: None,
        },
    }
}

/// The reference to a TrafficSplit as read (the version it was read at, its uid).
pub fn reference(key: &ObjectRef, split: Option<&TrafficSplit>) -> ObjectReference {
    let version = split
        .map(|s| s.version.as_str())
        .filter(|v| !v.is_empty())
        .unwrap_or("v1alpha4");
    ObjectReference {
        api_version: Some(format!("{SPLIT_GROUP}/{version}")),
        kind: Some("TrafficSplit".to_string()),
        namespace: Some(key.key.namespace.clone()),
        name: Some(key.key.name.clone()),
        uid: split.and_then(|s| s.metadata.uid.clone()),
        resource_version: split.and_then(|s| s.metadata.resource_version.clone()),
        ..Default::default()
    }
}

fn truncate(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit - 3;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// While `leader` says this replica leads, records an Event for every TrafficSplit report
/// that changed; until the snapshots or the election end.
pub async fn run(
    client: Client,
    reporter: Reporter,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    rejections: watch::Receiver<Arc<Rejections>>,
    leader: watch::Receiver<bool>,
) {
    let recorder = EventRecorder {
        recorder: Recorder::new(client, reporter),
        recorded: BTreeMap::new(),
        rejections,
        rejected: BTreeMap::new(),
    };
    while_leading(recorder, snapshots, leader).await;
}

/// What was recorded, per TrafficSplit.
struct EventRecorder {
    recorder: Recorder,
    recorded: BTreeMap<ObjectRef, SmiReport>,
    rejections: watch::Receiver<Arc<Rejections>>,
    /// The rejection last recorded per split (absent: none, or accepted again).
    rejected: BTreeMap<ObjectRef, Rejection>,
}

impl LeaderWork for EventRecorder {
    async fn handle(&mut self, snapshot: &Arc<Snapshot>) -> bool {
        let rejections = self.rejections.borrow_and_update().clone();
        let reports = record_all(&self.recorder, snapshot, &mut self.recorded).await;
        let rejected =
            record_rejections(&self.recorder, snapshot, &rejections, &mut self.rejected).await;
        reports && rejected
    }

    fn forget(&mut self) {
        self.recorded.clear();
        self.rejected.clear();
    }

    async fn woken(&mut self) {
        if self.rejections.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Records an Event for every split whose rejection changed since the last one recorded;
/// `false` if an Event could not be written.
async fn record_rejections(
    recorder: &Recorder,
    snapshot: &Snapshot,
    rejections: &Rejections,
    recorded: &mut BTreeMap<ObjectRef, Rejection>,
) -> bool {
    let splits = &snapshot.translation.smi;
    recorded.retain(|split, _| splits.iter().any(|r| &r.split == split));
    let mut ok = true;
    for report in splits {
        let now = rejections.get(&report.split);
        if recorded.get(&report.split) == now {
            continue;
        }
        let split = snapshot.objects.traffic_splits.get(&report.split.key);
        let regarding = reference(&report.split, split);
        match recorder.publish(&rejection_event(now), &regarding).await {
            Ok(()) => {
                debug!(split = %report.split, rejected = now.is_some(), "rejection event recorded");
                match now {
                    Some(r) => recorded.insert(report.split.clone(), r.clone()),
                    None => recorded.remove(&report.split),
                };
            }
            Err(e) => {
                warn!(split = %report.split, error = %e, "cannot record the TrafficSplit's rejection event, will retry");
                ok = false;
            }
        }
    }
    ok
}

/// Records the reports of a snapshot that differ from what was recorded; `false` if an
/// Event could not be written.
async fn record_all(
    recorder: &Recorder,
    snapshot: &Snapshot,
    recorded: &mut BTreeMap<ObjectRef, SmiReport>,
) -> bool {
    let reports = &snapshot.translation.smi;
    recorded.retain(|split, _| reports.iter().any(|r| &r.split == split));
    let mut ok = true;
    for report in reports {
        if recorded.get(&report.split) == Some(report) {
            continue;
        }
        let split = snapshot.objects.traffic_splits.get(&report.split.key);
        let regarding = reference(&report.split, split);
        match recorder.publish(&event_for(report), &regarding).await {
            Ok(()) => {
                debug!(split = %report.split, "event recorded");
                recorded.insert(report.split.clone(), report.clone());
            }
            Err(e) => {
                warn!(split = %report.split, error = %e, "cannot record the TrafficSplit's event, will retry");
                ok = false;
            }
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use lanyard_index::{Kind, ObjectKey};

    use super::*;

    fn mk_report(outcome: SmiOutcome, message: &str) -> SmiReport {
        SmiReport {
            split: ObjectRef {
                kind: Kind::TrafficSplit,
                key: ObjectKey::new("shop", "canary"),
            },
            service: "shop/web".to_string(),
            outcome,
            message: message.to_string(),
        }
    }

    #[test]
    fn applied_is_normal_and_the_rest_are_warnings_with_their_reason() {
        let applied = event_for(&mk_report(SmiOutcome::Applied, "90/10"));
        assert_eq!(applied.type_, EventType::Normal);
        assert_eq!(applied.reason, APPLIED);
        assert_eq!(applied.action, ACTION);
        assert_eq!(
            applied.note.as_deref(),
            Some("applied on Service shop/web: 90/10")
        );

        let ignored = event_for(&mk_report(
            SmiOutcome::Ignored {
                reason: "GatewayAPIRoute".into(),
            },
            "HTTPRoute shop/web wins",
        ));
        assert_eq!(ignored.type_, EventType::Warning);
        assert_eq!(ignored.reason, "GatewayAPIRoute");

        let degraded = event_for(&mk_report(
            SmiOutcome::Degraded {
                reason: "BackendNotFound".into(),
            },
            "web-v1 100%; backend Service shop/gone not found, left out",
        ));
        assert_eq!(degraded.type_, EventType::Warning);
        assert_eq!(degraded.reason, "BackendNotFound");
        assert_eq!(
            degraded.note.as_deref(),
            Some(
                "applied without some backends on Service shop/web: web-v1 100%; backend Service shop/gone not found, left out"
            )
        );

        let long = event_for(&mk_report(
            SmiOutcome::Invalid {
                reason: "InvalidWeight".into(),
            },
            &"é".repeat(2000),
        ));
        let note = long.note.unwrap();
        assert!(
            note.len() <= NOTE_LIMIT && note.ends_with("..."),
            "{}",
            note.len()
        );
    }

    #[test]
    fn a_rejection_is_a_warning_naming_it_and_acceptance_is_normal() {
        let rejection = Rejection {
            proxies: 2,
            type_: "ClusterLoadAssignment".into(),
            resource: "outbound|80||web.shop.svc.cluster.local".into(),
            version: "v9".into(),
            others: 0,
            message: "bad".into(),
            proxy: "a".into(),
        };
        let event = rejection_event(Some(&rejection));
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(event.reason, PROXIES_REJECTED);
        assert_eq!(
            event.note.as_deref(),
            Some(
                "2 proxies rejected ClusterLoadAssignment outbound|80||web.shop.svc.cluster.local (version v9): bad"
            )
        );
        let event = rejection_event(None);
        assert_eq!(event.type_, EventType::Normal);
        assert_eq!(event.reason, PROXIES_ACCEPTED);
    }

    #[test]
    fn the_reference_names_the_version_read_and_the_uid() {
        let key = mk_report(SmiOutcome::Applied, "").split;
        let mut split = TrafficSplit {
            version: "v1alpha2".into(),
            ..Default::default()
        };
        split.metadata.uid = Some("u-1".into());
        let reference = reference(&key, Some(&split));
        assert_eq!(
            reference.api_version.as_deref(),
            Some("split.smi-spec.io/v1alpha2")
        );
        assert_eq!(reference.uid.as_deref(), Some("u-1"));
        assert_eq!(reference.name.as_deref(), Some("canary"));
        assert_eq!(
            super::reference(&key, None).api_version.as_deref(),
            Some("split.smi-spec.io/v1alpha4")
        );
    }
}
