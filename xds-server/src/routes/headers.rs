//! Header modifiers (Gateway API RequestHeaderModifier / ResponseHeaderModifier).

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
};
use lanyard_model::HeaderModifier;

/// A modifier in Envoy's terms: `*_headers_to_add` and `*_headers_to_remove`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeaderEdits {
    /// `set` entries (OVERWRITE_IF_EXISTS_OR_ADD) then `add` entries (APPEND_IF_EXISTS_OR_ADD).
    pub add: Vec<HeaderValueOption>,
    /// Names to remove. Envoy removes before it adds.
    pub remove: Vec<String>,
}

impl HeaderEdits {
    /// Translates a modifier. Names keep the case given; Envoy lower-cases them on the wire.
    pub fn of(modifier: &HeaderModifier) -> Self {
        let set = modifier
            .set
            .iter()
            .map(|(k, v)| option(k, v, HeaderAppendAction::OverwriteIfExistsOrAdd));
        let add = modifier
            .add
            .iter()
            .map(|(k, v)| option(k, v, HeaderAppendAction::AppendIfExistsOrAdd));
        HeaderEdits {
            add: set.chain(add).collect(),
            remove: modifier.remove.clone(),
        }
    }
}

/// A header to add whose value Envoy reads as the Gateway API means it: literally, and kept
/// when empty (`set: {name: x, value: ""}` sets `x` to the empty string; without
/// `keep_empty_value` Envoy would skip it). Envoy: source/common/router/header_parser.cc
/// (HeaderParser::evaluateHeaders).
fn option(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            value: literal(value),
            ..Default::default()
        }),
        append_action: action as i32,
        keep_empty_value: value.is_empty(),
        ..Default::default()
    }
}

/// `value` as an Envoy header-value format that yields it unchanged: `%` starts a formatter
/// command there, and `%%` is a literal `%`. Envoy:
/// source/common/formatter/substitution_formatter.cc (SubstitutionFormatParser::parse).
fn literal(value: &str) -> String {
    value.replace('%', "%%")
}

/// One modifier holding `first` then `second`, as a single Envoy header parser applies it
/// (removals, then overwrites, then appends): the headers `second` removes or sets lose
/// whatever `first` did to them; on the others `first` acts, and `second`'s additions follow
/// `first`'s. Names compare case-insensitively.
pub fn then(first: &HeaderModifier, second: &HeaderModifier) -> HeaderModifier {
    let replaced = |name: &str| {
        second
            .remove
            .iter()
            .chain(second.set.iter().map(|(n, _)| n))
            .any(|n| n.eq_ignore_ascii_case(name))
    };
    let kept = |list: &[(String, String)]| {
        list.iter()
            .filter(|(n, _)| !replaced(n))
            .cloned()
            .collect::<Vec<_>>()
    };
    HeaderModifier {
        set: [kept(&first.set), second.set.clone()].concat(),
        add: [kept(&first.add), second.add.clone()].concat(),
        remove: first
            .remove
            .iter()
            .filter(|n| !replaced(n))
            .chain(&second.remove)
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_overwrites_add_appends_remove_removes() {
        let edits = HeaderEdits::of(&HeaderModifier {
            set: vec![("X-Env".into(), "prod".into())],
            add: vec![("x-trace".into(), "1".into())],
            remove: vec!["X-Internal".into()],
        });
        let view: Vec<(&str, &str, i32)> = edits
            .add
            .iter()
            .map(|o| {
                let h = o.header.as_ref().unwrap();
                (h.key.as_str(), h.value.as_str(), o.append_action)
            })
            .collect();
        assert_eq!(
            view,
            [
                (
                    "X-Env",
                    "prod",
                    HeaderAppendAction::OverwriteIfExistsOrAdd as i32
                ),
                (
                    "x-trace",
                    "1",
                    HeaderAppendAction::AppendIfExistsOrAdd as i32
                ),
            ]
        );
        assert_eq!(edits.remove, ["X-Internal"]);
        assert_eq!(
            HeaderEdits::of(&HeaderModifier::default()),
            HeaderEdits::default()
        );
        assert!(edits.add.iter().all(|o| !o.keep_empty_value));
    }

    fn mk_set(value: &str) -> HeaderValueOption {
        let edits = HeaderEdits::of(&HeaderModifier {
            set: vec![("x-a".into(), value.into())],
            ..Default::default()
        });
        edits.add[0].clone()
    }

    #[test]
    fn values_are_literal_for_envoys_formatter() {
        for (given, written) in [
            ("50%", "50%%"),
            ("%REQ(x)%", "%%REQ(x)%%"),
            ("a%%b", "a%%%%b"),
            ("plain", "plain"),
            ("%", "%%"),
        ] {
            let option = mk_set(given);
            let header = option.header.as_ref().unwrap();
            assert_eq!(header.value, written, "{given:?}");
            assert_eq!(
                crate::validate::envoy::check_header_value(&header.value),
                Ok(()),
                "{given:?}"
            );
        }
    }

    #[test]
    fn empty_values_are_kept() {
        let empty = mk_set("");
        assert_eq!(empty.header.as_ref().unwrap().value, "");
        assert!(empty.keep_empty_value);
        assert!(!mk_set("v").keep_empty_value);
        let added = HeaderEdits::of(&HeaderModifier {
            add: vec![("x-b".into(), String::new())],
            ..Default::default()
        });
        assert!(added.add[0].keep_empty_value);
    }

    /// What the translator writes passes Envoy's checks; the same values written by hand as
    /// the user gave them do not.
    #[test]
    fn envoy_accepts_what_is_written_and_refuses_raw_percent() {
        use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};

        let config = |add: Vec<HeaderValueOption>| RouteConfiguration {
            name: "rc".into(),
            virtual_hosts: vec![VirtualHost {
                name: "vh".into(),
                domains: vec!["*".into()],
                request_headers_to_add: add,
                ..Default::default()
            }],
            ..Default::default()
        };
        let written = HeaderEdits::of(&HeaderModifier {
            set: vec![
                ("x-a".into(), "50%".into()),
                ("x-b".into(), "%REQ(x)%".into()),
            ],
            add: vec![("x-c".into(), "a%%b".into())],
            ..Default::default()
        });
        assert_eq!(
            crate::validate::envoy::check_route_configuration(&config(written.add)),
            []
        );
        let by_hand = HeaderValueOption {
            header: Some(HeaderValue {
                key: "x-a".into(),
                value: "50%".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let violations = crate::validate::envoy::check_route_configuration(&config(vec![by_hand]));
        assert_eq!(
            violations
                .iter()
                .map(|v| (v.path.as_str(), v.message.as_str()))
                .collect::<Vec<_>>(),
            [(
                "virtual_hosts[0].request_headers_to_add[0].header.value",
                "Incorrect configuration: 50%. Couldn't find valid command at position 2"
            )]
        );
    }

    /// Rule first, backend after: the backend's set and remove replace what the rule did to
    /// that header, its additions follow the rule's.
    #[test]
    fn then_composes_two_modifiers_into_one_level() {
        let rule = HeaderModifier {
            set: vec![
                ("X-Level".into(), "rule".into()),
                ("x-gone".into(), "rule".into()),
            ],
            add: vec![("x-both".into(), "rule".into())],
            remove: vec!["x-client".into()],
        };
        let backend = HeaderModifier {
            set: vec![("x-level".into(), "backend".into())],
            add: vec![
                ("x-both".into(), "backend".into()),
                ("x-client".into(), "backend".into()),
            ],
            remove: vec!["X-Gone".into()],
        };
        assert_eq!(
            then(&rule, &backend),
            HeaderModifier {
                set: vec![("x-level".into(), "backend".into())],
                add: vec![
                    ("x-both".into(), "rule".into()),
                    ("x-both".into(), "backend".into()),
                    ("x-client".into(), "backend".into()),
                ],
                remove: vec!["x-client".into(), "X-Gone".into()],
            }
        );
    }
}
