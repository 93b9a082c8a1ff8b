//! What gRPC's xDS client accepts: the resources a proxyless client reads (its API listener,
//! the RouteConfiguration, Clusters and ClusterLoadAssignments it names), checked against the
//! rules of gRPC's C-core parsers. A [`Violation`] is something gRPC NACKs: one is enough for the
//! client to reject the whole resource, and a client that starts afterwards has no
//! configuration at all.
//!
//! Read from grpcio 1.85.1 (the release the end-to-end tests run; its PyPI sdist carries the
//! C-core sources of that release), `src/core/xds/grpc/`: `xds_listener_parser.cc`, `xds_route_config_parser.cc`,
//! `xds_cluster_parser.cc`, `xds_endpoint_parser.cc`, `xds_common_types_parser.cc`,
//! `xds_http_filter_registry.cc` / `xds_bootstrap_grpc_builder.cc` (which filters exist) and
//! `src/core/util/matchers.cc`. Behaviour behind experiment environment variables is taken at
//! its default (RLS cluster specifier plugins on; composite and ext_proc filters, HTTP CONNECT
//! and ORCA propagation off; SNI, dual-stack endpoints on).
//!
//! What gRPC only ignores is not a violation; [`notes_route_configuration`] lists the routes
//! it skips or cannot serve, and the retry codes it ignores. It skips, without NACKing:
//! - a route with `query_parameters`, a `prefix` that cannot match `/service/method` (no
//!   leading `/`, a `//` start, more than two `/`), a `path` not of the form
//!   `/service/method`; nothing else in such a route is checked;
//! - a route whose action uses `cluster_header`, an inline cluster specifier plugin, or an
//!   optional plugin gRPC does not know;
//! - `retry_on` codes other than `cancelled`, `deadline-exceeded`, `internal`,
//!   `resource-exhausted`, `unavailable`; hash policies other than `header` and the
//!   `io.grpc.channel_id` filter state; and every field it does not read (header rewrites,
//!   mirrors, timeouts other than `max_stream_duration`, a Listener's `address` next to its
//!   `api_listener`, `typed_extension_protocol_options` of a Cluster; of `circuit_breakers`
//!   only the DEFAULT priority's `max_requests`);
//! - a locality without `load_balancing_weight` (or 0), an endpoint whose health status is not
//!   UNKNOWN, HEALTHY or DRAINING.
//!
//! Routes whose action is a redirect, a direct response or a filter action are kept and fail
//! every call they match with UNAVAILABLE; `non_forwarding_action` is for servers.
//!
//! Not checked (Lanyard does not emit them): the contents of HTTP filter configs (fault, RBAC,
//! stateful session, GCP authn), RLS plugin configs, the `load_balancing_policy` extension
//! tree, metadata, and the finer rules of `CommonTlsContext`.
//!
//! Regular expressions are compiled by RE2 itself (`lanyard_re2`), as gRPC compiles them:
//! default options and no program-size limit (`regex_error`).

mod cluster;
mod endpoints;
mod listener;
mod route_config;

#[cfg(test)]
mod emitted_tests;

use envoy_types::pb::envoy::config::core::v3::{
    ConfigSource, config_source::ConfigSourceSpecifier,
};
use envoy_types::pb::envoy::config::route::v3::HeaderMatcher;
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::{Any, Duration};
use prost::Message;

pub use cluster::check_cluster;
pub use endpoints::check_load_assignment;
pub use listener::check_listener;
pub use route_config::{check_route_configuration, notes_route_configuration};

use super::Violation;

/// Collects violations under field paths written as [`Violation::path`] describes.
#[derive(Debug, Default)]
struct Report {
    violations: Vec<Violation>,
    /// What gRPC reads differently from Envoy without refusing it (skipped routes, ...).
    notes: Vec<Violation>,
}

impl Report {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.violations.push(Violation::new(path, message));
    }

    fn note(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.notes.push(Violation::new(path, message));
    }

    fn count(&self) -> usize {
        self.violations.len()
    }
}

/// `base.field`, or `field` at the root.
fn field(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}.{name}")
    }
}

/// The error gRPC reports for a regex it cannot compile, or `None` when it compiles.
fn regex_error(pattern: &str) -> Option<String> {
    // gRPC: src/core/util/matchers.cc (StringMatcher::Create): RE2 with default options.
    lanyard_re2::grpc_refusal(pattern)
        .map(|e| format!("Invalid regex string specified in matcher: {e}"))
}

/// gRPC: xds_common_types_parser.cc (ParseDuration).
fn check_duration(duration: &Duration, path: &str, report: &mut Report) {
    if !(0..=315_576_000_000).contains(&duration.seconds) {
        report.add(
            field(path, "seconds"),
            "value must be in the range [0, 315576000000]",
        );
    }
    if !(0..=999_999_999).contains(&duration.nanos) {
        report.add(
            field(path, "nanos"),
            "value must be in the range [0, 999999999]",
        );
    }
}

/// gRPC: xds_listener_parser.cc (HttpConnectionManagerParse, `rds.config_source`) and
/// xds_cluster_parser.cc (EdsConfigParse): a ConfigSource must be `ads` or `self`.
fn is_ads_or_self(source: &ConfigSource) -> bool {
    matches!(
        source.config_source_specifier,
        Some(ConfigSourceSpecifier::Ads(_) | ConfigSourceSpecifier::Self_(_))
    )
}

/// A `google.protobuf.Any` as gRPC reads an extension: its type (without the URL prefix,
/// looking through a TypedStruct) and, unless it was a TypedStruct, its serialized message.
#[derive(Debug)]
struct Extension<'a> {
    type_name: String,
    /// `None` for a TypedStruct: gRPC then has JSON, which it cannot decode as a message.
    bytes: Option<&'a [u8]>,
    /// Where the packed message's own fields go.
    path: String,
}

/// The name part of a TypedStruct (`xds.type.v3.TypedStruct`, `udpa.type.v1.TypedStruct`):
/// envoy-types does not ship the message, and gRPC only needs its `type_url`.
#[derive(Clone, PartialEq, Message)]
struct TypedStruct {
    #[prost(string, tag = "1")]
    type_url: String,
}

/// gRPC: xds_common_types_parser.cc (ExtractXdsExtension, StripTypePrefix). `path` is the
/// field holding the `Any`.
fn extract_extension<'a>(
    any: Option<&'a Any>,
    path: &str,
    report: &mut Report,
) -> Option<Extension<'a>> {
    let Some(any) = any else {
        report.add(path, "field not present");
        return None;
    };
    let type_name = strip_type_prefix(&any.type_url, &field(path, "type_url"), report)?;
    if type_name == "xds.type.v3.TypedStruct" || type_name == "udpa.type.v1.TypedStruct" {
        let inner_path = format!("{path}{{{type_name}}}");
        let Ok(typed_struct) = TypedStruct::decode(any.value.as_slice()) else {
            report.add(inner_path, "could not parse");
            return None;
        };
        let inner = strip_type_prefix(
            &typed_struct.type_url,
            &field(&inner_path, "type_url"),
            report,
        )?;
        return Some(Extension {
            path: format!("{inner_path}.value{{{inner}}}"),
            type_name: inner,
            bytes: None,
        });
    }
    Some(Extension {
        path: format!("{path}{{{type_name}}}"),
        type_name,
        bytes: Some(any.value.as_slice()),
    })
}

/// gRPC: xds_common_types_parser.cc (StripTypePrefix): an empty type is fatal; one without a
/// `/` (or ending in one) is an error but is still looked up as it is.
fn strip_type_prefix(type_url: &str, path: &str, report: &mut Report) -> Option<String> {
    if type_url.is_empty() {
        report.add(path, "field not present");
        return None;
    }
    match type_url.rfind('/') {
        Some(pos) if pos + 1 < type_url.len() => Some(type_url[pos + 1..].to_string()),
        _ => {
            report.add(path, format!("invalid value \"{type_url}\""));
            Some(type_url.to_string())
        }
    }
}

/// gRPC: xds_common_types_parser.cc (StringMatcherParseInternal) with matchers.cc
/// (StringMatcher::Create).
fn check_string_matcher(matcher: &StringMatcher, path: &str, report: &mut Report) {
    match &matcher.match_pattern {
        Some(MatchPattern::SafeRegex(regex)) => {
            if let Some(error) = regex_error(&regex.regex) {
                report.add(path, error);
            } else if matcher.ignore_case {
                report.add(
                    field(path, "ignore_case"),
                    "not supported for regex matcher",
                );
            }
        }
        Some(
            MatchPattern::Exact(_)
            | MatchPattern::Prefix(_)
            | MatchPattern::Suffix(_)
            | MatchPattern::Contains(_),
        ) => {}
        Some(MatchPattern::Custom(_)) | None => report.add(path, "invalid string matcher"),
    }
}

/// gRPC: xds_common_types_parser.cc (ParseXdsHeaderMatcher) with matchers.cc
/// (HeaderMatcher::Create). The deprecated per-kind matchers are still read by gRPC.
#[allow(deprecated)]
fn check_header_matcher(matcher: &HeaderMatcher, path: &str, report: &mut Report) {
    match &matcher.header_match_specifier {
        Some(HeaderMatchSpecifier::StringMatch(string_match)) => {
            check_string_matcher(string_match, &field(path, "string_match"), report);
        }
        Some(HeaderMatchSpecifier::SafeRegexMatch(regex)) => {
            if let Some(error) = regex_error(&regex.regex) {
                report.add(path, format!("cannot create header matcher: {error}"));
            }
        }
        Some(HeaderMatchSpecifier::RangeMatch(range)) => {
            if range.start > range.end {
                report.add(
                    path,
                    "cannot create header matcher: Invalid range specifier specified: end \
                     cannot be smaller than start.",
                );
            }
        }
        Some(
            HeaderMatchSpecifier::ExactMatch(_)
            | HeaderMatchSpecifier::PrefixMatch(_)
            | HeaderMatchSpecifier::SuffixMatch(_)
            | HeaderMatchSpecifier::ContainsMatch(_)
            | HeaderMatchSpecifier::PresentMatch(_),
        ) => {}
        None => report.add(path, "invalid header matcher"),
    }
}

/// The HTTP filters gRPC's registry knows, by the config type a filter's `typed_config`
/// holds. gRPC: xds_bootstrap_grpc_builder.cc (the registry's constructor) and each filter's
/// `ConfigProtoName`, `OverrideConfigProtoName`, `IsSupportedOnClients`, `IsTerminalFilter`
/// (xds_bootstrap_grpc_builder.h, xds_http_*_filter.{h,cc}). Composite and ext_proc are
/// registered only behind experiment environment variables, so they are left out.
#[derive(Clone, Copy, Debug)]
struct HttpFilterKind {
    config_type: &'static str,
    override_type: Option<&'static str>,
    on_clients: bool,
    terminal: bool,
}

/// The router's config type, the one terminal filter.
const ROUTER: &str = "envoy.extensions.filters.http.router.v3.Router";

const HTTP_FILTERS: &[HttpFilterKind] = &[
    HttpFilterKind {
        config_type: ROUTER,
        override_type: None,
        on_clients: true,
        terminal: true,
    },
    HttpFilterKind {
        config_type: "envoy.extensions.filters.http.fault.v3.HTTPFault",
        override_type: Some("envoy.extensions.filters.http.fault.v3.HTTPFault"),
        on_clients: true,
        terminal: false,
    },
    HttpFilterKind {
        config_type: "envoy.extensions.filters.http.rbac.v3.RBAC",
        override_type: Some("envoy.extensions.filters.http.rbac.v3.RBACPerRoute"),
        on_clients: false,
        terminal: false,
    },
    HttpFilterKind {
        config_type: "envoy.extensions.filters.http.stateful_session.v3.StatefulSession",
        override_type: Some(
            "envoy.extensions.filters.http.stateful_session.v3.StatefulSessionPerRoute",
        ),
        on_clients: true,
        terminal: false,
    },
    HttpFilterKind {
        config_type: "envoy.extensions.filters.http.gcp_authn.v3.GcpAuthnFilterConfig",
        override_type: None,
        on_clients: true,
        terminal: false,
    },
];

/// gRPC: XdsHttpFilterRegistry::GetFilterForTopLevelType.
fn filter_for_top_level_type(type_name: &str) -> Option<&'static HttpFilterKind> {
    HTTP_FILTERS.iter().find(|f| f.config_type == type_name)
}

/// gRPC: XdsHttpFilterRegistry::GetFilterForOverrideType.
fn filter_for_override_type(type_name: &str) -> Option<&'static HttpFilterKind> {
    HTTP_FILTERS
        .iter()
        .find(|f| f.override_type == Some(type_name))
}

#[cfg(test)]
#[allow(deprecated)]
mod tests {
    use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher;
    use envoy_types::pb::envoy::r#type::v3::Int64Range;

    use super::*;

    fn header(spec: HeaderMatchSpecifier) -> Vec<Violation> {
        let mut report = Report::default();
        let matcher = HeaderMatcher {
            name: "x".into(),
            header_match_specifier: Some(spec),
            ..Default::default()
        };
        check_header_matcher(&matcher, "h", &mut report);
        report.violations
    }

    fn regex(r: &str) -> RegexMatcher {
        RegexMatcher {
            regex: r.into(),
            ..Default::default()
        }
    }

    #[test]
    fn header_range_must_not_end_before_it_starts() {
        let bad = header(HeaderMatchSpecifier::RangeMatch(Int64Range {
            start: 5,
            end: 1,
        }));
        assert_eq!(bad.len(), 1);
        assert!(bad[0].message.contains("end cannot be smaller than start"));
        assert!(
            header(HeaderMatchSpecifier::RangeMatch(Int64Range {
                start: 1,
                end: 1
            }))
            .is_empty()
        );
    }

    #[test]
    fn header_regex_must_compile() {
        let bad = header(HeaderMatchSpecifier::SafeRegexMatch(regex("a(")));
        assert_eq!(bad[0].path, "h");
        assert!(bad[0].message.starts_with("cannot create header matcher"));
        assert!(header(HeaderMatchSpecifier::SafeRegexMatch(regex("a+"))).is_empty());
    }

    #[test]
    fn header_matcher_needs_a_specifier() {
        let mut report = Report::default();
        check_header_matcher(&HeaderMatcher::default(), "h", &mut report);
        assert_eq!(
            report.violations,
            vec![Violation::new("h", "invalid header matcher")]
        );
        assert!(header(HeaderMatchSpecifier::PresentMatch(true)).is_empty());
        assert!(header(HeaderMatchSpecifier::ExactMatch("v".into())).is_empty());
    }

    #[test]
    fn string_matcher_regex_cannot_ignore_case() {
        let string = |pattern, ignore_case| {
            header(HeaderMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(pattern),
                ignore_case,
            }))
        };
        assert_eq!(
            string(MatchPattern::SafeRegex(regex("a")), true),
            vec![Violation::new(
                "h.string_match.ignore_case",
                "not supported for regex matcher"
            )]
        );
        assert!(string(MatchPattern::SafeRegex(regex("a")), false).is_empty());
        assert!(string(MatchPattern::Prefix("a".into()), true).is_empty());
        assert_eq!(
            header(HeaderMatchSpecifier::StringMatch(StringMatcher::default())),
            vec![Violation::new("h.string_match", "invalid string matcher")]
        );
    }

    #[test]
    fn durations_out_of_range() {
        let mut report = Report::default();
        check_duration(
            &Duration {
                seconds: -1,
                nanos: 1_000_000_000,
            },
            "d",
            &mut report,
        );
        assert_eq!(
            report
                .violations
                .iter()
                .map(|v| v.path.as_str())
                .collect::<Vec<_>>(),
            ["d.seconds", "d.nanos"]
        );
        let mut report = Report::default();
        check_duration(
            &Duration {
                seconds: 5,
                nanos: 0,
            },
            "d",
            &mut report,
        );
        assert!(report.violations.is_empty());
    }

    #[test]
    fn extensions_need_a_type_and_look_through_typed_struct() {
        let mut report = Report::default();
        assert!(extract_extension(None, "f", &mut report).is_none());
        let empty = Any::default();
        assert!(extract_extension(Some(&empty), "f", &mut report).is_none());
        assert_eq!(
            report.violations,
            vec![
                Violation::new("f", "field not present"),
                Violation::new("f.type_url", "field not present"),
            ]
        );

        let mut report = Report::default();
        let typed_struct = Any {
            type_url: "type.googleapis.com/xds.type.v3.TypedStruct".into(),
            value: TypedStruct {
                type_url: "type.googleapis.com/some.Filter".into(),
            }
            .encode_to_vec(),
        };
        let ext = extract_extension(Some(&typed_struct), "f", &mut report).unwrap();
        assert_eq!(ext.type_name, "some.Filter");
        assert!(ext.bytes.is_none());
        assert!(report.violations.is_empty());

        let bare = Any {
            type_url: "some.Filter".into(),
            value: vec![],
        };
        let ext = extract_extension(Some(&bare), "f", &mut report).unwrap();
        assert_eq!(ext.type_name, "some.Filter");
        assert_eq!(
            report.violations,
            vec![Violation::new(
                "f.type_url",
                "invalid value \"some.Filter\""
            )]
        );
    }
}
