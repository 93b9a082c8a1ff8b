//! Timeouts, retries and request mirroring of a forwarding route.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::route::v3::{
    RetryPolicy, RouteAction,
    retry_policy::RetryBackOff,
    route_action::{MaxStreamDuration, RequestMirrorPolicy},
};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
use lanyard_model::{Mirror, Retry, Timeouts};

use super::RouteContext;
use crate::protobuf::{duration, u32_value};

/// Retry conditions: connection-level failures always, listed status codes when any.
const RETRY_ON: &str = "connect-failure,refused-stream,reset";

/// Sets `timeout`, `max_stream_duration` and `retry_policy`.
///
/// - `timeout` is the request timeout, or 0s (disabled, like Istio) when there is none.
///   `max_stream_duration` carries the same value when a timeout is configured, because that
///   is the field proxyless gRPC reads.
/// - With retries, `backend_request` is the retry policy's `per_try_timeout`.
/// - Without retries (no `Retry`, or zero attempts) there is only one attempt, so
///   `backend_request` bounds the whole request: it becomes the route timeout (the smaller of
///   the two when both are set) and no retry policy is written. A retry policy with
///   `num_retries: 0` would mean the same to Envoy, but proxyless gRPC rejects the whole
///   RouteConfiguration when it sees one.
pub fn apply_timeouts_and_retry(
    action: &mut RouteAction,
    timeouts: &Timeouts,
    retry: Option<&Retry>,
) {
    let retry = retry.filter(|r| r.attempts > 0);
    let per_try = timeouts.backend_request.filter(|d| !d.is_zero());
    let timeout = match (retry, per_try) {
        (None, Some(per_try)) => Some(match timeouts.request {
            Some(request) if !request.is_zero() => request.min(per_try),
            _ => per_try,
        }),
        _ => timeouts.request,
    };
    action.timeout = Some(duration(timeout.unwrap_or(Duration::ZERO)));
    action.max_stream_duration = timeout.map(|t| MaxStreamDuration {
        max_stream_duration: Some(duration(t)),
        ..Default::default()
    });
    action.retry_policy = retry.map(|r| retry_policy(r, per_try));
}

/// HTTP status codes a gRPC client reads as `UNAVAILABLE`, the one status of those a retry
/// policy can name that they map to (gRPC: doc/http-grpc-status-mapping.md). GEP-1731 retry
/// codes are HTTP status codes; gRPC calls fail with gRPC statuses, which both Envoy and
/// proxyless gRPC retry only when `retry_on` names them.
// gRPC: src/core/xds/grpc/xds_route_config_parser.cc (RetryPolicyParse)
const UNAVAILABLE_CODES: [u16; 4] = [429, 502, 503, 504];

fn retry_policy(retry: &Retry, per_try: Option<Duration>) -> RetryPolicy {
    let mut retry_on = RETRY_ON.to_string();
    if !retry.codes.is_empty() {
        retry_on.push_str(",retriable-status-codes");
    }
    if retry.codes.iter().any(|c| UNAVAILABLE_CODES.contains(c)) {
        retry_on.push_str(",unavailable");
    }
    RetryPolicy {
        retry_on,
        num_retries: Some(u32_value(retry.attempts)),
        per_try_timeout: per_try.map(duration),
        retriable_status_codes: retry.codes.iter().map(|&c| u32::from(c)).collect(),
        // Envoy requires a base interval above zero: a zero back-off keeps Envoy's default.
        retry_back_off: retry
            .backoff
            .filter(|b| !b.is_zero())
            .map(|b| RetryBackOff {
                base_interval: Some(duration(b)),
                max_interval: None,
            }),
        ..Default::default()
    }
}

/// One mirror policy per mirror whose target is a Service port of the mesh, with a runtime
/// fraction (per million) unless everything is mirrored. Mirrors of 0 % are dropped.
pub fn mirror_policies(mirrors: &[Mirror], ctx: &RouteContext<'_>) -> Vec<RequestMirrorPolicy> {
    mirrors
        .iter()
        .filter(|m| m.percent > 0.0)
        .filter_map(|m| {
            let cluster = ctx.cluster_for(&m.target)?;
            let runtime_fraction = (m.percent < 100.0).then(|| RuntimeFractionalPercent {
                default_value: Some(FractionalPercent {
                    // percent is in (0, 100): the product fits in u32.
                    numerator: (m.percent * 10_000.0).round() as u32,
                    denominator: DenominatorType::Million as i32,
                }),
                runtime_key: String::new(),
            });
            Some(RequestMirrorPolicy {
                cluster,
                runtime_fraction,
                ..Default::default()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{mk_model, mk_service, spk};
    use lanyard_model::Protocol;

    fn applied(timeouts: Timeouts, retry: Option<Retry>) -> RouteAction {
        let mut action = RouteAction::default();
        apply_timeouts_and_retry(&mut action, &timeouts, retry.as_ref());
        action
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn no_timeout_means_disabled() {
        let action = applied(Timeouts::default(), None);
        assert_eq!(action.timeout, Some(duration(Duration::ZERO)));
        assert_eq!(action.max_stream_duration, None);
        assert_eq!(action.retry_policy, None);
    }

    #[test]
    fn request_timeout_also_sets_max_stream_duration() {
        let action = applied(
            Timeouts {
                request: Some(secs(5)),
                backend_request: None,
            },
            None,
        );
        assert_eq!(action.timeout, Some(duration(secs(5))));
        assert_eq!(
            action.max_stream_duration.unwrap().max_stream_duration,
            Some(duration(secs(5)))
        );
    }

    #[test]
    fn retry_policy_with_codes_backoff_and_per_try_timeout() {
        let action = applied(
            Timeouts {
                request: Some(secs(10)),
                backend_request: Some(secs(2)),
            },
            Some(Retry {
                codes: vec![503, 504],
                attempts: 3,
                backoff: Some(Duration::from_millis(100)),
            }),
        );
        assert_eq!(action.timeout, Some(duration(secs(10))));
        let policy = action.retry_policy.unwrap();
        assert_eq!(
            policy.retry_on,
            "connect-failure,refused-stream,reset,retriable-status-codes,unavailable"
        );
        assert_eq!(policy.retriable_status_codes, [503, 504]);
        assert_eq!(policy.num_retries, Some(u32_value(3)));
        assert_eq!(policy.per_try_timeout, Some(duration(secs(2))));
        assert_eq!(
            policy.retry_back_off.unwrap().base_interval,
            Some(duration(Duration::from_millis(100)))
        );
    }

    #[test]
    fn retry_without_codes_or_backoff() {
        let action = applied(
            Timeouts::default(),
            Some(Retry {
                codes: vec![],
                attempts: 2,
                backoff: None,
            }),
        );
        let policy = action.retry_policy.unwrap();
        assert_eq!(policy.retry_on, "connect-failure,refused-stream,reset");
        assert_eq!(policy.retry_back_off, None);
        assert_eq!(policy.per_try_timeout, None);
    }

    #[test]
    fn only_codes_grpc_reads_as_unavailable_retry_grpc_calls() {
        let policy = |codes: Vec<u16>| {
            applied(
                Timeouts::default(),
                Some(Retry {
                    codes,
                    attempts: 1,
                    backoff: None,
                }),
            )
            .retry_policy
            .unwrap()
            .retry_on
        };
        for code in [429, 502, 503, 504] {
            assert!(policy(vec![500, code]).ends_with(",unavailable"), "{code}");
        }
        assert_eq!(
            policy(vec![500, 501]),
            "connect-failure,refused-stream,reset,retriable-status-codes"
        );
    }

    #[test]
    fn backend_timeout_without_retries_bounds_the_single_attempt() {
        let only_backend = applied(
            Timeouts {
                request: None,
                backend_request: Some(secs(3)),
            },
            None,
        );
        assert_eq!(only_backend.timeout, Some(duration(secs(3))));
        assert_eq!(only_backend.retry_policy, None);
        assert!(only_backend.max_stream_duration.is_some());

        let both = applied(
            Timeouts {
                request: Some(secs(2)),
                backend_request: Some(secs(3)),
            },
            Some(Retry {
                codes: vec![],
                attempts: 0,
                backoff: None,
            }),
        );
        assert_eq!(both.timeout, Some(duration(secs(2))));
        assert_eq!(both.retry_policy, None);
    }

    #[test]
    fn mirrors_with_fractions() {
        let model = mk_model(
            vec![mk_service(
                "a",
                "shadow",
                &["10.0.0.1"],
                &[(80, Protocol::Http)],
            )],
            vec![],
        );
        let ctx = RouteContext::new(&model, "cluster.local");
        let policies = mirror_policies(
            &[
                Mirror {
                    target: spk("a", "shadow", 80),
                    percent: 100.0,
                },
                Mirror {
                    target: spk("a", "shadow", 80),
                    percent: 12.5,
                },
                Mirror {
                    target: spk("a", "missing", 80),
                    percent: 50.0,
                },
                Mirror {
                    target: spk("a", "shadow", 80),
                    percent: 0.0,
                },
            ],
            &ctx,
        );
        assert_eq!(policies.len(), 2);
        assert_eq!(
            policies[0].cluster,
            "outbound|80||shadow.a.svc.cluster.local"
        );
        assert_eq!(policies[0].runtime_fraction, None);
        let fraction = policies[1]
            .runtime_fraction
            .as_ref()
            .unwrap()
            .default_value
            .unwrap();
        assert_eq!(fraction.numerator, 125_000);
        assert_eq!(fraction.denominator, DenominatorType::Million as i32);
    }
}
