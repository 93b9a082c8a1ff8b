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

fn option(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            value: value.to_string(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
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
    }
}
