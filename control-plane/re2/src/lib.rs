//! RE2, the regular expression engine Envoy and gRPC compile route regexes with, called through
//! a small C++ shim (src/shim.cc) over the system's libre2, linked statically.
//!
//! Rust's `regex` crate is not RE2: it accepts `(?x)` and `(?R)`-like syntax RE2 refuses, reads
//! `[a-z&&b]` as an intersection where RE2 reads `&` literally, and has no notion of RE2's
//! program size, which Envoy limits. What a proxy will compile is checked here with RE2 itself.

use std::fmt;

#[allow(unsafe_code)]
mod ffi;

/// Envoy's default `re2.max_program_size.error_level`: a regex whose RE2 program is larger is
/// refused. Envoy: source/common/common/regex.cc (CompiledGoogleReMatcher::CompiledGoogleReMatcher).
pub const ENVOY_MAX_PROGRAM_SIZE: usize = 100;

/// A regular expression RE2 refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// RE2's own error text, e.g. `invalid perl operator: (?x`.
    #[error("{0}")]
    Syntax(String),
    /// C++ could not allocate the compiled regex.
    #[error("out of memory compiling the regular expression")]
    OutOfMemory,
}

/// A compiled RE2 regular expression.
///
/// Compiled with `RE2::Quiet`, as Envoy does (source/common/common/regex.cc,
/// CompiledGoogleReMatcher). gRPC compiles with RE2's default options (src/core/util/matchers.cc,
/// StringMatcher::Create), which differ only in logging errors; both read patterns and text as
/// UTF-8 with leftmost-first semantics, and gRPC sets no program-size limit.
pub struct Regex {
    re: ffi::Re2,
    pattern: String,
}

impl Regex {
    /// Compiles `pattern`. NUL bytes are part of the pattern, as in C++'s `std::string`.
    pub fn new(pattern: &str) -> Result<Regex, Error> {
        let re = ffi::Re2::new(pattern.as_bytes()).ok_or(Error::OutOfMemory)?;
        if !re.ok() {
            return Err(Error::Syntax(re.error()));
        }
        Ok(Regex {
            re,
            pattern: pattern.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// RE2's `ProgramSize()`: the number of instructions of the compiled program, what Envoy
    /// compares with `re2.max_program_size.error_level`.
    pub fn program_size(&self) -> usize {
        usize::try_from(self.re.program_size()).unwrap_or(0)
    }

    /// Whether the regex matches all of `text`: what Envoy's `safe_regex` matchers and gRPC's
    /// `StringMatcher` do.
    pub fn full_match(&self, text: &str) -> bool {
        self.full_match_bytes(text.as_bytes())
    }

    /// Whether the regex matches somewhere in `text`.
    pub fn partial_match(&self, text: &str) -> bool {
        self.partial_match_bytes(text.as_bytes())
    }

    /// [`Regex::full_match`] on raw bytes, as a proxy sees a header value: bytes that are not
    /// UTF-8 match no character class or `.`. `false` if RE2 ran out of memory.
    pub fn full_match_bytes(&self, text: &[u8]) -> bool {
        self.re.full_match(text).unwrap_or(false)
    }

    /// RE2's `GlobalReplace`: every non-overlapping match in `text` replaced by `rewrite`, in
    /// which `\0` to `\9` stand for capture groups and `\\` for a backslash. What Envoy does
    /// for `regex_rewrite` (source/common/common/regex.h, CompiledGoogleReMatcher::replaceAll,
    /// Envoy v1.36). As RE2 does, a rewrite naming a group the regex does not have replaces
    /// nothing, and an invalid escape ends that replacement's text early. `None` if RE2 ran out
    /// of memory or the result is not UTF-8.
    pub fn replace_all(&self, text: &str, rewrite: &str) -> Option<String> {
        let (bytes, _) = self
            .re
            .global_replace(text.as_bytes(), rewrite.as_bytes())?;
        String::from_utf8(bytes).ok()
    }

    /// [`Regex::partial_match`] on raw bytes.
    pub fn partial_match_bytes(&self, text: &[u8]) -> bool {
        self.re.partial_match(text).unwrap_or(false)
    }
}

impl fmt::Debug for Regex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Regex").field(&self.pattern).finish()
    }
}

/// Why Envoy refuses a regex, in Lanyard's words (for route status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// RE2 does not compile it; RE2's text.
    Syntax(String),
    /// It compiles to a program larger than Envoy's limit.
    ProgramSize { size: usize, limit: usize },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Syntax(error) => write!(f, "RE2 does not compile it: {error}"),
            Refusal::ProgramSize { size, limit } => {
                write!(f, "RE2 program size {size} is over the limit of {limit}")
            }
        }
    }
}

/// The environment variable that, in debug builds only, names one pattern every check here
/// lets through. The end-to-end tests use it to publish a regex that a real gRPC client then
/// refuses, the only way to see a NACK once Lanyard checks what it publishes. Release builds
/// never read it.
pub const TEST_LET_THROUGH_VAR: &str = "LANYARD_TEST_ONLY_UNCHECKED_REGEX";

/// Whether a debug build was told to let `pattern` through unchecked.
fn let_through(pattern: &str) -> bool {
    cfg!(debug_assertions) && std::env::var(TEST_LET_THROUGH_VAR).is_ok_and(|p| p == pattern)
}

/// What Envoy, with its default runtime, would refuse about `pattern`, if anything.
pub fn envoy_refusal(pattern: &str) -> Option<Refusal> {
    if let_through(pattern) {
        return None;
    }
    match Regex::new(pattern) {
        Err(e) => Some(Refusal::Syntax(e.to_string())),
        Ok(re) if re.program_size() > ENVOY_MAX_PROGRAM_SIZE => Some(Refusal::ProgramSize {
            size: re.program_size(),
            limit: ENVOY_MAX_PROGRAM_SIZE,
        }),
        Ok(_) => None,
    }
}

/// Compiles as Envoy does and refuses what Envoy refuses, with Envoy's message.
///
/// Envoy: source/common/common/regex.cc (CompiledGoogleReMatcher): RE2's error text for a
/// pattern RE2 refuses; for one whose program size is over `re2.max_program_size.error_level`
/// (runtime key, default 100) the message below. `RegexMatcher.google_re2.max_program_size`
/// (deprecated) is never set by Lanyard, so the runtime limit is the one that applies.
pub fn check_for_envoy(pattern: &str) -> Result<(), String> {
    if let_through(pattern) {
        return Ok(());
    }
    let re = Regex::new(pattern).map_err(|e| e.to_string())?;
    let size = re.program_size();
    if size > ENVOY_MAX_PROGRAM_SIZE {
        return Err(format!(
            "regex '{pattern}' RE2 program size of {size} > max program size of \
             {ENVOY_MAX_PROGRAM_SIZE} set for the error level threshold. Increase configured \
             max program size if necessary."
        ));
    }
    Ok(())
}

/// RE2's error for a pattern it does not compile, as proxyless gRPC clients see it: they
/// compile with RE2's default options, which set no program-size limit of Envoy's kind.
///
/// gRPC: src/core/util/matchers.cc (`StringMatcher::Create`, `HeaderMatcher::Create`).
pub fn grpc_refusal(pattern: &str) -> Option<String> {
    if let_through(pattern) {
        return None;
    }
    Regex::new(pattern).err().map(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk(pattern: &str) -> Regex {
        match Regex::new(pattern) {
            Ok(re) => re,
            Err(e) => panic!("{pattern:?} does not compile: {e}"),
        }
    }

    #[test]
    fn refuses_what_rust_regex_accepts() {
        for pattern in ["(?x)a b", "(?R)", "a{1001}", "(?<name>a)"] {
            // `(?<name>a)` is refused by the RE2 Debian 12 ships (named groups need `(?P<`).
            let e = Regex::new(pattern).map(|_| ()).unwrap_err();
            let Error::Syntax(text) = e else {
                panic!("{pattern}: {e:?}")
            };
            assert!(!text.is_empty(), "{pattern}");
        }
        assert_eq!(
            Regex::new("(?x)a b").map(|_| ()),
            Err(Error::Syntax("invalid perl operator: (?x".into()))
        );
    }

    #[test]
    fn reads_escaped_angle_brackets_literally() {
        // Rust's `regex` reads `\<` as a word boundary; RE2 as the character `<`.
        let re = mk(r"\<word\>");
        assert!(re.full_match("<word>"));
        assert!(!re.full_match("word"));
    }

    #[test]
    fn reads_ampersands_in_classes_literally() {
        let re = mk("[a-z&&b]");
        assert!(re.full_match("&"));
        assert!(re.full_match("q"));
        assert!(!re.full_match("B"));
    }

    #[test]
    fn program_size_and_envoys_limit() {
        let small = mk("/[a-z]{1,10}");
        assert!(small.program_size() <= ENVOY_MAX_PROGRAM_SIZE);
        let big = mk("/[a-z]{1,60}");
        assert!(
            big.program_size() > ENVOY_MAX_PROGRAM_SIZE,
            "{}",
            big.program_size()
        );
        assert_eq!(check_for_envoy("/[a-z]{1,10}"), Ok(()));
        let size = big.program_size();
        assert_eq!(
            check_for_envoy("/[a-z]{1,60}"),
            Err(format!(
                "regex '/[a-z]{{1,60}}' RE2 program size of {size} > max program size of 100 \
                 set for the error level threshold. Increase configured max program size if \
                 necessary."
            ))
        );
        assert_eq!(
            envoy_refusal("/[a-z]{1,60}"),
            Some(Refusal::ProgramSize { size, limit: 100 })
        );
        assert_eq!(
            envoy_refusal("/[a-z]{1,60}").map(|r| r.to_string()),
            Some(format!("RE2 program size {size} is over the limit of 100"))
        );
        assert_eq!(
            envoy_refusal("(").map(|r| r.to_string()),
            Some("RE2 does not compile it: missing ): (".into())
        );
        assert_eq!(envoy_refusal("/api/.*"), None);
    }

    #[test]
    fn full_match_is_anchored_partial_is_not() {
        let re = mk("/api/v[0-9]+");
        assert!(re.full_match("/api/v12"));
        assert!(!re.full_match("/api/v12/users"));
        assert!(re.partial_match("/api/v12/users"));
        assert!(re.partial_match("x/api/v1"));
        assert!(!re.partial_match("/api/x"));
    }

    #[test]
    fn text_that_is_not_utf8() {
        let re = mk("a.b");
        assert!(re.full_match("aéb"));
        assert!(re.full_match_bytes("aéb".as_bytes()));
        // RE2 reads text as UTF-8: a lone 0xff byte is no character, so `.` does not match it,
        // and `\C` (any byte) is needed for that.
        assert!(!re.full_match_bytes(b"a\xffb"));
        assert!(mk(r"a\Cb").full_match_bytes(b"a\xffb"));
        assert!(re.partial_match_bytes(b"\xff\xfeazb\xff"));
    }

    #[test]
    fn nul_bytes_are_part_of_pattern_and_text() {
        let re = mk("a\0b");
        assert_eq!(re.as_str(), "a\0b");
        assert!(re.full_match("a\0b"));
        assert!(!re.full_match("a"));
        assert!(!re.full_match("ab"));
        assert!(mk("a.b").full_match("a\0b"));
    }

    #[test]
    fn replace_all_reads_rewrites_as_re2_does() {
        // RE2::Rewrite (re2/re2.cc, RE2 2022-06-01): `\N` is group N, `\\` one backslash.
        let re = mk("/v([0-9]+)/(.*)");
        assert_eq!(
            re.replace_all("/v1/users", r"/api/\2/\1").as_deref(),
            Some("/api/users/1")
        );
        assert_eq!(re.replace_all("/v1/users", r"\\1").as_deref(), Some(r"\1"));
        assert_eq!(
            re.replace_all("/v1/users", r"\0!").as_deref(),
            Some("/v1/users!")
        );
        // `$` is not special in RE2 rewrites.
        assert_eq!(re.replace_all("/v1/x", "$1").as_deref(), Some("$1"));
        // A group the regex does not have: GlobalReplace refuses and leaves the text.
        assert_eq!(re.replace_all("/v1/x", r"\3").as_deref(), Some("/v1/x"));
        // Every non-overlapping match, and no match leaves the text as it was.
        assert_eq!(
            mk("a").replace_all("banana", "o").as_deref(),
            Some("bonono")
        );
        assert_eq!(
            mk("z").replace_all("banana", "o").as_deref(),
            Some("banana")
        );
    }

    #[test]
    fn usable_from_several_threads() {
        let re = mk("[0-9]+");
        std::thread::scope(|s| {
            for i in 0..4 {
                let re = &re;
                s.spawn(move || assert!(re.full_match(&i.to_string())));
            }
        });
    }
}
