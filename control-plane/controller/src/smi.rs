//! Keeping the last valid version of a TrafficSplit in effect when an edit breaks it.
//!
//! The translator is pure: an invalid TrafficSplit (a negative weight, every weight 0, a
//! match on a group that does not exist...) is reported `Invalid` and not applied, so its
//! root Service would fall back to plain pass-through. A running controller does better:
//! it remembers the last version of each split that was valid, and when the current
//! version is invalid, translates again with the remembered one in its place. The split is
//! still reported `Invalid` (with why), and the report says which version stays in effect.
//!
//! The memory is per split object: deleting the split forgets it, and a split recreated
//! under the same name with a new `uid` does not inherit it. Only the TrafficSplit itself is
//! restored: if what the remembered version needs is gone too (its HTTPRouteGroup, say), it
//! is invalid as well, and the root falls back to pass-through.

use std::collections::BTreeMap;

use lanyard_index::api::TrafficSplit;
use lanyard_index::{ObjectKey, Objects, Options, SmiOutcome, Translation};

/// The last valid version of each TrafficSplit, by namespace and name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LastValidSplits(BTreeMap<ObjectKey, TrafficSplit>);

impl LastValidSplits {
    /// The remembered version of a split.
    pub fn get(&self, key: &ObjectKey) -> Option<&TrafficSplit> {
        self.0.get(key)
    }

    /// How many splits are remembered.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no split is remembered.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Translates `objects`, putting the remembered version of every invalid TrafficSplit in its
/// place, and returns the translation with the memory to keep for the next one.
pub fn translate(
    objects: &Objects,
    options: &Options,
    last_valid: &LastValidSplits,
) -> (Translation, LastValidSplits) {
    let first = lanyard_index::translate(objects, options);
    let restorable: BTreeMap<ObjectKey, &TrafficSplit> = first
        .smi
        .iter()
        .filter(|r| matches!(r.outcome, SmiOutcome::Invalid { .. }))
        .filter_map(|r| {
            let key = &r.split.key;
            let kept = last_valid.get(key)?;
            let now = objects.traffic_splits.get(key)?;
            same_object(kept, now).then(|| (key.clone(), kept))
        })
        .collect();

    let translation = if restorable.is_empty() {
        first
    } else {
        let mut patched = objects.clone();
        for (key, kept) in &restorable {
            patched.traffic_splits.insert(key.clone(), (*kept).clone());
        }
        let mut second = lanyard_index::translate(&patched, options);
        for report in &mut second.smi {
            let Some(kept) = restorable.get(&report.split.key) else {
                continue;
            };
            let Some(why) = first.smi.iter().find(|r| r.split == report.split) else {
                continue;
            };
            let version = kept
                .metadata
                .generation
                .map(|g| format!(" (generation {g})"))
                .unwrap_or_default();
            let effect = match &report.outcome {
                SmiOutcome::Applied => "is applied".to_string(),
                SmiOutcome::Degraded { reason } => {
                    format!("is applied with backends left out ({reason})")
                }
                SmiOutcome::Ignored { reason } => format!("is ignored ({reason})"),
                SmiOutcome::Invalid { reason } => format!("is invalid too ({reason})"),
            };
            report.message = format!(
                "{} The last valid version{version} stays in effect and {effect}: {}",
                why.message, report.message
            );
            report.outcome = why.outcome.clone();
        }
        second
    };

    let mut next = BTreeMap::new();
    for report in &translation.smi {
        let key = &report.split.key;
        if let Some(kept) = restorable.get(key) {
            next.insert(key.clone(), (*kept).clone());
        } else if !matches!(report.outcome, SmiOutcome::Invalid { .. })
            && let Some(split) = objects.traffic_splits.get(key)
        {
            next.insert(key.clone(), split.clone());
        }
    }
    (translation, LastValidSplits(next))
}

/// Whether two versions are of the same object (not one deleted and recreated).
fn same_object(kept: &TrafficSplit, now: &TrafficSplit) -> bool {
    match (&kept.metadata.uid, &now.metadata.uid) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use lanyard_index::{Parsed, parse_value};
    use serde::Deserialize;

    use super::*;

    fn objects(yaml: &str) -> Objects {
        let mut objects = Objects::default();
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let value = serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap()).unwrap();
            for parsed in parse_value(value, "test") {
                if let Ok(Parsed::Object { object, .. }) = parsed {
                    objects.apply(*object);
                }
            }
        }
        objects
    }

    const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.0.0.1, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-v1, namespace: shop}
spec: {clusterIP: 10.0.0.2, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: shop}
spec: {clusterIP: 10.0.0.3, ports: [{name: http, port: 80}]}
"#;

    fn split(uid: &str, v1: &str, v2: &str) -> String {
        format!(
            r#"
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {{name: canary, namespace: shop, uid: {uid}, generation: 1}}
spec:
  service: web
  backends: [{{service: web-v1, weight: {v1}}}, {{service: web-v2, weight: {v2}}}]
"#
        )
    }

    fn with(split: &str) -> Objects {
        objects(&format!("{SERVICES}---{split}"))
    }

    fn weights(translation: &Translation) -> Vec<u32> {
        let routing = translation.model.routing.values().next().expect("routing");
        let table = routing.producer.as_ref().expect("a producer table");
        match &table.routes[0].action {
            lanyard_model::Action::Forward(forward) => {
                forward.backends.iter().map(|b| b.weight).collect()
            }
            other => panic!("not a forward: {other:?}"),
        }
    }

    #[test]
    fn an_invalid_edit_keeps_the_last_valid_split_in_effect() {
        let options = Options::default();
        let (good, memory) = translate(
            &with(&split("a", "90", "10")),
            &options,
            &Default::default(),
        );
        assert_eq!(good.smi[0].outcome, SmiOutcome::Applied);
        assert_eq!(weights(&good), vec![90, 10]);
        assert_eq!(memory.len(), 1);

        let broken = with(&split("a", "-5", "10"));
        let (kept, memory) = translate(&broken, &options, &memory);
        let report = &kept.smi[0];
        assert!(
            matches!(report.outcome, SmiOutcome::Invalid { .. }),
            "{report:?}"
        );
        assert!(report.message.contains("negative"), "{}", report.message);
        assert!(
            report
                .message
                .contains("last valid version (generation 1) stays in effect and is applied"),
            "{}",
            report.message
        );
        assert_eq!(weights(&kept), vec![90, 10], "the last valid weights stay");
        assert_eq!(memory.len(), 1, "the valid version is still remembered");

        // Without memory (lanyardctl, a fresh start) the broken split is not applied.
        let (fresh, _) = translate(&broken, &options, &Default::default());
        assert!(fresh.model.routing.values().all(|r| r.producer.is_none()));

        // Fixed again: the new version is applied and remembered.
        let (fixed, memory) = translate(&with(&split("a", "50", "50")), &options, &memory);
        assert_eq!(weights(&fixed), vec![50, 50]);
        assert_eq!(
            memory
                .get(&ObjectKey::new("shop", "canary"))
                .unwrap()
                .spec
                .backends[0]
                .weight,
            serde_json::json!(50)
        );
    }

    #[test]
    fn a_split_applied_without_a_missing_backend_is_remembered_as_valid() {
        let options = Options::default();
        let (degraded, memory) = translate(
            &with(&split("a", "90", "10").replace("web-v2", "web-v3")),
            &options,
            &Default::default(),
        );
        assert!(
            matches!(degraded.smi[0].outcome, SmiOutcome::Degraded { .. }),
            "{:?}",
            degraded.smi[0]
        );
        assert_eq!(weights(&degraded), vec![90]);
        assert_eq!(memory.len(), 1);
        // An invalid edit then falls back to it, still without the missing backend.
        let (kept, _) = translate(&with(&split("a", "-5", "10")), &options, &memory);
        assert!(
            kept.smi[0].message.contains(
                "stays in effect and is applied with backends left out (BackendNotFound)"
            ),
            "{}",
            kept.smi[0].message
        );
        assert_eq!(weights(&kept), vec![90]);
    }

    #[test]
    fn a_recreated_or_deleted_split_does_not_inherit_the_memory() {
        let options = Options::default();
        let (_, memory) = translate(
            &with(&split("a", "90", "10")),
            &options,
            &Default::default(),
        );
        let (recreated, _) = translate(&with(&split("b", "-5", "10")), &options, &memory);
        assert!(
            recreated
                .model
                .routing
                .values()
                .all(|r| r.producer.is_none())
        );

        let (_, forgotten) = translate(&objects(SERVICES), &options, &memory);
        assert!(forgotten.is_empty());
    }
}
