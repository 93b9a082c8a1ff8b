//! Path rewrites (URLRewrite and RequestRedirect `path`) with Gateway API semantics.
//!
//! `ReplacePrefixMatch` works on `/`-separated segments: with a match on `m` and a replacement
//! `r` (both without trailing `/`), the path `m` + rest (rest empty or starting with `/`)
//! becomes `r` + rest, and `/` when that is empty. Envoy's `prefix_rewrite` swaps the matched
//! prefix verbatim, which is exact whenever `r` is not empty; otherwise a `regex_rewrite` does
//! the job (`prefix_rewrite: "/"` would turn `/strip/three` into `//three`).

use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;

use super::matches::{MatchedPrefix, regex_matcher};

/// What to do with the request path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathEdit {
    /// Leave it.
    Keep,
    /// Swap the matched prefix for this (`prefix_rewrite`).
    Prefix(String),
    /// Rewrite with a regex (`regex_rewrite`); the pattern is anchored.
    Regex(RegexMatchAndSubstitute),
}

/// `ReplaceFullPath`: the whole path (query string aside) becomes `path`.
pub fn replace_full(path: &str) -> PathEdit {
    regex_edit("^/.*$".to_string(), escape_substitution(path))
}

/// `ReplacePrefixMatch` for a route matched by `matched`.
///
/// For exact and regex matches (which the Gateway API does not combine with
/// `ReplacePrefixMatch`) the whole path counts as matched: it is replaced by `replacement`.
pub fn replace_prefix(matched: &MatchedPrefix, replacement: &str) -> PathEdit {
    let r = replacement.trim_end_matches('/');
    match matched {
        MatchedPrefix::Segments(m) if r.is_empty() => {
            regex_edit(format!("^{}/?(.*)$", regex::escape(m)), "/\\1".to_string())
        }
        MatchedPrefix::Segments(_) => PathEdit::Prefix(r.to_string()),
        // The path is `m/...`: the matched prefix includes the slash.
        MatchedPrefix::Slash(_) => PathEdit::Prefix(format!("{r}/")),
        MatchedPrefix::Root if r.is_empty() => PathEdit::Keep,
        // `/` becomes `r`, `/rest` becomes `r/rest`.
        MatchedPrefix::Root => regex_edit(
            "^/$|^(/.*)$".to_string(),
            format!("{}\\1", escape_substitution(r)),
        ),
        MatchedPrefix::Whole => replace_full(if r.is_empty() { "/" } else { r }),
    }
}

fn regex_edit(pattern: String, substitution: String) -> PathEdit {
    PathEdit::Regex(RegexMatchAndSubstitute {
        pattern: Some(regex_matcher(&pattern)),
        substitution,
    })
}

/// RE2 substitution strings give `\` a meaning (`\1`, `\\`): keep literal ones literal.
fn escape_substitution(literal: &str) -> String {
    literal.replace('\\', "\\\\")
}

#[cfg(test)]
mod tests {
    use lanyard_model::PathMatch;

    use super::*;
    use crate::routes::matches::PathStyle;

    /// What Envoy does to `path` for a route matched by `matched` with `edit`, after checking
    /// that the route matches the path at all.
    fn apply(matched: &MatchedPrefix, edit: &PathEdit, path: &str) -> String {
        let matched_len = match matched {
            MatchedPrefix::Root => {
                assert!(path.starts_with('/'));
                1
            }
            MatchedPrefix::Segments(m) => {
                assert!(
                    path == m || path.starts_with(&format!("{m}/")),
                    "{path} does not match {m}"
                );
                m.len()
            }
            MatchedPrefix::Slash(m) => {
                assert!(path.starts_with(&format!("{m}/")));
                m.len() + 1
            }
            MatchedPrefix::Whole => path.len(),
        };
        match edit {
            PathEdit::Keep => path.to_string(),
            PathEdit::Prefix(p) => format!("{p}{}", &path[matched_len..]),
            PathEdit::Regex(r) => {
                let re = regex::Regex::new(&r.pattern.as_ref().unwrap().regex).unwrap();
                re.replace_all(path, re2_to_rust_substitution(&r.substitution).as_str())
                    .into_owned()
            }
        }
    }

    /// RE2's `\1` / `\\` to the regex crate's `${1}` / `\`, with `$` made literal.
    fn re2_to_rust_substitution(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(d) if d.is_ascii_digit() => out.push_str(&format!("${{{d}}}")),
                    Some('\\') => out.push('\\'),
                    other => panic!("invalid RE2 substitution escape {other:?} in {s}"),
                },
                '$' => out.push_str("$$"),
                c => out.push(c),
            }
        }
        out
    }

    fn rewrite(prefix: &str, replacement: &str, style: PathStyle, path: &str) -> String {
        let matched = MatchedPrefix::of(&PathMatch::Prefix(prefix.into()), style);
        apply(&matched, &replace_prefix(&matched, replacement), path)
    }

    fn seg(prefix: &str, replacement: &str, path: &str) -> String {
        rewrite(prefix, replacement, PathStyle::Segments, path)
    }

    #[test]
    fn conformance_prefix_cases() {
        assert_eq!(seg("/prefix/one", "/one", "/prefix/one/two"), "/one/two");
        assert_eq!(seg("/prefix/one", "/one", "/prefix/one"), "/one");
        assert_eq!(seg("/strip-prefix", "/", "/strip-prefix/three"), "/three");
        assert_eq!(seg("/strip-prefix", "/", "/strip-prefix"), "/");
        assert_eq!(seg("/strip-prefix", "/", "/strip-prefix/"), "/");
    }

    #[test]
    fn gateway_api_spec_table() {
        for (path, prefix, replacement, expected) in [
            ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo/", "/foo", "/xyz", "/xyz/"),
            ("/foo/bar", "/foo", "", "/bar"),
            ("/foo/", "/foo", "", "/"),
            ("/foo", "/foo", "", "/"),
            ("/foo/", "/foo", "/", "/"),
            ("/foo", "/foo", "/", "/"),
        ] {
            assert_eq!(
                seg(prefix, replacement, path),
                expected,
                "{path} with {prefix} -> {replacement}"
            );
        }
    }

    #[test]
    fn exact_where_possible() {
        let matched = MatchedPrefix::Segments("/prefix/one".into());
        assert_eq!(
            replace_prefix(&matched, "/one"),
            PathEdit::Prefix("/one".into())
        );
        assert!(matches!(replace_prefix(&matched, "/"), PathEdit::Regex(_)));
    }

    #[test]
    fn regex_metacharacters_in_the_prefix_are_escaped() {
        let matched = MatchedPrefix::Segments("/v1.0".into());
        let PathEdit::Regex(r) = replace_prefix(&matched, "/") else {
            panic!("expected a regex rewrite");
        };
        assert_eq!(r.pattern.as_ref().unwrap().regex, "^/v1\\.0/?(.*)$");
        assert_eq!(seg("/v1.0", "/", "/v1.0/items"), "/items");
    }

    #[test]
    fn root_prefix() {
        assert_eq!(seg("/", "/xyz", "/"), "/xyz");
        assert_eq!(seg("/", "/xyz", "/bar/baz"), "/xyz/bar/baz");
        assert_eq!(seg("/", "/", "/bar"), "/bar");
        assert_eq!(replace_prefix(&MatchedPrefix::Root, "/"), PathEdit::Keep);
    }

    #[test]
    fn grpc_style_prefix() {
        let g = |prefix, replacement, path| rewrite(prefix, replacement, PathStyle::Grpc, path);
        assert_eq!(
            g("/pkg.Old", "/pkg.New", "/pkg.Old/Method"),
            "/pkg.New/Method"
        );
        assert_eq!(g("/pkg.Old", "/", "/pkg.Old/Method"), "/Method");
    }

    #[test]
    fn full_path_and_whole_matches() {
        assert_eq!(
            apply(
                &MatchedPrefix::Root,
                &replace_full("/replaced"),
                "/any/thing"
            ),
            "/replaced"
        );
        assert_eq!(
            apply(&MatchedPrefix::Root, &replace_full("/a\\b$1"), "/x"),
            "/a\\b$1"
        );
        let whole = MatchedPrefix::of(&PathMatch::Exact("/old".into()), PathStyle::Segments);
        assert_eq!(
            apply(&whole, &replace_prefix(&whole, "/new/"), "/old"),
            "/new"
        );
        assert_eq!(apply(&whole, &replace_prefix(&whole, "/"), "/old"), "/");
    }
}
