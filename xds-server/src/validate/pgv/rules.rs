//! PGV rules compiled from `validate.FieldRules`, and their checks on one value.
//!
//! The order of the checks and the messages follow protoc-gen-validate's C++ templates (the
//! validators Envoy links): templates/cc/{string,bytes,num,ltgt,const,in,enum,repeated,map,
//! duration,any}.go. The `well_known_regex` patterns are those of module/checker.go.

use std::fmt::{Display, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr};

use envoy_types::pb::google::protobuf::{Duration, Timestamp};
use envoy_types::pb::validate::{
    self as pgv, FieldRules, KnownRegex, field_rules::Type, string_rules::WellKnown,
};
use regex::Regex;

/// A rule the descriptors carry that cannot be compiled (a pattern the `regex` crate refuses).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pattern {pattern:?}: {reason}")]
pub(super) struct CompileError {
    pub pattern: String,
    pub reason: String,
}

/// The rules of one field, or of the elements, keys or values of a repeated or map field.
#[derive(Debug, Default)]
pub(super) struct ElemRules {
    /// `message.required`, or the `required` of `any`, `duration` or `timestamp`.
    pub required: bool,
    /// `message.skip`: the embedded message is not validated.
    pub skip: bool,
    pub ty: Option<TypeRules>,
}

#[derive(Debug)]
pub(super) enum TypeRules {
    Int(NumRules<i64>),
    Uint(NumRules<u64>),
    Float(NumRules<f64>),
    Bool(Option<bool>),
    Str(Box<StrRules>),
    Bytes(Box<BytesRules>),
    Enum(EnumRules),
    Repeated(Box<RepeatedRules>),
    Map(Box<MapRules>),
    Any(AnyRules),
    Duration(NumRules<Instant>),
    Timestamp(NumRules<Instant>),
}

/// Bounds, `const`, `in` and `not_in` of a number, a duration or a timestamp.
#[derive(Debug, Default)]
pub(super) struct NumRules<T> {
    pub constant: Option<T>,
    pub lt: Option<T>,
    pub lte: Option<T>,
    pub gt: Option<T>,
    pub gte: Option<T>,
    pub r#in: Vec<T>,
    pub not_in: Vec<T>,
    pub ignore_empty: bool,
}

#[derive(Debug, Default)]
pub(super) struct StrRules {
    pub constant: Option<String>,
    pub len: Option<u64>,
    pub min_len: Option<u64>,
    pub max_len: Option<u64>,
    pub len_bytes: Option<u64>,
    pub min_bytes: Option<u64>,
    pub max_bytes: Option<u64>,
    pub pattern: Option<(String, Matcher)>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
    pub contains: Option<String>,
    pub not_contains: Option<String>,
    pub r#in: Vec<String>,
    pub not_in: Vec<String>,
    pub well_known: Option<WellKnownString>,
    pub ignore_empty: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WellKnownString {
    Email,
    Hostname,
    Ip,
    Ipv4,
    Ipv6,
    Uri,
    UriRef,
    Address,
    Uuid,
}

#[derive(Debug, Default)]
pub(super) struct BytesRules {
    pub constant: Option<Vec<u8>>,
    pub len: Option<u64>,
    pub min_len: Option<u64>,
    pub max_len: Option<u64>,
    pub pattern: Option<(String, regex::bytes::Regex)>,
    pub prefix: Option<Vec<u8>>,
    pub suffix: Option<Vec<u8>>,
    pub contains: Option<Vec<u8>>,
    pub r#in: Vec<Vec<u8>>,
    pub not_in: Vec<Vec<u8>>,
    /// `ip`, `ipv4`, `ipv6`: the raw address length (4 or 16 bytes).
    pub ip: Option<WellKnownString>,
    pub ignore_empty: bool,
}

#[derive(Debug, Default)]
pub(super) struct EnumRules {
    pub constant: Option<i32>,
    pub defined_only: bool,
    pub r#in: Vec<i32>,
    pub not_in: Vec<i32>,
}

#[derive(Debug, Default)]
pub(super) struct RepeatedRules {
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub unique: bool,
    pub items: Option<ElemRules>,
    pub ignore_empty: bool,
}

#[derive(Debug, Default)]
pub(super) struct MapRules {
    pub min_pairs: Option<u64>,
    pub max_pairs: Option<u64>,
    pub no_sparse: bool,
    pub keys: Option<ElemRules>,
    pub values: Option<ElemRules>,
    pub ignore_empty: bool,
}

#[derive(Debug, Default)]
pub(super) struct AnyRules {
    pub r#in: Vec<String>,
    pub not_in: Vec<String>,
}

/// A duration or a timestamp: seconds then nanoseconds, ordered as the C++ comparison
/// operators of protobuf's time_util.h order them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Instant {
    pub seconds: i64,
    pub nanos: i32,
}

impl Instant {
    fn of_duration(d: &Duration) -> Self {
        Self {
            seconds: d.seconds,
            nanos: d.nanos,
        }
    }

    fn of_timestamp(t: &Timestamp) -> Self {
        Self {
            seconds: t.seconds,
            nanos: t.nanos,
        }
    }
}

/// Like Go's `time.Duration.String()`, which PGV's `durStr` prints (`1.5s`, `100ms`, `0s`).
impl Display for Instant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total = i128::from(self.seconds) * 1_000_000_000 + i128::from(self.nanos);
        if total == 0 {
            return f.write_str("0s");
        }
        let sign = if total < 0 { "-" } else { "" };
        let n = total.unsigned_abs();
        let frac = |v: u128, unit: u128| -> String {
            let whole = v / unit;
            let rest = v % unit;
            if rest == 0 {
                whole.to_string()
            } else {
                let digits = unit.ilog10() as usize;
                let s = format!("{rest:0digits$}");
                format!("{whole}.{}", s.trim_end_matches('0'))
            }
        };
        if n < 1_000 {
            write!(f, "{sign}{n}ns")
        } else if n < 1_000_000 {
            write!(f, "{sign}{}µs", frac(n, 1_000))
        } else if n < 1_000_000_000 {
            write!(f, "{sign}{}ms", frac(n, 1_000_000))
        } else {
            let secs = n / 1_000_000_000;
            let (h, m) = (secs / 3600, (secs % 3600) / 60);
            let s = frac(n % 60_000_000_000, 1_000_000_000);
            if h > 0 {
                write!(f, "{sign}{h}h{m}m{s}s")
            } else if m > 0 {
                write!(f, "{sign}{m}m{s}s")
            } else {
                write!(f, "{sign}{s}s")
            }
        }
    }
}

// The well-known regexes, from protoc-gen-validate module/checker.go (httpHeaderName,
// httpHeaderValue, headerString). The C++ validators match them with RE2::FullMatch. In the
// name pattern, `+-.` is a range (`+`, `,`, `-`, `.`), kept as PGV has it.
const HTTP_HEADER_NAME: &str = "^:?[0-9a-zA-Z!#$%&'*+-.^_|~`]+$";
const HTTP_HEADER_VALUE: &str = "^[^\u{0}-\u{8}\u{A}-\u{1F}\u{7F}]*$";
const HEADER_STRING: &str = "^[^\u{0}\u{A}\u{D}]*$";

/// RFC 4122 UUID, from PGV's `_uuidPattern`.
const UUID: &str = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// Compiles a pattern for a full match, as `RE2::FullMatch` applies it.
fn full_match(pattern: &str) -> Result<Regex, CompileError> {
    Regex::new(&format!(r"\A(?:{pattern})\z")).map_err(|e| CompileError {
        pattern: pattern.to_owned(),
        reason: e.to_string(),
    })
}

fn full_match_bytes(pattern: &str) -> Result<regex::bytes::Regex, CompileError> {
    regex::bytes::Regex::new(&format!(r"\A(?:{pattern})\z")).map_err(|e| CompileError {
        pattern: pattern.to_owned(),
        reason: e.to_string(),
    })
}

/// A string pattern: the well-known header patterns as the byte scans they amount to (they
/// are most of the patterns Envoy's resources carry), any other with the `regex` crate.
#[derive(Debug)]
pub(super) enum Matcher {
    Regex(Regex),
    HeaderName,
    HeaderValue,
    HeaderString,
}

impl Matcher {
    fn new(pattern: &str) -> Result<Self, CompileError> {
        Ok(match pattern {
            HTTP_HEADER_NAME => Matcher::HeaderName,
            HTTP_HEADER_VALUE => Matcher::HeaderValue,
            HEADER_STRING => Matcher::HeaderString,
            _ => Matcher::Regex(full_match(pattern)?),
        })
    }

    pub fn is_match(&self, v: &str) -> bool {
        match self {
            Matcher::Regex(re) => re.is_match(v),
            Matcher::HeaderName => {
                let name = v.strip_prefix(':').unwrap_or(v).as_bytes();
                !name.is_empty()
                    && name
                        .iter()
                        .all(|&c| c.is_ascii_alphanumeric() || b"!#$%&'*+,-.^_|~`".contains(&c))
            }
            Matcher::HeaderValue => v
                .bytes()
                .all(|c| !(c <= 0x08 || (0x0A..=0x1F).contains(&c) || c == 0x7F)),
            Matcher::HeaderString => v.bytes().all(|c| !matches!(c, 0 | b'\n' | b'\r')),
        }
    }
}

pub(super) fn uuid_regex() -> Regex {
    full_match(UUID).unwrap_or_else(|e| unreachable!("the UUID pattern compiles: {e}"))
}

impl ElemRules {
    pub fn compile(rules: &FieldRules) -> Result<Self, CompileError> {
        let mut out = ElemRules::default();
        if let Some(m) = &rules.message {
            out.required = m.required.unwrap_or(false);
            out.skip = m.skip.unwrap_or(false);
        }
        let Some(ty) = &rules.r#type else {
            return Ok(out);
        };
        out.ty = Some(match ty {
            Type::Float(r) => TypeRules::Float(num(
                r.r#const,
                r.lt,
                r.lte,
                r.gt,
                r.gte,
                &r.r#in,
                &r.not_in,
                r.ignore_empty,
                f64::from,
            )),
            Type::Double(r) => TypeRules::Float(num(
                r.r#const,
                r.lt,
                r.lte,
                r.gt,
                r.gte,
                &r.r#in,
                &r.not_in,
                r.ignore_empty,
                |v| v,
            )),
            Type::Int32(r) => TypeRules::Int(num(
                r.r#const,
                r.lt,
                r.lte,
                r.gt,
                r.gte,
                &r.r#in,
                &r.not_in,
                r.ignore_empty,
                i64::from,
            )),
            Type::Int64(r) => TypeRules::Int(num(
                r.r#const,
                r.lt,
                r.lte,
                r.gt,
                r.gte,
                &r.r#in,
                &r.not_in,
                r.ignore_empty,
                |v| v,
            )),
            Type::Sint32(r) => TypeRules::Int(num(
                r.r#const,
                r.lt,
                r.lte,
                r.gt,
                r.gte,
                &r.r#in,
                &r.not_in,
                r.ignore_empty,
                i64::from,
            )),
            Type::Sint64(r) => TypeRules::Int(num(
                r.r#const,
                r.lt,
                r.lte,
                r.gt,
                r.gte,
                &r.r#in,
                &r.not_in,
                r.ignore_empty,
                |v| v,
            )),
            Type::Sfixed32(r) => TypeRules::Int(num(
                r.r#const,
                r.lt,
                r.lte,
                r.gt,
                r.gte,
                &r.r#in,
                &r.not_in,
                r.ignore_empty,
                i64::from,
            )),
            Type::Sfixed64(r) => TypeRules::Int(num(
                r.r#const,
                r.lt,
                r.lte,
                r.gt,
                r.gte,
                &r.r#in,
                &r.not_in,
                r.ignore_empty,
                |v| v,
            )),
            Type::Uint32(r) => TypeRules::Uint(num(
                r.r#const,
                r.lt,
                r.lte,
                r.gt,
                r.gte,
                &r.r#in,
                &r.not_in,
                r.ignore_empty,
                u64::from,
            )),
            Type::Uint64(r) => TypeRules::Uint(num(
                r.r#const,
                r.lt,
                r.lte,
                r.gt,
                r.gte,
                &r.r#in,
                &r.not_in,
                r.ignore_empty,
                |v| v,
            )),
            Type::Fixed32(r) => TypeRules::Uint(num(
                r.r#const,
                r.lt,
                r.lte,
                r.gt,
                r.gte,
                &r.r#in,
                &r.not_in,
                r.ignore_empty,
                u64::from,
            )),
            Type::Fixed64(r) => TypeRules::Uint(num(
                r.r#const,
                r.lt,
                r.lte,
                r.gt,
                r.gte,
                &r.r#in,
                &r.not_in,
                r.ignore_empty,
                |v| v,
            )),
            Type::Bool(r) => TypeRules::Bool(r.r#const),
            Type::String(r) => TypeRules::Str(Box::new(StrRules::compile(r)?)),
            Type::Bytes(r) => TypeRules::Bytes(Box::new(BytesRules::compile(r)?)),
            Type::Enum(r) => TypeRules::Enum(EnumRules {
                constant: r.r#const,
                defined_only: r.defined_only.unwrap_or(false),
                r#in: r.r#in.clone(),
                not_in: r.not_in.clone(),
            }),
            Type::Repeated(r) => TypeRules::Repeated(Box::new(RepeatedRules {
                min_items: r.min_items,
                max_items: r.max_items,
                unique: r.unique.unwrap_or(false),
                items: r.items.as_deref().map(ElemRules::compile).transpose()?,
                ignore_empty: r.ignore_empty.unwrap_or(false),
            })),
            Type::Map(r) => TypeRules::Map(Box::new(MapRules {
                min_pairs: r.min_pairs,
                max_pairs: r.max_pairs,
                no_sparse: r.no_sparse.unwrap_or(false),
                keys: r.keys.as_deref().map(ElemRules::compile).transpose()?,
                values: r.values.as_deref().map(ElemRules::compile).transpose()?,
                ignore_empty: r.ignore_empty.unwrap_or(false),
            })),
            Type::Any(r) => {
                out.required |= r.required.unwrap_or(false);
                TypeRules::Any(AnyRules {
                    r#in: r.r#in.clone(),
                    not_in: r.not_in.clone(),
                })
            }
            Type::Duration(r) => {
                out.required |= r.required.unwrap_or(false);
                let d = |v: &Option<Duration>| v.as_ref().map(Instant::of_duration);
                TypeRules::Duration(NumRules {
                    constant: d(&r.r#const),
                    lt: d(&r.lt),
                    lte: d(&r.lte),
                    gt: d(&r.gt),
                    gte: d(&r.gte),
                    r#in: r.r#in.iter().map(Instant::of_duration).collect(),
                    not_in: r.not_in.iter().map(Instant::of_duration).collect(),
                    ignore_empty: false,
                })
            }
            Type::Timestamp(r) => {
                out.required |= r.required.unwrap_or(false);
                // `lt_now`, `gt_now` and `within` depend on the clock; PGV's C++ templates do
                // not implement them (templates/cc/timestamp.go), so no Envoy proto uses them.
                let t = |v: &Option<Timestamp>| v.as_ref().map(Instant::of_timestamp);
                TypeRules::Timestamp(NumRules {
                    constant: t(&r.r#const),
                    lt: t(&r.lt),
                    lte: t(&r.lte),
                    gt: t(&r.gt),
                    gte: t(&r.gte),
                    ..NumRules::default()
                })
            }
        });
        Ok(out)
    }
}

#[allow(clippy::too_many_arguments)]
fn num<S: Copy, T>(
    constant: Option<S>,
    lt: Option<S>,
    lte: Option<S>,
    gt: Option<S>,
    gte: Option<S>,
    r#in: &[S],
    not_in: &[S],
    ignore_empty: Option<bool>,
    f: impl Fn(S) -> T,
) -> NumRules<T> {
    NumRules {
        constant: constant.map(&f),
        lt: lt.map(&f),
        lte: lte.map(&f),
        gt: gt.map(&f),
        gte: gte.map(&f),
        r#in: r#in.iter().copied().map(&f).collect(),
        not_in: not_in.iter().copied().map(&f).collect(),
        ignore_empty: ignore_empty.unwrap_or(false),
    }
}

impl StrRules {
    fn compile(r: &pgv::StringRules) -> Result<Self, CompileError> {
        let mut pattern = r.pattern.clone();
        let mut well_known = None;
        match r.well_known {
            Some(WellKnown::Email(true)) => well_known = Some(WellKnownString::Email),
            Some(WellKnown::Hostname(true)) => well_known = Some(WellKnownString::Hostname),
            Some(WellKnown::Ip(true)) => well_known = Some(WellKnownString::Ip),
            Some(WellKnown::Ipv4(true)) => well_known = Some(WellKnownString::Ipv4),
            Some(WellKnown::Ipv6(true)) => well_known = Some(WellKnownString::Ipv6),
            Some(WellKnown::Uri(true)) => well_known = Some(WellKnownString::Uri),
            Some(WellKnown::UriRef(true)) => well_known = Some(WellKnownString::UriRef),
            Some(WellKnown::Address(true)) => well_known = Some(WellKnownString::Address),
            Some(WellKnown::Uuid(true)) => well_known = Some(WellKnownString::Uuid),
            Some(WellKnown::WellKnownRegex(k)) => {
                // PGV: module/checker.go (checkWellKnownRegex) replaces the rule by a pattern;
                // `strict: false` loosens both header regexes to "no NUL, CR or LF".
                let strict = r.strict.unwrap_or(true);
                pattern = match KnownRegex::try_from(k) {
                    Ok(KnownRegex::HttpHeaderName) if strict => Some(HTTP_HEADER_NAME.to_owned()),
                    Ok(KnownRegex::HttpHeaderValue) if strict => Some(HTTP_HEADER_VALUE.to_owned()),
                    Ok(KnownRegex::HttpHeaderName | KnownRegex::HttpHeaderValue) => {
                        Some(HEADER_STRING.to_owned())
                    }
                    Ok(KnownRegex::Unknown) | Err(_) => pattern,
                };
            }
            Some(_) | None => {}
        }
        let pattern = match pattern {
            Some(p) => {
                let m = Matcher::new(&p)?;
                Some((p, m))
            }
            None => None,
        };
        Ok(Self {
            constant: r.r#const.clone(),
            len: r.len,
            min_len: r.min_len,
            max_len: r.max_len,
            len_bytes: r.len_bytes,
            min_bytes: r.min_bytes,
            max_bytes: r.max_bytes,
            pattern,
            prefix: r.prefix.clone(),
            suffix: r.suffix.clone(),
            contains: r.contains.clone(),
            not_contains: r.not_contains.clone(),
            r#in: r.r#in.clone(),
            not_in: r.not_in.clone(),
            well_known,
            ignore_empty: r.ignore_empty.unwrap_or(false),
        })
    }
}

impl BytesRules {
    fn compile(r: &pgv::BytesRules) -> Result<Self, CompileError> {
        use pgv::bytes_rules::WellKnown as B;
        let pattern = match &r.pattern {
            Some(p) => Some((p.clone(), full_match_bytes(p)?)),
            None => None,
        };
        Ok(Self {
            constant: r.r#const.clone(),
            len: r.len,
            min_len: r.min_len,
            max_len: r.max_len,
            pattern,
            prefix: r.prefix.clone(),
            suffix: r.suffix.clone(),
            contains: r.contains.clone(),
            r#in: r.r#in.clone(),
            not_in: r.not_in.clone(),
            ip: match r.well_known {
                Some(B::Ip(true)) => Some(WellKnownString::Ip),
                Some(B::Ipv4(true)) => Some(WellKnownString::Ipv4),
                Some(B::Ipv6(true)) => Some(WellKnownString::Ipv6),
                _ => None,
            },
            ignore_empty: r.ignore_empty.unwrap_or(false),
        })
    }
}

/// A string as PGV's `lit` prints it: quoted, with C escapes.
pub(super) fn lit(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7F}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn lit_bytes(b: &[u8]) -> String {
    lit(&String::from_utf8_lossy(b))
}

/// A list as Go's `%v` prints a slice: `[a b c]`.
fn list<T: Display>(items: &[T]) -> String {
    let mut out = String::from("[");
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{v}");
    }
    out.push(']');
    out
}

/// PGV: templates/cc/ltgt.go. When both bounds are set, `lt > gt` means "inside" and
/// `lt <= gt` means "outside" the range.
fn ltgt<T: PartialOrd + Display>(r: &NumRules<T>, v: &T) -> Option<String> {
    match (&r.lt, &r.lte, &r.gt, &r.gte) {
        (Some(lt), _, Some(gt), _) => {
            if lt > gt {
                (v <= gt || v >= lt).then(|| format!("value must be inside range ({gt}, {lt})"))
            } else {
                (v >= lt && v <= gt).then(|| format!("value must be outside range [{lt}, {gt}]"))
            }
        }
        (Some(lt), _, None, Some(gte)) => {
            if lt > gte {
                (v < gte || v >= lt).then(|| format!("value must be inside range [{gte}, {lt})"))
            } else {
                (v >= lt && v < gte).then(|| format!("value must be outside range [{lt}, {gte})"))
            }
        }
        (Some(lt), _, None, None) => (v >= lt).then(|| format!("value must be less than {lt}")),
        (None, Some(lte), Some(gt), _) => {
            if lte > gt {
                (v <= gt || v > lte).then(|| format!("value must be inside range ({gt}, {lte}]"))
            } else {
                (v > lte && v <= gt).then(|| format!("value must be outside range ({lte}, {gt}]"))
            }
        }
        (None, Some(lte), None, Some(gte)) => {
            if lte > gte {
                (v < gte || v > lte).then(|| format!("value must be inside range [{gte}, {lte}]"))
            } else {
                (v > lte && v < gte).then(|| format!("value must be outside range ({lte}, {gte})"))
            }
        }
        (None, Some(lte), None, None) => {
            (v > lte).then(|| format!("value must be less than or equal to {lte}"))
        }
        (None, None, Some(gt), _) => (v <= gt).then(|| format!("value must be greater than {gt}")),
        (None, None, None, Some(gte)) => {
            (v < gte).then(|| format!("value must be greater than or equal to {gte}"))
        }
        (None, None, None, None) => None,
    }
}

impl<T: PartialOrd + Display + Default> NumRules<T> {
    /// PGV: templates/cc/num.go (and duration.go, whose order is const, range, in).
    pub fn check(&self, v: &T, report: &mut impl FnMut(String)) {
        if self.ignore_empty && *v == T::default() {
            return;
        }
        if let Some(c) = &self.constant
            && v != c
        {
            report(format!("value must equal {c}"));
        }
        if let Some(m) = ltgt(self, v) {
            report(m);
        }
        if !self.r#in.is_empty() {
            if !self.r#in.iter().any(|x| x == v) {
                report(format!("value must be in list {}", list(&self.r#in)));
            }
        } else if self.not_in.iter().any(|x| x == v) {
            report(format!("value must not be in list {}", list(&self.not_in)));
        }
    }
}

impl NumRules<Instant> {
    /// PGV: templates/cc/duration.go: a duration out of protobuf's range is refused first.
    pub fn check_duration(&self, v: Instant, report: &mut impl FnMut(String)) {
        // protobuf: src/google/protobuf/util/time_util.h (kDurationMaxSeconds: 10000 years).
        const MAX_SECONDS: i64 = 315_576_000_000;
        if !(-999_999_999..=999_999_999).contains(&v.nanos)
            || !(-MAX_SECONDS..=MAX_SECONDS).contains(&v.seconds)
        {
            report("value is not a valid duration".to_owned());
            return;
        }
        self.check(&v, report);
    }
}

impl EnumRules {
    /// PGV: templates/cc/enum.go; `defined` are the numbers the enum declares.
    pub fn check(&self, v: i32, defined: &[i32], report: &mut impl FnMut(String)) {
        if let Some(c) = self.constant
            && v != c
        {
            report(format!("value must equal {c}"));
        }
        if !self.r#in.is_empty() {
            if !self.r#in.contains(&v) {
                report(format!("value must be in list {}", list(&self.r#in)));
            }
        } else if self.not_in.contains(&v) {
            report(format!("value must not be in list {}", list(&self.not_in)));
        }
        if self.defined_only && defined.binary_search(&v).is_err() {
            report("value must be one of the defined enum values".to_owned());
        }
    }
}

/// Characters as PGV's `Utf8Len` counts them (the leading byte of each sequence).
fn utf8_len(s: &str) -> u64 {
    s.chars().count() as u64
}

/// PGV: validate/validate.h (IsHostname): dot-separated labels of letters, digits and inner
/// hyphens, 63 bytes each, 253 in all; a trailing dot is allowed.
pub(super) fn is_hostname(s: &str) -> bool {
    if s.len() > 253 {
        return false;
    }
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() {
        return true;
    }
    s.split('.').all(|part| {
        !part.is_empty()
            && part.len() <= 63
            && !part.starts_with('-')
            && !part.ends_with('-')
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

fn is_ipv4(s: &str) -> bool {
    s.parse::<Ipv4Addr>().is_ok()
}

fn is_ipv6(s: &str) -> bool {
    s.parse::<Ipv6Addr>().is_ok()
}

/// An absolute URI (RFC 3986 scheme, then anything without spaces or controls); PGV's C++
/// templates leave `uri` unimplemented, so no Envoy proto relies on the details.
fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && is_uri_ref(rest)
}

fn is_uri_ref(s: &str) -> bool {
    !s.chars().any(|c| c.is_control() || c == ' ')
}

fn is_email(s: &str) -> bool {
    s.len() <= 254
        && s.rsplit_once('@').is_some_and(|(local, host)| {
            !local.is_empty() && local.len() <= 64 && !host.is_empty() && is_hostname(host)
        })
}

impl StrRules {
    /// PGV: templates/cc/string.go, in its order.
    pub fn check(&self, v: &str, uuid: &Regex, report: &mut impl FnMut(String)) {
        if self.ignore_empty && v.is_empty() {
            return;
        }
        if let Some(c) = &self.constant
            && v != c
        {
            report(format!("value must equal {}", lit(c)));
        }
        if !self.r#in.is_empty() {
            if !self.r#in.iter().any(|x| x == v) {
                report(format!("value must be in list {}", list(&self.r#in)));
            }
        } else if self.not_in.iter().any(|x| x == v) {
            report(format!("value must not be in list {}", list(&self.not_in)));
        }
        let chars = || utf8_len(v);
        match (self.len, self.min_len, self.max_len) {
            (Some(n), _, _) => {
                if chars() != n {
                    report(format!("value must be {n} characters"));
                }
            }
            (None, Some(min), Some(max)) if min == max => {
                if chars() != min {
                    report(format!("value must be {min} characters"));
                }
            }
            (None, Some(min), Some(max)) => {
                let n = chars();
                if n < min || n > max {
                    report(format!(
                        "value must have between {min} and {max} characters inclusive"
                    ));
                }
            }
            (None, Some(min), None) => {
                if chars() < min {
                    report(format!("value length must be at least {min} characters"));
                }
            }
            (None, None, Some(max)) => {
                if chars() > max {
                    report(format!("value length must be at most {max} characters"));
                }
            }
            (None, None, None) => {}
        }
        check_byte_len(
            v.len() as u64,
            self.len_bytes,
            self.min_bytes,
            self.max_bytes,
            report,
        );
        if let Some(p) = &self.prefix
            && !v.starts_with(p.as_str())
        {
            report(format!("value does not have prefix {}", lit(p)));
        }
        if let Some(s) = &self.suffix
            && !v.ends_with(s.as_str())
        {
            report(format!("value does not have suffix {}", lit(s)));
        }
        if let Some(c) = &self.contains
            && !v.contains(c.as_str())
        {
            report(format!("value does not contain substring {}", lit(c)));
        }
        if let Some(c) = &self.not_contains
            && v.contains(c.as_str())
        {
            report(format!("value contains substring {}", lit(c)));
        }
        if let Some((text, re)) = &self.pattern
            && !re.is_match(v)
        {
            report(format!("value does not match regex pattern {}", lit(text)));
        }
        let failed = match self.well_known {
            None => None,
            Some(WellKnownString::Ip) => {
                (!is_ipv4(v) && !is_ipv6(v)).then_some("value must be a valid IP Address")
            }
            Some(WellKnownString::Ipv4) => {
                (!is_ipv4(v)).then_some("value must be a valid IPv4 Address")
            }
            Some(WellKnownString::Ipv6) => {
                (!is_ipv6(v)).then_some("value must be a valid IPv6 Address")
            }
            Some(WellKnownString::Email) => {
                (!is_email(v)).then_some("value must be a valid email address")
            }
            Some(WellKnownString::Address) => (!is_hostname(v) && !is_ipv4(v) && !is_ipv6(v))
                .then_some("value must be an ip address, or a hostname."),
            Some(WellKnownString::Hostname) => {
                (!is_hostname(v)).then_some("value must be a valid hostname")
            }
            Some(WellKnownString::Uri) => (!is_uri(v)).then_some("value must be a valid URI"),
            Some(WellKnownString::UriRef) => {
                (!is_uri_ref(v)).then_some("value must be a valid URI")
            }
            Some(WellKnownString::Uuid) => {
                (!uuid.is_match(v)).then_some("value must be a valid UUID")
            }
        };
        if let Some(m) = failed {
            report(m.to_owned());
        }
    }
}

/// PGV: templates/cc/string.go (`len_bytes`, `min_bytes`, `max_bytes`) and bytes.go.
fn check_byte_len(
    n: u64,
    exact: Option<u64>,
    min: Option<u64>,
    max: Option<u64>,
    report: &mut impl FnMut(String),
) {
    match (exact, min, max) {
        (Some(e), _, _) => {
            if n != e {
                report(format!("value length must be {e} bytes"));
            }
        }
        (None, Some(min), Some(max)) if min == max => {
            if n != min {
                report(format!("value length must be {min} bytes"));
            }
        }
        (None, Some(min), Some(max)) => {
            if n < min || n > max {
                report(format!(
                    "value length must be between {min} and {max} bytes, inclusive"
                ));
            }
        }
        (None, Some(min), None) => {
            if n < min {
                report(format!("value length must be at least {min} bytes"));
            }
        }
        (None, None, Some(max)) => {
            if n > max {
                report(format!("value length must be at most {max} bytes"));
            }
        }
        (None, None, None) => {}
    }
}

impl BytesRules {
    /// PGV: templates/cc/bytes.go, in its order.
    pub fn check(&self, v: &[u8], report: &mut impl FnMut(String)) {
        if self.ignore_empty && v.is_empty() {
            return;
        }
        if let Some(c) = &self.constant
            && v != c.as_slice()
        {
            report(format!("value must equal {}", lit_bytes(c)));
        }
        if !self.r#in.is_empty() {
            if !self.r#in.iter().any(|x| x == v) {
                let shown: Vec<String> = self.r#in.iter().map(|b| lit_bytes(b)).collect();
                report(format!("value must be in list {}", list(&shown)));
            }
        } else if self.not_in.iter().any(|x| x == v) {
            let shown: Vec<String> = self.not_in.iter().map(|b| lit_bytes(b)).collect();
            report(format!("value must not be in list {}", list(&shown)));
        }
        check_byte_len(v.len() as u64, self.len, self.min_len, self.max_len, report);
        if let Some(p) = &self.prefix
            && !v.starts_with(p)
        {
            report(format!("value does not have prefix {}", lit_bytes(p)));
        }
        if let Some(s) = &self.suffix
            && !v.ends_with(s)
        {
            report(format!("value does not have suffix {}", lit_bytes(s)));
        }
        if let Some(c) = &self.contains
            && !c.is_empty()
            && !v.windows(c.len()).any(|w| w == c.as_slice())
        {
            report(format!("value does not contain substring {}", lit_bytes(c)));
        }
        if let Some((text, re)) = &self.pattern
            && !re.is_match(v)
        {
            report(format!("value does not match regex pattern {}", lit(text)));
        }
        // A raw address: 4 bytes for IPv4, 16 for IPv6 (PGV's Go templates, bytes.go).
        let failed = match self.ip {
            Some(WellKnownString::Ip) => {
                (v.len() != 4 && v.len() != 16).then_some("value must be a valid IP address")
            }
            Some(WellKnownString::Ipv4) => {
                (v.len() != 4).then_some("value must be a valid IPv4 address")
            }
            Some(WellKnownString::Ipv6) => {
                (v.len() != 16).then_some("value must be a valid IPv6 address")
            }
            _ => None,
        };
        if let Some(m) = failed {
            report(m.to_owned());
        }
    }
}

/// PGV: templates/cc/repeated.go and map.go: the count rules of a repeated field or a map.
pub(super) fn check_count(
    n: u64,
    min: Option<u64>,
    max: Option<u64>,
    noun: (&str, &str),
    report: &mut impl FnMut(String),
) {
    let (one, many) = noun;
    // PGV tests `min_items` for being non-zero and `max_items` for being set.
    let failed = match (min.filter(|&m| m > 0), max) {
        (Some(min), Some(max)) if min == max => {
            (n != min).then(|| format!("value must contain exactly {min} {one}"))
        }
        (Some(min), Some(max)) => (n < min || n > max)
            .then(|| format!("value must contain between {min} and {max} {many}, inclusive")),
        (Some(min), None) => (n < min).then(|| format!("value must contain at least {min} {one}")),
        (None, Some(max)) => {
            (n > max).then(|| format!("value must contain no more than {max} {one}"))
        }
        (None, None) => None,
    };
    if let Some(m) = failed {
        report(m);
    }
}

impl AnyRules {
    /// PGV: templates/cc/any.go.
    pub fn check(&self, type_url: &str, report: &mut impl FnMut(String)) {
        if !self.r#in.is_empty() {
            if !self.r#in.iter().any(|x| x == type_url) {
                report(format!("type URL must be in list {}", list(&self.r#in)));
            }
        } else if self.not_in.iter().any(|x| x == type_url) {
            report(format!(
                "type URL must not be in list {}",
                list(&self.not_in)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_num<T>(f: impl FnOnce(&mut NumRules<T>)) -> NumRules<T>
    where
        NumRules<T>: Default,
    {
        let mut r = NumRules::default();
        f(&mut r);
        r
    }

    fn run<T: PartialOrd + Display + Default>(r: &NumRules<T>, v: T) -> Vec<String> {
        let mut out = Vec::new();
        r.check(&v, &mut |m| out.push(m));
        out
    }

    #[test]
    fn ranges_inside_and_outside_follow_pgv() {
        let inside = mk_num::<i64>(|r| {
            r.gt = Some(0);
            r.lt = Some(10);
        });
        assert!(run(&inside, 5).is_empty());
        assert_eq!(run(&inside, 10), ["value must be inside range (0, 10)"]);
        let outside = mk_num::<i64>(|r| {
            r.lt = Some(0);
            r.gt = Some(10);
        });
        assert!(run(&outside, -1).is_empty());
        assert_eq!(run(&outside, 5), ["value must be outside range [0, 10]"]);
        let gte_lte = mk_num::<u64>(|r| {
            r.gte = Some(1);
            r.lte = Some(100);
        });
        assert_eq!(run(&gte_lte, 0), ["value must be inside range [1, 100]"]);
        let gt = mk_num::<f64>(|r| r.gt = Some(0.0));
        assert_eq!(run(&gt, 0.0), ["value must be greater than 0"]);
        let ignore = mk_num::<u64>(|r| {
            r.gte = Some(5);
            r.ignore_empty = true;
        });
        assert!(run(&ignore, 0).is_empty());
        assert_eq!(
            run(&ignore, 1),
            ["value must be greater than or equal to 5"]
        );
        let set = mk_num::<i64>(|r| r.r#in = vec![1, 2]);
        assert_eq!(run(&set, 3), ["value must be in list [1 2]"]);
    }

    #[test]
    fn durations_print_like_go() {
        let d = |seconds, nanos| Instant { seconds, nanos }.to_string();
        assert_eq!(d(0, 0), "0s");
        assert_eq!(d(0, 1_000_000), "1ms");
        assert_eq!(d(1, 500_000_000), "1.5s");
        assert_eq!(d(3600, 0), "1h0m0s");
        assert_eq!(d(0, 1500), "1.5µs");
    }

    #[test]
    fn hostnames_follow_pgv() {
        assert!(is_hostname("a.example.com"));
        assert!(is_hostname("a.example.com."));
        assert!(!is_hostname("a..b"));
        assert!(!is_hostname("-a.b"));
        assert!(!is_hostname("a_b"));
        assert!(!is_hostname(&"a".repeat(64)));
    }

    #[test]
    fn header_name_regex_is_pgv_s() {
        let re = full_match(HTTP_HEADER_NAME).expect("compiles");
        assert!(re.is_match(":authority"));
        assert!(re.is_match("x-b3-traceid"));
        // `+-.` is a range in PGV's class, so a comma passes.
        assert!(re.is_match("a,b"));
        assert!(!re.is_match("a b"));
        assert!(!re.is_match(""));
        let value = full_match(HTTP_HEADER_VALUE).expect("compiles");
        assert!(value.is_match("a\tb"));
        assert!(!value.is_match("a\nb"));
        let loose = full_match(HEADER_STRING).expect("compiles");
        assert!(loose.is_match("a\u{1}b"));
        assert!(!loose.is_match("a\rb"));
    }

    fn str_rules(r: pgv::StringRules) -> StrRules {
        StrRules::compile(&r).expect("compiles")
    }

    fn run_str(r: &StrRules, v: &str) -> Vec<String> {
        let mut out = Vec::new();
        r.check(v, &uuid_regex(), &mut |m| out.push(m));
        out
    }

    #[test]
    fn string_rules_follow_pgv_s_order_and_wording() {
        let r = str_rules(pgv::StringRules {
            r#const: Some("abc".into()),
            min_len: Some(2),
            max_len: Some(3),
            prefix: Some("a".into()),
            suffix: Some("c".into()),
            contains: Some("b".into()),
            not_contains: Some("x".into()),
            ..Default::default()
        });
        assert!(run_str(&r, "abc").is_empty());
        assert_eq!(
            run_str(&r, "xyzw"),
            [
                r#"value must equal "abc""#,
                "value must have between 2 and 3 characters inclusive",
                r#"value does not have prefix "a""#,
                r#"value does not have suffix "c""#,
                r#"value does not contain substring "b""#,
                r#"value contains substring "x""#,
            ]
        );
        // Characters, not bytes, for the `len` family; bytes for `*_bytes`.
        let r = str_rules(pgv::StringRules {
            len: Some(1),
            max_bytes: Some(1),
            ..Default::default()
        });
        assert_eq!(run_str(&r, "é"), ["value length must be at most 1 bytes"]);
        let r = str_rules(pgv::StringRules {
            r#in: vec!["a".into(), "b".into()],
            ..Default::default()
        });
        assert_eq!(run_str(&r, "c"), ["value must be in list [a b]"]);
        let r = str_rules(pgv::StringRules {
            pattern: Some("^[a-z]+$".into()),
            ignore_empty: Some(true),
            ..Default::default()
        });
        assert!(run_str(&r, "").is_empty());
        assert_eq!(
            run_str(&r, "A"),
            [r#"value does not match regex pattern "^[a-z]+$""#]
        );
    }

    #[test]
    fn well_known_string_formats() {
        let wk = |w: WellKnown| {
            str_rules(pgv::StringRules {
                well_known: Some(w),
                ..Default::default()
            })
        };
        assert!(run_str(&wk(WellKnown::Ip(true)), "fd00::1").is_empty());
        assert_eq!(
            run_str(&wk(WellKnown::Ipv4(true)), "fd00::1"),
            ["value must be a valid IPv4 Address"]
        );
        assert_eq!(
            run_str(&wk(WellKnown::Ipv6(true)), "10.0.0.1"),
            ["value must be a valid IPv6 Address"]
        );
        assert!(run_str(&wk(WellKnown::Address(true)), "cart.shop.svc").is_empty());
        assert_eq!(
            run_str(&wk(WellKnown::Address(true)), "a b"),
            ["value must be an ip address, or a hostname."]
        );
        assert!(
            run_str(
                &wk(WellKnown::Uuid(true)),
                "123e4567-e89b-12d3-a456-426614174000"
            )
            .is_empty()
        );
        assert_eq!(
            run_str(&wk(WellKnown::Uuid(true)), "123"),
            ["value must be a valid UUID"]
        );
        assert_eq!(
            run_str(&wk(WellKnown::Email(true)), "nobody"),
            ["value must be a valid email address"]
        );
        assert_eq!(
            run_str(&wk(WellKnown::Uri(true)), "/relative"),
            ["value must be a valid URI"]
        );
        assert!(run_str(&wk(WellKnown::UriRef(true)), "/relative").is_empty());
    }

    #[test]
    fn bytes_enum_any_and_duration_rules() {
        let b = BytesRules::compile(&pgv::BytesRules {
            min_len: Some(1),
            prefix: Some(b"a".to_vec()),
            well_known: Some(pgv::bytes_rules::WellKnown::Ipv4(true)),
            ..Default::default()
        })
        .expect("compiles");
        let mut out = Vec::new();
        b.check(b"", &mut |m| out.push(m));
        assert_eq!(
            out,
            [
                "value length must be at least 1 bytes",
                r#"value does not have prefix "a""#,
                "value must be a valid IPv4 address",
            ]
        );

        let e = EnumRules {
            constant: Some(1),
            defined_only: true,
            ..Default::default()
        };
        let mut out = Vec::new();
        e.check(7, &[0, 1, 2], &mut |m| out.push(m));
        assert_eq!(
            out,
            [
                "value must equal 1",
                "value must be one of the defined enum values"
            ]
        );

        let a = AnyRules {
            r#in: vec!["type.googleapis.com/a.B".into()],
            ..Default::default()
        };
        let mut out = Vec::new();
        a.check("type.googleapis.com/c.D", &mut |m| out.push(m));
        assert_eq!(out, ["type URL must be in list [type.googleapis.com/a.B]"]);

        let d = mk_num::<Instant>(|r| {
            r.constant = Some(Instant {
                seconds: 1,
                nanos: 0,
            })
        });
        let mut out = Vec::new();
        d.check_duration(
            Instant {
                seconds: 0,
                nanos: 2_000_000_000,
            },
            &mut |m| out.push(m),
        );
        d.check_duration(Instant::default(), &mut |m| out.push(m));
        assert_eq!(
            out,
            ["value is not a valid duration", "value must equal 1s"]
        );
    }

    #[test]
    fn header_matchers_equal_their_regexes() {
        let mut alphabet: Vec<String> = (0u8..0x80).map(|b| char::from(b).to_string()).collect();
        alphabet.extend(["é".to_owned(), "\u{80}".to_owned(), "\u{7FF}".to_owned()]);
        let mut inputs = vec![String::new()];
        for a in &alphabet {
            inputs.push(a.clone());
            for b in &alphabet {
                inputs.push(format!("{a}{b}"));
            }
        }
        for pattern in [HTTP_HEADER_NAME, HTTP_HEADER_VALUE, HEADER_STRING] {
            let fast = Matcher::new(pattern).expect("known");
            assert!(!matches!(fast, Matcher::Regex(_)));
            let re = full_match(pattern).expect("compiles");
            for v in &inputs {
                assert_eq!(fast.is_match(v), re.is_match(v), "{pattern:?} on {v:?}");
            }
        }
    }
}
