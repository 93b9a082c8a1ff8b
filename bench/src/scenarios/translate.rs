//! Full translation: objects → model (`lanyard_index::translate`) → Envoy resources
//! (`lanyard_xds::translate`) → encoded and versioned (`MeshSnapshot::build`, what the
//! server does before serving). Floor: protobuf encoding of the same final resources into
//! `Any`s, nothing else.

use std::time::Instant;

use envoy_types::pb::google::protobuf::Any;
use lanyard_model::NamespaceName;
use lanyard_xds::{MeshSnapshot, ProxyRef, ResourceType};
use prost::{Message, Name};
use serde_json::{Value, json};

use super::Config;
use crate::mesh::{self, Shape};
use crate::real::translate as real_translate;
use crate::report::{self, Table, f2, ms, ratio};

fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

/// Runs the scenario.
pub fn run(config: &Config) -> anyhow::Result<Value> {
    let sizes = config.sizes(&[50], &[1000, 5000, 10000]);
    let reps = if config.smoke { 1 } else { 3 };
    let mut table = Table::new(
        "translate: objects → model → xDS resources encoded (best of runs)",
        &[
            "services",
            "index ms",
            "xds ms",
            "check ms",
            "encode+version ms",
            "total ms",
            "floor ms",
            "ratio",
            "CDS MB",
            "EDS MB",
            "LDS MB",
            "RDS MB",
            "objects RSS MB",
            "peak RSS MB",
            "change: translate ms",
            "check since ms",
            "build ms",
            "build reusing ms",
            "reused %",
        ],
    );
    let mut results = Vec::new();
    let pid = report::self_pid();
    // Warm-up: the first canonical hash builds the descriptor pool.
    let warm = real_translate(&mesh::objects(&Shape::new(4)));
    MeshSnapshot::build(0, Instant::now(), warm)?;
    for &services in &sizes {
        let shape = Shape::new(services);
        let mut objects = mesh::objects(&shape);
        let rss_objects = report::rss_kib(pid);
        let mut best: Option<[f64; 6]> = None;
        let mut bytes = [0usize; 4];
        let mut distinct = [0usize; 4];
        let mut peak = 0;
        for _ in 0..reps {
            report::reset_peak_rss();
            let start = Instant::now();
            let translation =
                lanyard_index::translate(&objects, &lanyard_index::Options::default());
            let indexed = start.elapsed();
            let resources =
                lanyard_xds::translate(&translation.model, &lanyard_xds::XdsOptions::default());
            let translated = start.elapsed();
            // Validation before publishing, timed on its own (the controller runs it between
            // translating and publishing).
            let check_start = Instant::now();
            let findings = resources.check();
            let check = check_start.elapsed();
            if !findings.is_empty() {
                anyhow::bail!(
                    "the synthetic mesh has resources a proxy would refuse: {findings:?}"
                );
            }
            // The floor's input: the final resources of a client outside the consumer
            // namespace (every resource but the consumer route variant).
            let all = resources.for_proxy(&ProxyRef::envoy(NamespaceName::new("ns-0"), None));
            let before_build = start.elapsed();
            let snapshot = MeshSnapshot::build(1, Instant::now(), resources)?;
            let built = start.elapsed() - before_build + translated;
            peak = peak.max(report::peak_rss_kib(pid));
            let floor_start = Instant::now();
            let mut sizes = [0usize; 4];
            for c in &all.clusters {
                sizes[0] += any(c.as_ref()).encoded_len();
            }
            for e in &all.endpoints {
                sizes[1] += any(e.as_ref()).encoded_len();
            }
            for l in &all.listeners {
                sizes[2] += any(l.as_ref()).encoded_len();
            }
            for r in &all.routes {
                sizes[3] += any(r.as_ref()).encoded_len();
            }
            let floor = floor_start.elapsed();
            bytes = sizes;
            distinct = ResourceType::ALL.map(|t| snapshot.distinct_count(t));
            let run = [
                ms(indexed),
                ms(translated - indexed),
                ms(built - translated),
                ms(built),
                ms(floor),
                ms(check),
            ];
            if best.is_none_or(|b| run[3] < b[3]) {
                best = Some(run);
            }
            drop(snapshot);
        }
        let [index_ms, xds_ms, encode_ms, total_ms, floor_ms, check_ms] =
            best.expect("at least one run");
        let [
            change_translate_ms,
            change_check_ms,
            change_full_ms,
            change_reusing_ms,
            reused,
        ] = change(&mut objects, &shape)?;
        let mb = |b: usize| b as f64 / 1e6;
        table.row(vec![
            services.to_string(),
            f2(index_ms),
            f2(xds_ms),
            f2(check_ms),
            f2(encode_ms),
            f2(total_ms),
            f2(floor_ms),
            ratio(total_ms, floor_ms),
            f2(mb(bytes[0])),
            f2(mb(bytes[1])),
            f2(mb(bytes[2])),
            f2(mb(bytes[3])),
            f2(rss_objects as f64 / 1024.0),
            f2(peak as f64 / 1024.0),
            f2(change_translate_ms),
            f2(change_check_ms),
            f2(change_full_ms),
            f2(change_reusing_ms),
            f2(reused),
        ]);
        results.push(json!({
            "services": services,
            "namespaces": shape.namespaces,
            "rules_per_route": mesh::RULES,
            "runs": reps,
            "index_ms": report::round(index_ms),
            "xds_ms": report::round(xds_ms),
            "check_ms": report::round(check_ms),
            "encode_version_ms": report::round(encode_ms),
            "total_ms": report::round(total_ms),
            "floor_encode_ms": report::round(floor_ms),
            "ratio": report::round(total_ms / floor_ms),
            "bytes": {"CDS": bytes[0], "EDS": bytes[1], "LDS": bytes[2], "RDS": bytes[3]},
            "distinct_resources": {"CDS": distinct[0], "EDS": distinct[1], "LDS": distinct[2], "RDS": distinct[3]},
            "rss_with_objects_kib": rss_objects,
            "peak_rss_kib": peak,
            "change_translate_ms": report::round(change_translate_ms),
            "change_check_ms": report::round(change_check_ms),
            "change_build_ms": report::round(change_full_ms),
            "change_build_reusing_ms": report::round(change_reusing_ms),
            "change_reused_percent": report::round(reused),
        }));
    }
    let json =
        json!({"scenario": "translate", "target": "total ≤ 4× floor at 10k", "results": results});
    report::publish(&config.out, "translate", &table, &json)?;
    Ok(json)
}

/// One endpoint event, then objects → model → resources again (`translate` ms), and the
/// snapshot built with `MeshSnapshot::build` (everything encoded and hashed: `full` ms) and
/// with `MeshSnapshot::build_reusing` the snapshot before the change (`reusing` ms, and the
/// share of a client's resources reused as they were); best of 3 each.
fn change(objects: &mut lanyard_index::Objects, shape: &Shape) -> anyhow::Result<[f64; 5]> {
    let resources = |objects: &lanyard_index::Objects| {
        let translation = lanyard_index::translate(objects, &lanyard_index::Options::default());
        lanyard_xds::translate(&translation.model, &lanyard_xds::XdsOptions::default())
    };
    let before = MeshSnapshot::build(1, Instant::now(), resources(objects))?;
    mesh::endpoint_event(objects, shape, 0, 1);
    let objects = &*objects;
    let [mut translate, mut check, mut full, mut reusing] = [f64::MAX; 4];
    let mut reused = 0.0;
    for _ in 0..3 {
        let start = Instant::now();
        let mesh = resources(objects);
        translate = translate.min(ms(start.elapsed()));
        let again = resources(objects);
        let start = Instant::now();
        let findings = mesh.check_since(Some(before.mesh()));
        check = check.min(ms(start.elapsed()));
        anyhow::ensure!(
            findings.is_empty(),
            "refused after the change: {findings:?}"
        );
        let start = Instant::now();
        drop(MeshSnapshot::build(2, Instant::now(), mesh)?);
        full = full.min(ms(start.elapsed()));
        let start = Instant::now();
        let after = MeshSnapshot::build_reusing(Some(&before), 2, Instant::now(), again)?;
        reusing = reusing.min(ms(start.elapsed()));
        let client = ProxyRef::envoy(NamespaceName::new("ns-0"), None);
        let (mut same, mut all) = (0, 0);
        for ty in ResourceType::ALL {
            let old = before.view(ty, &client);
            for r in after.view(ty, &client).resources().iter() {
                all += 1;
                same += usize::from(
                    old.get(r.name())
                        .is_some_and(|o| std::sync::Arc::ptr_eq(o, r)),
                );
            }
        }
        reused = 100.0 * same as f64 / all as f64;
    }
    Ok([translate, check, full, reusing, reused])
}
