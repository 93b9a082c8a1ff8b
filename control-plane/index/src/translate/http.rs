//! One HTTPRoute's rules lowered into ranked model routes.

use lanyard_model::{
    Action, Cors, Forward, HeaderModifier, Mirror, PathMatch, PathRewrite, QueryMatch,
    RequestMatch, Retry, Route, Timeouts, UrlRewrite,
};

use crate::api::{HttpRoute, HttpRouteMatch, HttpRouteRetry, HttpRouteTimeouts};
use crate::translate::backends::Resolver;
use crate::translate::durations;
use crate::translate::filters::{self, Findings, HTTP_FILTERS, RuleFilters, RuleLabel};
use crate::translate::precedence::{self, Rank, Ranked, TieBreak};

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Lowers every rule of an HTTPRoute: one ranked model route per match.
pub(super) fn lower(
    route: &HttpRoute,
    tie: &TieBreak,
    resolver: &Resolver<'_>,
    findings: &mut Findings,
) -> Vec<Ranked> {
    let mut out = Vec::with_capacity(route.spec.rules.len());
    for (rule_index, rule) in route.spec.rules.iter().enumerate() {
        findings.in_rule(Some(rule_index));
        let at = filters::rule_label(rule_index, rule.name.as_deref());
        let default_match = [HttpRouteMatch::default()];
        let matches: &[HttpRouteMatch] = if rule.matches.is_empty() {
            &default_match
        } else {
            &rule.matches
        };
        let lowered_matches: Vec<RequestMatch> = matches
            .iter()
            .filter_map(|m| request_match(m, &at, findings))
            .collect();
        let rule_filters = filters::lower(&rule.filters, HTTP_FILTERS, resolver, &at, findings);
        let backends = filters::backends(&rule.backend_refs, resolver, &at, findings);
        let prefix_rewrite = matches!(
            rule_filters.redirect.as_ref().and_then(|r| r.path.as_ref()),
            Some(PathRewrite::Prefix(_))
        ) || matches!(
            rule_filters.rewrite.as_ref().and_then(|r| r.path.as_ref()),
            Some(PathRewrite::Prefix(_))
        );
        if prefix_rewrite
            && (lowered_matches.len() != 1
                || !matches!(lowered_matches[0].path, PathMatch::Prefix(_)))
        {
            findings.invalid(format!(
                "{at}: ReplacePrefixMatch needs exactly one match, of type PathPrefix"
            ));
        }
        if rule_filters.redirect.is_some() && !rule.backend_refs.is_empty() {
            findings.invalid(format!(
                "{at}: a rule with a RequestRedirect filter cannot have backendRefs"
            ));
        }
        let RuleFilters {
            mut request_headers,
            response_headers,
            mirrors,
            redirect,
            mut rewrite,
            cors,
            unresolvable,
        } = rule_filters;
        // A Host from a header modifier becomes the host rewrite; a URLRewrite hostname,
        // the filter made for it, wins over it.
        if let Some(host) = filters::take_host(&mut request_headers, &at, findings) {
            let rewrite = rewrite.get_or_insert_with(UrlRewrite::default);
            rewrite.hostname.get_or_insert(host);
        }
        let action = if let Some(redirect) = redirect {
            Action::Redirect(redirect)
        } else if unresolvable || backends.is_empty() {
            // No usable backend (none given, all weights 0, or an unresolvable filter): the
            // Gateway API says 500.
            Action::DirectResponse { status: 500 }
        } else {
            Action::Forward(Forward { backends, rewrite })
        };
        let timeouts = rule
            .timeouts
            .as_ref()
            .map(|t| timeouts(t, &at, findings))
            .unwrap_or_default();
        let retry = rule.retry.as_ref().and_then(|r| retry(r, &at, findings));
        let parts = RouteParts {
            action,
            request_headers,
            response_headers,
            mirrors,
            cors,
            timeouts,
            retry,
        };
        // Every match but the last gets a copy of the rule's parts; the last takes them.
        let mut lowered_matches = lowered_matches;
        let last = lowered_matches.pop();
        let count = lowered_matches.len();
        out.reserve(count + usize::from(last.is_some()));
        let rank = |match_index: usize, matcher: &RequestMatch| Rank {
            specificity: precedence::http(matcher),
            tie: TieBreak {
                rule: rule_index,
                matched: match_index,
                ..tie.clone()
            },
        };
        for (match_index, matcher) in lowered_matches.into_iter().enumerate() {
            out.push(Ranked {
                rank: rank(match_index, &matcher),
                route: parts.clone().route(matcher),
            });
        }
        if let Some(matcher) = last {
            out.push(Ranked {
                rank: rank(count, &matcher),
                route: parts.route(matcher),
            });
        }
    }
    findings.in_rule(None);
    out
}

/// What every match of a rule shares.
#[derive(Clone)]
struct RouteParts {
    action: Action,
    request_headers: HeaderModifier,
    response_headers: HeaderModifier,
    mirrors: Vec<Mirror>,
    cors: Option<Cors>,
    timeouts: Timeouts,
    retry: Option<Retry>,
}

impl RouteParts {
    fn route(self, matcher: RequestMatch) -> Route {
        Route {
            matcher,
            action: self.action,
            request_headers: self.request_headers,
            response_headers: self.response_headers,
            mirrors: self.mirrors,
            cors: self.cors,
            timeouts: self.timeouts,
            retry: self.retry,
        }
    }
}

fn request_match(
    m: &HttpRouteMatch,
    at: &RuleLabel<'_>,
    findings: &mut Findings,
) -> Option<RequestMatch> {
    let path_type = m
        .path
        .as_ref()
        .and_then(|p| p.match_type.as_deref())
        .unwrap_or("PathPrefix");
    let value = m
        .path
        .as_ref()
        .and_then(|p| p.value.clone())
        .unwrap_or_else(|| "/".to_string());
    let path = match path_type {
        "Exact" | "PathPrefix" => {
            if let Err(e) = filters::check_path(&value) {
                findings.invalid(format!("{at}: {e}"));
                return None;
            }
            if path_type == "Exact" {
                PathMatch::Exact(value)
            } else {
                PathMatch::Prefix(value)
            }
        }
        "RegularExpression" => {
            filters::check_regex(&value, at, findings)?;
            PathMatch::Regex(value)
        }
        other => {
            findings.invalid(format!(
                "{at}: path match type {other:?} is not Exact, PathPrefix or RegularExpression"
            ));
            return None;
        }
    };
    let headers = filters::header_matches(&m.headers, at, findings);
    let mut query: Vec<QueryMatch> = Vec::new();
    for q in &m.query_params {
        // Query parameter names are case-sensitive; the first match of a name wins.
        if q.name.is_empty() || query.iter().any(|e| e.name == q.name) {
            continue;
        }
        query.push(QueryMatch {
            name: q.name.clone(),
            value: filters::string_match(q, at, findings)?,
        });
    }
    let method = match &m.method {
        Some(method) if METHODS.contains(&method.as_str()) => Some(method.clone()),
        Some(method) => {
            findings.invalid(format!("{at}: method {method:?} is not an HTTP method"));
            return None;
        }
        None => None,
    };
    Some(RequestMatch {
        path,
        headers,
        query,
        method,
    })
}

fn timeouts(t: &HttpRouteTimeouts, at: &RuleLabel<'_>, findings: &mut Findings) -> Timeouts {
    let parse = |text: &Option<String>, findings: &mut Findings| {
        text.as_deref().and_then(|d| match durations::parse(d) {
            Ok(d) => Some(d),
            Err(e) => {
                findings.invalid(format!("{at}: timeouts: {e}"));
                None
            }
        })
    };
    let out = Timeouts {
        request: parse(&t.request, findings),
        backend_request: parse(&t.backend_request, findings),
    };
    // The CRD's rule: with a request timeout set (not 0s), backendRequest must not be
    // longer. A backendRequest of 0s disables the per-attempt timeout and is allowed.
    if let (Some(request), Some(backend)) = (out.request, out.backend_request)
        && !request.is_zero()
        && backend > request
    {
        findings.invalid(format!(
            "{at}: timeouts.backendRequest must not be longer than timeouts.request"
        ));
    }
    out
}

fn retry(r: &HttpRouteRetry, at: &RuleLabel<'_>, findings: &mut Findings) -> Option<Retry> {
    let mut codes = Vec::new();
    for code in &r.codes {
        match u16::try_from(*code) {
            Ok(c) if (400..600).contains(&c) => codes.push(c),
            _ => findings.invalid(format!(
                "{at}: retry code {code} is not between 400 and 599"
            )),
        }
    }
    let attempts = match r.attempts {
        Some(a) if a < 0 => {
            findings.invalid(format!("{at}: retry attempts {a} is negative"));
            return None;
        }
        // GEP-1731 leaves the default to the implementation; Envoy's is one retry.
        Some(a) => u32::try_from(a).unwrap_or(1),
        None => 1,
    };
    let backoff = match r.backoff.as_deref().map(durations::parse) {
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            findings.invalid(format!("{at}: retry backoff: {e}"));
            None
        }
        None => None,
    };
    Some(Retry {
        codes,
        attempts,
        backoff,
    })
}
