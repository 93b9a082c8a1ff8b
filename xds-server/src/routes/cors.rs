//! CORS, configured per route for the `envoy.filters.http.cors` filter.

use envoy_types::pb::envoy::config::route::v3::FilterConfig;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::Any;
use lanyard_model::Cors;

use super::matches::regex_matcher;
use crate::protobuf::{any, bool_value};

/// The route's `typed_per_filter_config` value for the CORS filter: a `FilterConfig` marked
/// optional, so clients without a CORS filter (proxyless gRPC) accept the route anyway.
pub fn per_filter_config(cors: &Cors) -> Any {
    any(&FilterConfig {
        config: Some(any(&policy(cors))),
        is_optional: true,
        disabled: false,
    })
}

/// The CORS policy: lists comma-joined, `max_age` in seconds.
pub fn policy(cors: &Cors) -> CorsPolicy {
    CorsPolicy {
        allow_origin_string_match: cors.allow_origins.iter().map(|o| origin(o)).collect(),
        allow_methods: cors.allow_methods.join(","),
        allow_headers: cors.allow_headers.join(","),
        expose_headers: cors.expose_headers.join(","),
        max_age: cors
            .max_age_seconds
            .map(|s| s.to_string())
            .unwrap_or_default(),
        allow_credentials: Some(bool_value(cors.allow_credentials)),
        ..Default::default()
    }
}

/// `*` alone: any origin, as the RE2 regex `.*` (Envoy's StringMatcher does not allow an
/// empty prefix and says to use a regex instead). An origin with `*` in it
/// (`https://*.example.com`): an anchored regex where `*` stands for one or more characters
/// other than `/`. Anything else: exact.
fn origin(origin: &str) -> StringMatcher {
    let pattern = if origin == "*" {
        MatchPattern::SafeRegex(regex_matcher(".*"))
    } else if origin.contains('*') {
        let parts: Vec<String> = origin.split('*').map(regex::escape).collect();
        MatchPattern::SafeRegex(regex_matcher(&format!("^{}$", parts.join("[^/]+"))))
    } else {
        MatchPattern::Exact(origin.to_string())
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn matches(matcher: &StringMatcher, value: &str) -> bool {
        match matcher.match_pattern.as_ref().unwrap() {
            MatchPattern::Exact(e) => e == value,
            MatchPattern::SafeRegex(r) => regex::Regex::new(&format!("^(?:{})$", r.regex))
                .unwrap()
                .is_match(value),
            other => panic!("unexpected pattern {other:?}"),
        }
    }

    #[test]
    fn origins() {
        let any_origin = origin("*");
        assert!(matches(&any_origin, "https://a.example.com"));
        assert!(matches(&any_origin, "null"));

        let wildcard = origin("https://*.example.com");
        assert!(matches(&wildcard, "https://api.example.com"));
        assert!(matches(&wildcard, "https://a.b.example.com"));
        assert!(!matches(&wildcard, "http://api.example.com"));
        assert!(!matches(&wildcard, "https://example.com"));
        assert!(!matches(&wildcard, "https://apixexample.com"));
        assert!(!matches(&wildcard, "https://evil.com/.example.com"));

        let exact = origin("https://shop.example.com");
        assert_eq!(
            exact.match_pattern,
            Some(MatchPattern::Exact("https://shop.example.com".into()))
        );
    }

    #[test]
    fn policy_fields() {
        let p = policy(&Cors {
            allow_origins: vec!["https://a.example.com".into()],
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["x-a".into(), "x-b".into()],
            expose_headers: vec!["x-c".into()],
            allow_credentials: true,
            max_age_seconds: Some(600),
        });
        assert_eq!(p.allow_methods, "GET,POST");
        assert_eq!(p.allow_headers, "x-a,x-b");
        assert_eq!(p.expose_headers, "x-c");
        assert_eq!(p.max_age, "600");
        assert_eq!(p.allow_credentials, Some(bool_value(true)));
        assert_eq!(p.allow_origin_string_match.len(), 1);
    }

    #[test]
    fn wrapped_in_an_optional_filter_config() {
        let config = per_filter_config(&Cors::default());
        assert_eq!(
            config.type_url,
            "type.googleapis.com/envoy.config.route.v3.FilterConfig"
        );
        let filter_config = FilterConfig::decode(config.value.as_slice()).unwrap();
        assert!(filter_config.is_optional);
        assert_eq!(
            filter_config.config.unwrap().type_url,
            "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"
        );
    }
}
