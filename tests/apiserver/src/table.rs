//! `meta.k8s.io/v1` `Table` answers for kubectl's human-readable `get`: the columns `Name` and
//! `Age` for every kind (a real server adds per-kind columns), each row with the object itself.

use axum::http::{HeaderMap, header};
use serde_json::{Value, json};

use crate::object::now_rfc3339;
use crate::resources::ResourceType;

/// Whether the client asked for a Table (`Accept: application/json;as=Table;g=meta.k8s.io;...`).
pub fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',')
                .next()
                .is_some_and(|first| first.contains("as=Table"))
        })
}

pub fn build(r: &ResourceType, objects: &[Value], rv: u64) -> Value {
    let now = now_rfc3339();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let name = o.pointer("/metadata/name").cloned().unwrap_or(json!(""));
            let created = o
                .pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .unwrap_or(&now);
            let mut object = o.clone();
            object["apiVersion"] = json!(r.api_version());
            json!({"cells": [name, age(created, &now)], "object": object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": [
            {"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0},
            {"name": "Age", "type": "string", "format": "", "description": "Time since creation", "priority": 0},
        ],
        "rows": rows,
    })
}

/// A short age such as `5s`, `3m`, `2h`, `4d` between two RFC 3339 timestamps.
fn age(from: &str, to: &str) -> String {
    let secs = seconds(to).saturating_sub(seconds(from));
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SSZ` (0 if unparsable).
fn seconds(ts: &str) -> u64 {
    let num = |a: usize, b: usize| {
        ts.get(a..b)
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let (y, m, d) = (num(0, 4), num(5, 7), num(8, 10));
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + num(11, 13) * 3600 + num(14, 16) * 60 + num(17, 19);
    u64::try_from(secs).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_short() {
        assert_eq!(seconds("2023-11-14T22:13:20Z"), 1_700_000_000);
        assert_eq!(age("2023-11-14T22:13:20Z", "2023-11-14T22:13:25Z"), "5s");
        assert_eq!(age("2023-11-14T22:13:20Z", "2023-11-15T01:13:20Z"), "3h");
    }
}
