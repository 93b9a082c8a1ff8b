//! The Gateway API's precedence of matches merged from several routes onto one parent.
//!
//! HTTPRoute: Exact path first, then (Lanyard's choice for the implementation-specific
//! case) RegularExpression paths, longest first, then PathPrefix, longest first; then a
//! method match; then the most header matches; then the most query parameter matches.
//! GRPCRoute: the longest matching service, then the longest method, then the most header
//! matches (exact before regular expression on a tie). Ties in both: the oldest route by
//! creation time, then `namespace/name` alphabetically, then rule order, then match order.

use std::rc::Rc;

use lanyard_model::{PathMatch, RequestMatch, Route};

/// A model route with its place in the merged order.
#[derive(Clone, Debug)]
pub(super) struct Ranked {
    pub rank: Rank,
    pub route: Route,
}

/// Sorts ascending: the smallest rank is tried first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Rank {
    /// Smaller is more specific.
    pub specificity: [i64; 5],
    pub tie: TieBreak,
}

/// Where a match came from, for the spec's tie-breaking.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct TieBreak {
    /// RFC 3339 creation timestamp; empty (sorted first) when the object has none, as in
    /// files that were never applied to a cluster.
    pub created: Rc<str>,
    /// `namespace/name`.
    pub route: Rc<str>,
    pub rule: usize,
    pub matched: usize,
}

fn len(s: &str) -> i64 {
    i64::try_from(s.len()).unwrap_or(i64::MAX)
}

fn count<T>(items: &[T]) -> i64 {
    i64::try_from(items.len()).unwrap_or(i64::MAX)
}

/// HTTPRoute specificity of one match.
pub(super) fn http(m: &RequestMatch) -> [i64; 5] {
    let (class, length) = match &m.path {
        PathMatch::Exact(p) => (0, len(p)),
        PathMatch::Regex(p) => (1, len(p)),
        PathMatch::Prefix(p) => (2, len(p.trim_end_matches('/'))),
    };
    [
        class,
        -length,
        -i64::from(m.method.is_some()),
        -count(&m.headers),
        -count(&m.query),
    ]
}

/// GRPCRoute specificity of one match.
pub(super) fn grpc(service: &str, method: &str, headers: usize, regex: bool) -> [i64; 5] {
    [
        -len(service),
        -len(method),
        -i64::try_from(headers).unwrap_or(i64::MAX),
        i64::from(regex),
        0,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanyard_model::{HeaderMatch, StringMatch};

    fn mk_match(path: PathMatch) -> RequestMatch {
        RequestMatch {
            path,
            ..Default::default()
        }
    }

    #[test]
    fn http_order_follows_the_spec() {
        let exact = http(&mk_match(PathMatch::Exact("/a".into())));
        let regex = http(&mk_match(PathMatch::Regex("/a.*".into())));
        let long_prefix = http(&mk_match(PathMatch::Prefix("/abc".into())));
        let short_prefix = http(&mk_match(PathMatch::Prefix("/a".into())));
        let mut with_method = mk_match(PathMatch::Prefix("/a".into()));
        with_method.method = Some("GET".into());
        let mut with_header = mk_match(PathMatch::Prefix("/a".into()));
        with_header.headers.push(HeaderMatch {
            name: "x".into(),
            value: StringMatch::Exact("y".into()),
        });
        let mut sorted = vec![
            short_prefix,
            http(&with_header),
            long_prefix,
            http(&with_method),
            regex,
            exact,
        ];
        sorted.sort();
        assert_eq!(
            sorted,
            vec![
                exact,
                regex,
                long_prefix,
                http(&with_method),
                http(&with_header),
                short_prefix
            ]
        );
    }

    #[test]
    fn ties_go_to_the_oldest_then_alphabetical_route() {
        let rank = |created: &str, route: &str, rule| Rank {
            specificity: [0; 5],
            tie: TieBreak {
                created: created.into(),
                route: route.into(),
                rule,
                matched: 0,
            },
        };
        let mut ranks = [
            rank("2024-02-01T00:00:00Z", "ns/a", 0),
            rank("2024-01-01T00:00:00Z", "ns/z", 1),
            rank("2024-01-01T00:00:00Z", "ns/z", 0),
            rank("2024-01-01T00:00:00Z", "ns/b", 0),
        ];
        ranks.sort();
        let order: Vec<_> = ranks.iter().map(|r| (&*r.tie.route, r.tie.rule)).collect();
        assert_eq!(
            order,
            vec![("ns/b", 0), ("ns/z", 0), ("ns/z", 1), ("ns/a", 0)]
        );
    }
}
