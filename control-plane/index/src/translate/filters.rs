//! Route filters and the validation rules the Gateway API CRDs enforce, shared by HTTPRoute
//! and GRPCRoute.

use std::collections::BTreeSet;
use std::fmt;

use lanyard_model::{
    Backend, BackendTarget, Cors, HeaderMatch, HeaderModifier, Mirror, PathRewrite, Redirect,
    StringMatch, UrlRewrite,
};

use crate::api::{
    HeaderFilter, HttpBackendRef, HttpHeaderMatch, HttpPathModifier, HttpRouteFilter,
    RequestMirrorFilter,
};
use crate::translate::backends::{RefProblem, Resolver};

/// Everything a rule's filters ask for.
#[derive(Default)]
pub(super) struct RuleFilters {
    pub request_headers: HeaderModifier,
    pub response_headers: HeaderModifier,
    pub mirrors: Vec<Mirror>,
    pub redirect: Option<Redirect>,
    pub rewrite: Option<UrlRewrite>,
    pub cors: Option<Cors>,
    /// A filter that cannot be applied (an unresolvable ExtensionRef): the rule answers 500.
    pub unresolvable: bool,
}

/// What lowering one route found wrong, besides what it produced.
#[derive(Default)]
pub(super) struct Findings {
    /// Spec violations. One inside a rule drops that rule; one outside any rule rejects the
    /// route.
    pub invalid: Vec<Invalid>,
    /// References that did not resolve: `ResolvedRefs=False`.
    pub problems: Vec<RefProblem>,
    /// The rule being lowered, which violations found now belong to.
    rule: Option<usize>,
}

/// One spec violation and the rule it belongs to (`None`: the route as a whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Invalid {
    pub rule: Option<usize>,
    pub message: String,
}

impl Findings {
    pub fn invalid(&mut self, message: impl Into<String>) {
        self.invalid.push(Invalid {
            rule: self.rule,
            message: message.into(),
        });
    }

    /// Attributes the violations found from now on to rule `rule` (`None`: to the route).
    pub fn in_rule(&mut self, rule: Option<usize>) {
        self.rule = rule;
    }

    /// Whether a violation concerns the route as a whole rather than one rule.
    pub fn route_invalid(&self) -> bool {
        self.invalid.iter().any(|i| i.rule.is_none())
    }

    /// The rules with at least one violation.
    pub fn invalid_rules(&self) -> BTreeSet<usize> {
        self.invalid.iter().filter_map(|i| i.rule).collect()
    }
}

/// How messages name a rule: `rule 2`, or `rule 2 (name)` when it has one. Formatted only
/// when a message is written.
#[derive(Clone, Copy)]
pub(super) struct RuleLabel<'a> {
    index: usize,
    name: Option<&'a str>,
}

impl fmt::Display for RuleLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name {
            Some(name) => write!(f, "rule {} ({name})", self.index),
            None => write!(f, "rule {}", self.index),
        }
    }
}

/// The label of rule `index`, named `name` when it has one.
pub(super) fn rule_label(index: usize, name: Option<&str>) -> RuleLabel<'_> {
    RuleLabel { index, name }
}

/// The filter types each route kind supports.
pub(super) const HTTP_FILTERS: &[&str] = &[
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "RequestRedirect",
    "URLRewrite",
    "CORS",
    "ExtensionRef",
];
pub(super) const GRPC_FILTERS: &[&str] = &[
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestMirror",
    "ExtensionRef",
];

/// Lowers a rule's filters. `at` names the rule in messages.
pub(super) fn lower(
    filters: &[HttpRouteFilter],
    supported: &[&str],
    resolver: &Resolver<'_>,
    at: &RuleLabel<'_>,
    findings: &mut Findings,
) -> RuleFilters {
    let mut out = RuleFilters::default();
    let mut seen: Vec<&str> = Vec::new();
    for filter in filters {
        let kind = filter.filter_type.as_str();
        if !supported.contains(&kind) {
            findings.invalid(format!("{at}: filter type {kind:?} is not supported here"));
            continue;
        }
        if kind != "RequestMirror" && kind != "ExtensionRef" {
            if seen.contains(&kind) {
                findings.invalid(format!("{at}: filter {kind} appears more than once"));
                continue;
            }
            seen.push(kind);
        }
        let missing = || format!("{at}: filter {kind} has no {kind} configuration");
        match kind {
            "RequestHeaderModifier" => match &filter.request_header_modifier {
                Some(f) => out.request_headers = header_modifier(f, at, findings),
                None => findings.invalid(missing()),
            },
            "ResponseHeaderModifier" => match &filter.response_header_modifier {
                Some(f) => out.response_headers = response_modifier(f, at, findings),
                None => findings.invalid(missing()),
            },
            "RequestMirror" => match &filter.request_mirror {
                Some(f) => out.mirrors.extend(mirror(f, resolver, at, findings)),
                None => findings.invalid(missing()),
            },
            "RequestRedirect" => {
                match &filter.request_redirect {
                    Some(f) => {
                        let status = f.status_code.unwrap_or(302);
                        if ![301, 302, 303, 307, 308].contains(&status) {
                            findings.invalid(format!("{at}: redirect status {status} is not one of 301, 302, 303, 307, 308"));
                        }
                        if let Some(scheme) = &f.scheme
                            && scheme != "http"
                            && scheme != "https"
                        {
                            findings.invalid(format!(
                                "{at}: redirect scheme {scheme:?} is not http or https"
                            ));
                        }
                        out.redirect = Some(Redirect {
                            scheme: f.scheme.clone(),
                            hostname: f.hostname.clone(),
                            path: f.path.as_ref().and_then(|p| path_modifier(p, at, findings)),
                            port: f.port.and_then(|p| valid_port(p, at, findings)),
                            status: u16::try_from(status).unwrap_or(302),
                        });
                    }
                    None => findings.invalid(missing()),
                }
            }
            "URLRewrite" => match &filter.url_rewrite {
                Some(f) => {
                    out.rewrite = Some(UrlRewrite {
                        hostname: f.hostname.clone(),
                        path: f.path.as_ref().and_then(|p| path_modifier(p, at, findings)),
                    })
                }
                None => findings.invalid(missing()),
            },
            "CORS" => match &filter.cors {
                Some(f) => {
                    out.cors = Some(Cors {
                        allow_origins: f.allow_origins.clone(),
                        allow_methods: f.allow_methods.clone(),
                        allow_headers: f.allow_headers.clone(),
                        expose_headers: f.expose_headers.clone(),
                        allow_credentials: f.allow_credentials.unwrap_or(false),
                        // The Gateway API default is 5 seconds.
                        max_age_seconds: Some(
                            f.max_age.and_then(|a| u32::try_from(a).ok()).unwrap_or(5),
                        ),
                    })
                }
                None => findings.invalid(missing()),
            },
            _ => {
                // ExtensionRef: Lanyard has no custom filters. The spec says requests that
                // would have gone through an unresolvable filter must get an error response.
                out.unresolvable = true;
                findings.problems.push(RefProblem {
                    reason: crate::status::reasons::INVALID_KIND,
                    message: format!("{at}: ExtensionRef filters are not supported by Lanyard; the rule answers 500"),
                });
            }
        }
    }
    if out.redirect.is_some() && out.rewrite.is_some() {
        findings.invalid(format!(
            "{at}: RequestRedirect and URLRewrite cannot be used in the same rule"
        ));
    }
    out
}

/// A header modifier. Within `set`, `add` and `remove`, names are case-insensitive and the
/// first of equivalent names wins: the CRD says later entries with an equivalent name MUST be
/// ignored (its list-map key, the exact name, lets `A` and `a` both through). Across the three
/// lists names may repeat; the proxy removes first, then sets, then adds.
// Envoy: source/common/router/header_parser.cc (HeaderParser::evaluateHeaders)
fn header_modifier(
    filter: &HeaderFilter,
    at: &RuleLabel<'_>,
    findings: &mut Findings,
) -> HeaderModifier {
    let mut valid = |name: &str| {
        let ok = is_header_name(name);
        if !ok {
            findings.invalid(format!("{at}: {name:?} is not a valid header name"));
        }
        ok
    };
    let mut set: Vec<(String, String)> = Vec::with_capacity(filter.set.len());
    for h in &filter.set {
        if valid(&h.name) && !set.iter().any(|(n, _)| n.eq_ignore_ascii_case(&h.name)) {
            set.push((h.name.clone(), h.value.clone()));
        }
    }
    let mut add: Vec<(String, String)> = Vec::with_capacity(filter.add.len());
    for h in &filter.add {
        if valid(&h.name) && !add.iter().any(|(n, _)| n.eq_ignore_ascii_case(&h.name)) {
            add.push((h.name.clone(), h.value.clone()));
        }
    }
    let mut remove: Vec<String> = Vec::with_capacity(filter.remove.len());
    for name in &filter.remove {
        if valid(name) && !remove.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            remove.push(name.clone());
        }
    }
    HeaderModifier { set, add, remove }
}

/// A response header modifier. Proxies refuse Host among response headers to change as they
/// do among request headers, and a response has no Host to rewrite: the rule is invalid.
// Envoy: source/common/router/header_parser.cc (":-prefixed or host headers may not be
// modified")
fn response_modifier(
    filter: &HeaderFilter,
    at: &RuleLabel<'_>,
    findings: &mut Findings,
) -> HeaderModifier {
    let mut modifier = header_modifier(filter, at, findings);
    let is_host = |name: &str| name.eq_ignore_ascii_case("host");
    let names = modifier.set.iter().chain(&modifier.add).map(|(n, _)| n);
    if names.chain(&modifier.remove).any(|n| is_host(n)) {
        findings.invalid(format!(
            "{at}: a ResponseHeaderModifier cannot change Host, which proxies refuse to modify"
        ));
        modifier.set.retain(|(n, _)| !is_host(n));
        modifier.add.retain(|(n, _)| !is_host(n));
        modifier.remove.retain(|n| !is_host(n));
    }
    modifier
}

/// Takes Host out of a request header modifier: proxies refuse Host among the headers to add
/// or remove (it is the `:authority` pseudo-header), and rewrite it instead. Returns the host
/// a `set` (else an `add`: Host has a single value) asks for. Removing Host is a violation:
/// a request cannot be forwarded without one.
// Envoy: source/common/router/header_parser.cc (":-prefixed or host headers may not be
// modified"; removal is checked the same way)
pub(super) fn take_host(
    modifier: &mut HeaderModifier,
    at: &RuleLabel<'_>,
    findings: &mut Findings,
) -> Option<String> {
    let is_host = |name: &str| name.eq_ignore_ascii_case("host");
    if modifier.remove.iter().any(|n| is_host(n)) {
        findings.invalid(format!(
            "{at}: a RequestHeaderModifier cannot remove Host: every forwarded request needs one"
        ));
        modifier.remove.retain(|n| !is_host(n));
    }
    let take = |list: &mut Vec<(String, String)>| {
        let host = list
            .iter()
            .find(|(n, _)| is_host(n))
            .map(|(_, v)| v.clone());
        list.retain(|(n, _)| !is_host(n));
        host
    };
    let set = take(&mut modifier.set);
    let add = take(&mut modifier.add);
    set.or(add)
}

fn mirror(
    filter: &RequestMirrorFilter,
    resolver: &Resolver<'_>,
    at: &RuleLabel<'_>,
    findings: &mut Findings,
) -> Option<Mirror> {
    let percent = match (&filter.percent, &filter.fraction) {
        (Some(_), Some(_)) => {
            findings.invalid(format!(
                "{at}: RequestMirror sets both percent and fraction"
            ));
            return None;
        }
        (Some(p), None) if (0..=100).contains(p) => f64::from(*p),
        (None, Some(f)) => {
            let denominator = f.denominator.unwrap_or(100);
            if denominator <= 0 || f.numerator < 0 || f.numerator > denominator {
                findings.invalid(format!(
                    "{at}: RequestMirror fraction {}/{denominator} is not between 0 and 1",
                    f.numerator
                ));
                return None;
            }
            f64::from(f.numerator) * 100.0 / f64::from(denominator)
        }
        (None, None) => 100.0,
        (Some(p), None) => {
            findings.invalid(format!(
                "{at}: RequestMirror percent {p} is not between 0 and 100"
            ));
            return None;
        }
    };
    match resolver.resolve(&filter.backend_ref) {
        Ok(target) => Some(Mirror { target, percent }),
        Err(problem) => {
            findings.problems.push(problem);
            None
        }
    }
}

fn path_modifier(
    modifier: &HttpPathModifier,
    at: &RuleLabel<'_>,
    findings: &mut Findings,
) -> Option<PathRewrite> {
    let (value, rewrite): (Option<&String>, fn(String) -> PathRewrite) =
        match modifier.modifier_type.as_str() {
            "ReplaceFullPath" => (modifier.replace_full_path.as_ref(), PathRewrite::Full),
            "ReplacePrefixMatch" => (modifier.replace_prefix_match.as_ref(), PathRewrite::Prefix),
            other => {
                findings.invalid(format!(
                "{at}: path modifier type {other:?} is not ReplaceFullPath or ReplacePrefixMatch"
            ));
                return None;
            }
        };
    let Some(value) = value else {
        findings.invalid(format!(
            "{at}: path modifier {} has no value",
            modifier.modifier_type
        ));
        return None;
    };
    // An empty ReplacePrefixMatch is valid: the spec's table has it remove the prefix.
    let strips_prefix = value.is_empty() && modifier.modifier_type == "ReplacePrefixMatch";
    if !strips_prefix && let Err(e) = check_path(value) {
        findings.invalid(format!("{at}: {e}"));
        return None;
    }
    Some(rewrite(value.clone()))
}

fn valid_port(port: i32, at: &RuleLabel<'_>, findings: &mut Findings) -> Option<u16> {
    match u16::try_from(port) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            findings.invalid(format!("{at}: port {port} is not between 1 and 65535"));
            None
        }
    }
}

/// Weighted backends of a rule, dropping weight 0. Unresolvable ones keep their share, which
/// the proxy answers with 500.
pub(super) fn backends(
    refs: &[HttpBackendRef],
    resolver: &Resolver<'_>,
    at: &RuleLabel<'_>,
    findings: &mut Findings,
) -> Vec<Backend> {
    let mut out = Vec::with_capacity(refs.len());
    for backend_ref in refs {
        let weight = backend_ref.weight.unwrap_or(1);
        if !(0..=1_000_000).contains(&weight) {
            findings.invalid(format!(
                "{at}: backend weight {weight} is not between 0 and 1000000"
            ));
            continue;
        }
        if backend_ref.reference.port.is_none()
            && backend_ref.reference.kind.as_deref().unwrap_or("Service") == "Service"
            && backend_ref
                .reference
                .group
                .as_deref()
                .unwrap_or("")
                .is_empty()
        {
            findings.invalid(format!(
                "{at}: backendRef {} must set a port",
                backend_ref.reference.name
            ));
            continue;
        }
        let target = match resolver.resolve(&backend_ref.reference) {
            Ok(port) => BackendTarget::Service(port),
            Err(problem) => {
                findings.problems.push(problem);
                BackendTarget::Unresolved
            }
        };
        let mut request_headers = HeaderModifier::default();
        let mut response_headers = HeaderModifier::default();
        let mut host_rewrite = None;
        for filter in &backend_ref.filters {
            match (
                filter.filter_type.as_str(),
                &filter.request_header_modifier,
                &filter.response_header_modifier,
            ) {
                ("RequestHeaderModifier", Some(f), _) => {
                    let mut modifier = header_modifier(f, at, findings);
                    host_rewrite = take_host(&mut modifier, at, findings).or(host_rewrite);
                    request_headers.extend(modifier)
                }
                ("ResponseHeaderModifier", _, Some(f)) => {
                    response_headers.extend(response_modifier(f, at, findings))
                }
                (other, _, _) => findings.invalid(format!(
                    "{at}: backendRef filter {other:?} is not supported (RequestHeaderModifier and ResponseHeaderModifier are)"
                )),
            }
        }
        if weight == 0 {
            continue;
        }
        out.push(Backend {
            target,
            weight: u32::try_from(weight).unwrap_or(0),
            request_headers,
            response_headers,
            host_rewrite,
        });
    }
    out
}

/// Header matches; the first match of a name wins, later ones with the same name are
/// ignored, as the Gateway API says.
pub(super) fn header_matches(
    matches: &[HttpHeaderMatch],
    at: &RuleLabel<'_>,
    findings: &mut Findings,
) -> Vec<HeaderMatch> {
    let mut out: Vec<HeaderMatch> = Vec::new();
    for m in matches {
        if !is_header_name(&m.name) {
            findings.invalid(format!("{at}: {:?} is not a valid header name", m.name));
            continue;
        }
        let name = m.name.to_ascii_lowercase();
        if out.iter().any(|h| h.name == name) {
            continue;
        }
        if let Some(value) = string_match(m, at, findings) {
            out.push(HeaderMatch { name, value });
        }
    }
    out
}

/// An Exact or RegularExpression string match.
pub(super) fn string_match(
    m: &HttpHeaderMatch,
    at: &RuleLabel<'_>,
    findings: &mut Findings,
) -> Option<StringMatch> {
    match m.match_type.as_deref().unwrap_or("Exact") {
        "Exact" => Some(StringMatch::Exact(m.value.clone())),
        "RegularExpression" => {
            check_regex(&m.value, at, findings)?;
            Some(StringMatch::Regex(m.value.clone()))
        }
        other => {
            findings.invalid(format!(
                "{at}: match type {other:?} is not Exact or RegularExpression"
            ));
            None
        }
    }
}

/// Checks a regular expression that reaches a proxy as Envoy will: compiled by RE2 (not Rust's
/// `regex`, which accepts `(?x)` and reads `\<` or `[a-z&&b]` differently) and within Envoy's
/// default program-size limit. gRPC compiles with RE2 too, without a size limit.
pub(super) fn check_regex(regex: &str, at: &RuleLabel<'_>, findings: &mut Findings) -> Option<()> {
    match regex_refusal(regex) {
        None => Some(()),
        Some(why) => {
            findings.invalid(format!("{at}: {why}"));
            None
        }
    }
}

/// Why Envoy would refuse `regex`, as a sentence that names it.
pub(super) fn regex_refusal(regex: &str) -> Option<String> {
    lanyard_re2::envoy_refusal(regex)
        .map(|why| format!("regular expression {regex:?} is refused by Envoy: {why}"))
}

/// The CRD's rules for path values: absolute, and no `//`, `/./`, `/../`, `%2f` or `#`.
pub(super) fn check_path(path: &str) -> Result<(), String> {
    let bad = !path.starts_with('/')
        || path.contains("//")
        || path.contains("/./")
        || path.contains("/../")
        || path
            .as_bytes()
            .windows(3)
            .any(|w| w[0] == b'%' && w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f'))
        || path.contains('#')
        || path.ends_with("/..")
        || path.ends_with("/.");
    if bad {
        Err(format!(
            "path {path:?} must start with / and contain no //, /./, /../, %2F or #"
        ))
    } else {
        Ok(())
    }
}

/// RFC 7230 token characters.
pub(super) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
