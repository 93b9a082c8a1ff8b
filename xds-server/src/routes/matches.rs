//! Request matching: model `RequestMatch` to Envoy `RouteMatch`.

use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, RouteMatch, header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
use lanyard_model::{PathMatch, Protocol, RequestMatch, StringMatch};

/// How segment-wise path prefixes are written for a route table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathStyle {
    /// `path_separated_prefix: /foo`: matches `/foo` and `/foo/...`, exactly the Gateway API
    /// rule. For HTTP tables served to Envoy.
    Segments,
    /// `prefix: /foo/`: gRPC's own shape, identical to `Segments` for gRPC paths (always
    /// `/service/method`). For tables lowered from GRPCRoutes, and for every table served to
    /// proxyless gRPC clients, which refuse `path_separated_prefix` (their HTTP tables first
    /// split each prefix route into an exact `/foo` and a `/foo/` prefix; see
    /// `routes::for_grpc`).
    Grpc,
}

impl PathStyle {
    /// The style for a table of `table_protocol` served to Envoy.
    pub fn for_table(table_protocol: Protocol) -> Self {
        if table_protocol == Protocol::Grpc {
            PathStyle::Grpc
        } else {
            PathStyle::Segments
        }
    }
}

/// What part of the request path the route's path match covers, for prefix rewrites.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchedPrefix {
    /// `prefix: "/"`: every path; the matched prefix is the leading `/`.
    Root,
    /// `path_separated_prefix: m` (no trailing `/`): the path is `m` or `m/...`.
    Segments(String),
    /// `prefix: "m/"`: the path is `m/...`.
    Slash(String),
    /// An exact or regex match: the whole path is the matched part.
    Whole,
}

impl MatchedPrefix {
    /// The matched prefix of a path match under a style.
    pub fn of(path: &PathMatch, style: PathStyle) -> Self {
        let PathMatch::Prefix(prefix) = path else {
            return MatchedPrefix::Whole;
        };
        let m = prefix.trim_end_matches('/').to_string();
        match style {
            _ if m.is_empty() => MatchedPrefix::Root,
            PathStyle::Segments => MatchedPrefix::Segments(m),
            PathStyle::Grpc => MatchedPrefix::Slash(m),
        }
    }
}

/// The Envoy match: path, then headers (with the method as `:method`), then query parameters.
pub fn route_match(matcher: &RequestMatch, style: PathStyle) -> RouteMatch {
    let path_specifier = match &matcher.path {
        PathMatch::Exact(path) => PathSpecifier::Path(path.clone()),
        PathMatch::Regex(regex) => PathSpecifier::SafeRegex(regex_matcher(regex)),
        prefix @ PathMatch::Prefix(_) => match MatchedPrefix::of(prefix, style) {
            MatchedPrefix::Segments(m) => PathSpecifier::PathSeparatedPrefix(m),
            MatchedPrefix::Slash(m) => PathSpecifier::Prefix(format!("{m}/")),
            MatchedPrefix::Root | MatchedPrefix::Whole => PathSpecifier::Prefix("/".into()),
        },
    };
    let mut headers: Vec<HeaderMatcher> = matcher
        .headers
        .iter()
        .map(|h| header_matcher(&h.name, &h.value))
        .collect();
    if let Some(method) = &matcher.method {
        headers.push(header_matcher(
            ":method",
            &StringMatch::Exact(method.clone()),
        ));
    }
    RouteMatch {
        path_specifier: Some(path_specifier),
        headers,
        query_parameters: matcher
            .query
            .iter()
            .map(|q| QueryParameterMatcher {
                name: q.name.clone(),
                query_parameter_match_specifier: Some(QueryParameterMatchSpecifier::StringMatch(
                    string_matcher(&q.value),
                )),
            })
            .collect(),
        ..Default::default()
    }
}

fn header_matcher(name: &str, value: &StringMatch) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(string_matcher(value))),
        ..Default::default()
    }
}

/// Exact or RE2 regex string matcher.
pub fn string_matcher(value: &StringMatch) -> StringMatcher {
    let pattern = match value {
        StringMatch::Exact(exact) => MatchPattern::Exact(exact.clone()),
        StringMatch::Regex(regex) => MatchPattern::SafeRegex(regex_matcher(regex)),
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}

/// A RE2 regex matcher (the engine is left unset: google_re2 is the default).
pub fn regex_matcher(regex: &str) -> RegexMatcher {
    RegexMatcher {
        regex: regex.to_string(),
        engine_type: None,
    }
}

#[cfg(test)]
mod tests {
    use lanyard_model::{HeaderMatch, QueryMatch};

    use super::*;

    fn path_of(path: PathMatch, style: PathStyle) -> PathSpecifier {
        route_match(
            &RequestMatch {
                path,
                ..Default::default()
            },
            style,
        )
        .path_specifier
        .unwrap()
    }

    #[test]
    fn paths() {
        let seg = PathStyle::Segments;
        assert_eq!(
            path_of(PathMatch::Exact("/a/b".into()), seg),
            PathSpecifier::Path("/a/b".into())
        );
        assert_eq!(
            path_of(PathMatch::Prefix("/".into()), seg),
            PathSpecifier::Prefix("/".into())
        );
        assert_eq!(
            path_of(PathMatch::Prefix("/api/".into()), seg),
            PathSpecifier::PathSeparatedPrefix("/api".into())
        );
        assert_eq!(
            path_of(PathMatch::Prefix("/api".into()), seg),
            PathSpecifier::PathSeparatedPrefix("/api".into())
        );
        assert_eq!(
            path_of(PathMatch::Regex("/v[0-9]+/.*".into()), seg),
            PathSpecifier::SafeRegex(regex_matcher("/v[0-9]+/.*"))
        );
    }

    #[test]
    fn grpc_style_prefixes_end_with_a_slash() {
        assert_eq!(
            path_of(PathMatch::Prefix("/pkg.Greeter".into()), PathStyle::Grpc),
            PathSpecifier::Prefix("/pkg.Greeter/".into())
        );
        assert_eq!(
            path_of(PathMatch::Prefix("/".into()), PathStyle::Grpc),
            PathSpecifier::Prefix("/".into())
        );
        assert_eq!(
            path_of(
                PathMatch::Exact("/pkg.Greeter/Hello".into()),
                PathStyle::Grpc
            ),
            PathSpecifier::Path("/pkg.Greeter/Hello".into())
        );
    }

    #[test]
    fn style_by_table_protocol() {
        assert_eq!(PathStyle::for_table(Protocol::Http), PathStyle::Segments);
        assert_eq!(PathStyle::for_table(Protocol::Grpc), PathStyle::Grpc);
    }

    #[test]
    fn headers_method_and_query() {
        let matcher = RequestMatch {
            path: PathMatch::default(),
            headers: vec![
                HeaderMatch {
                    name: "x-version".into(),
                    value: StringMatch::Exact("v2".into()),
                },
                HeaderMatch {
                    name: "x-user".into(),
                    value: StringMatch::Regex("a.*".into()),
                },
            ],
            query: vec![QueryMatch {
                name: "Debug".into(),
                value: StringMatch::Exact("1".into()),
            }],
            method: Some("POST".into()),
        };
        let m = route_match(&matcher, PathStyle::Segments);
        let headers: Vec<(&str, &HeaderMatchSpecifier)> = m
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.header_match_specifier.as_ref().unwrap()))
            .collect();
        assert_eq!(
            headers,
            [
                (
                    "x-version",
                    &HeaderMatchSpecifier::StringMatch(string_matcher(&StringMatch::Exact(
                        "v2".into()
                    )))
                ),
                (
                    "x-user",
                    &HeaderMatchSpecifier::StringMatch(StringMatcher {
                        match_pattern: Some(MatchPattern::SafeRegex(regex_matcher("a.*"))),
                        ..Default::default()
                    })
                ),
                (
                    ":method",
                    &HeaderMatchSpecifier::StringMatch(string_matcher(&StringMatch::Exact(
                        "POST".into()
                    )))
                ),
            ]
        );
        assert_eq!(m.query_parameters.len(), 1);
        assert_eq!(m.query_parameters[0].name, "Debug");
        assert_eq!(
            m.query_parameters[0].query_parameter_match_specifier,
            Some(QueryParameterMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(MatchPattern::Exact("1".into())),
                ..Default::default()
            }))
        );
    }
}
