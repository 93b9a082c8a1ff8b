//! Per-message plans built once from the descriptor pool: which fields carry PGV rules, which
//! lead to messages that do, and how to read each from the wire.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::validate::FieldRules;
use prost_reflect::{
    DescriptorPool, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor, Value,
};
use regex::Regex;

use super::rules::{CompileError, ElemRules, uuid_regex};

/// How a scalar is encoded on the wire and read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scalar {
    Double,
    Float,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Bool,
    String,
    Bytes,
}

impl Scalar {
    /// Whether a repeated field of this type may be packed.
    pub fn packable(self) -> bool {
        !matches!(self, Scalar::String | Scalar::Bytes)
    }
}

#[derive(Debug, Clone)]
pub(super) enum ElemType {
    Scalar(Scalar),
    /// An enum, with the numbers it declares (sorted) for `defined_only`.
    Enum(Arc<[i32]>),
    /// Index of the message's plan.
    Message(usize),
}

#[derive(Debug)]
pub(super) enum Shape {
    Single,
    Repeated,
    Map { key: ElemType, value: ElemType },
}

/// What a message is to the checks: most are walked field by field; the well-known types
/// carry the rules of the field that holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MessageKind {
    Plain,
    Any,
    Duration,
    Timestamp,
    /// `google.protobuf.*Value`: the rules of the wrapped scalar apply to `value` (field 1).
    Wrapper(Scalar),
}

#[derive(Debug)]
pub(super) struct FieldPlan {
    pub name: String,
    pub number: u32,
    pub elem: ElemType,
    pub shape: Shape,
    /// The real (not synthetic) oneof the field belongs to.
    pub oneof: Option<usize>,
    /// A singular scalar with explicit presence (`optional`): its rules apply only when set.
    pub presence: bool,
    pub rules: ElemRules,
    /// Whether leaving it unset breaks its rules; the walk skips unset fields that do not.
    pub absence_breaks: bool,
}

#[derive(Debug)]
pub(super) struct OneofPlan {
    pub name: String,
    pub required: bool,
}

#[derive(Debug)]
pub(super) struct MessagePlan {
    pub full_name: String,
    pub kind: MessageKind,
    /// `validate.disabled` or `validate.ignored`: Envoy's validator accepts it as it is.
    pub ignored: bool,
    /// Whether anything in it, or in a message it can hold, carries a rule.
    pub relevant: bool,
    /// The fields the walk reads, by number.
    pub fields: Vec<FieldPlan>,
    /// `fields` index + 1 by field number (0: not read), when the numbers are small.
    dense: Vec<u16>,
    pub oneofs: Vec<OneofPlan>,
}

impl MessagePlan {
    pub fn field(&self, number: u32) -> Option<usize> {
        if self.dense.is_empty() {
            return self.fields.binary_search_by_key(&number, |f| f.number).ok();
        }
        match self.dense.get(number as usize) {
            Some(&i) if i > 0 => Some(usize::from(i) - 1),
            _ => None,
        }
    }
}

/// Every message of the pool, planned.
#[derive(Debug)]
pub(super) struct Tables {
    pub messages: Vec<MessagePlan>,
    by_name: HashMap<String, usize>,
    pub uuid: Regex,
    /// Rules that could not be compiled (and are therefore not checked), by field.
    #[cfg(test)]
    pub errors: Vec<(String, CompileError)>,
}

impl Tables {
    pub fn index(&self, full_name: &str) -> Option<usize> {
        self.by_name.get(full_name).copied()
    }

    pub fn build(pool: &DescriptorPool) -> Self {
        let ext = |name: &str| pool.get_extension_by_name(name);
        let rules_ext = ext("validate.rules");
        let disabled_ext = ext("validate.disabled");
        let ignored_ext = ext("validate.ignored");
        let required_ext = ext("validate.required");

        let descriptors: Vec<MessageDescriptor> = pool.all_messages().collect();
        let by_name: HashMap<String, usize> = descriptors
            .iter()
            .enumerate()
            .map(|(i, m)| (m.full_name().to_owned(), i))
            .collect();
        let mut errors = Vec::new();
        let mut messages: Vec<MessagePlan> = descriptors
            .iter()
            .map(|m| {
                plan_message(
                    m,
                    &by_name,
                    Extensions {
                        rules: rules_ext.as_ref(),
                        disabled: disabled_ext.as_ref(),
                        ignored: ignored_ext.as_ref(),
                        required: required_ext.as_ref(),
                    },
                    &mut errors,
                )
            })
            .collect();
        for (field, e) in &errors {
            tracing::error!(%field, error = %e, "a PGV rule of Envoy's protos cannot be compiled; it is not checked");
        }
        mark_relevant(&mut messages);
        prune(&mut messages);
        let mut tables = Self {
            messages,
            by_name,
            uuid: uuid_regex(),
            #[cfg(test)]
            errors,
        };
        let breaks: Vec<Vec<bool>> = tables
            .messages
            .iter()
            .map(|m| {
                m.fields
                    .iter()
                    .map(|f| super::walk::absence_breaks(&tables, f))
                    .collect()
            })
            .collect();
        for (m, breaks) in tables.messages.iter_mut().zip(breaks) {
            for (f, b) in m.fields.iter_mut().zip(breaks) {
                f.absence_breaks = b;
            }
        }
        tables
    }
}

#[derive(Clone, Copy)]
struct Extensions<'a> {
    rules: Option<&'a ExtensionDescriptor>,
    disabled: Option<&'a ExtensionDescriptor>,
    ignored: Option<&'a ExtensionDescriptor>,
    required: Option<&'a ExtensionDescriptor>,
}

fn bool_option(options: &prost_reflect::DynamicMessage, ext: Option<&ExtensionDescriptor>) -> bool {
    ext.is_some_and(|e| {
        options.has_extension(e) && matches!(*options.get_extension(e), Value::Bool(true))
    })
}

fn kind_of(name: &str) -> MessageKind {
    match name {
        "google.protobuf.Any" => MessageKind::Any,
        "google.protobuf.Duration" => MessageKind::Duration,
        "google.protobuf.Timestamp" => MessageKind::Timestamp,
        "google.protobuf.DoubleValue" => MessageKind::Wrapper(Scalar::Double),
        "google.protobuf.FloatValue" => MessageKind::Wrapper(Scalar::Float),
        "google.protobuf.Int64Value" => MessageKind::Wrapper(Scalar::Int64),
        "google.protobuf.UInt64Value" => MessageKind::Wrapper(Scalar::Uint64),
        "google.protobuf.Int32Value" => MessageKind::Wrapper(Scalar::Int32),
        "google.protobuf.UInt32Value" => MessageKind::Wrapper(Scalar::Uint32),
        "google.protobuf.BoolValue" => MessageKind::Wrapper(Scalar::Bool),
        "google.protobuf.StringValue" => MessageKind::Wrapper(Scalar::String),
        "google.protobuf.BytesValue" => MessageKind::Wrapper(Scalar::Bytes),
        _ => MessageKind::Plain,
    }
}

fn elem_type(kind: &Kind, by_name: &HashMap<String, usize>) -> Option<ElemType> {
    Some(ElemType::Scalar(match kind {
        Kind::Double => Scalar::Double,
        Kind::Float => Scalar::Float,
        Kind::Int32 => Scalar::Int32,
        Kind::Int64 => Scalar::Int64,
        Kind::Uint32 => Scalar::Uint32,
        Kind::Uint64 => Scalar::Uint64,
        Kind::Sint32 => Scalar::Sint32,
        Kind::Sint64 => Scalar::Sint64,
        Kind::Fixed32 => Scalar::Fixed32,
        Kind::Fixed64 => Scalar::Fixed64,
        Kind::Sfixed32 => Scalar::Sfixed32,
        Kind::Sfixed64 => Scalar::Sfixed64,
        Kind::Bool => Scalar::Bool,
        Kind::String => Scalar::String,
        Kind::Bytes => Scalar::Bytes,
        Kind::Enum(e) => {
            let mut numbers: Vec<i32> = e.values().map(|v| v.number()).collect();
            numbers.sort_unstable();
            numbers.dedup();
            return Some(ElemType::Enum(numbers.into()));
        }
        Kind::Message(m) => return by_name.get(m.full_name()).map(|&i| ElemType::Message(i)),
    }))
}

fn field_rules(
    field: &FieldDescriptor,
    ext: Option<&ExtensionDescriptor>,
    errors: &mut Vec<(String, CompileError)>,
) -> ElemRules {
    let Some(ext) = ext else {
        return ElemRules::default();
    };
    let options = field.options();
    if !options.has_extension(ext) {
        return ElemRules::default();
    }
    let compiled = match &*options.get_extension(ext) {
        Value::Message(m) => m
            .transcode_to::<FieldRules>()
            .map_err(|e| CompileError {
                pattern: String::new(),
                reason: format!("validate.rules does not decode: {e}"),
            })
            .and_then(|r| ElemRules::compile(&r)),
        _ => Ok(ElemRules::default()),
    };
    compiled.unwrap_or_else(|e| {
        errors.push((field.full_name().to_owned(), e));
        ElemRules::default()
    })
}

fn plan_message(
    m: &MessageDescriptor,
    by_name: &HashMap<String, usize>,
    ext: Extensions<'_>,
    errors: &mut Vec<(String, CompileError)>,
) -> MessagePlan {
    let options = m.options();
    let ignored = bool_option(&options, ext.disabled) || bool_option(&options, ext.ignored);
    let mut oneofs = Vec::new();
    let mut oneof_index = HashMap::new();
    for o in m.oneofs().filter(|o| !o.is_synthetic()) {
        oneof_index.insert(o.name().to_owned(), oneofs.len());
        oneofs.push(OneofPlan {
            name: o.name().to_owned(),
            required: bool_option(&o.options(), ext.required),
        });
    }
    let mut fields = Vec::new();
    for f in m.fields() {
        let kind = f.kind();
        let shape = if f.is_map() {
            let Kind::Message(entry) = &kind else {
                continue;
            };
            let key = elem_type(&entry.map_entry_key_field().kind(), by_name);
            let value = elem_type(&entry.map_entry_value_field().kind(), by_name);
            let (Some(key), Some(value)) = (key, value) else {
                continue;
            };
            Shape::Map { key, value }
        } else if f.is_list() {
            Shape::Repeated
        } else {
            Shape::Single
        };
        let elem = match &shape {
            // Unused for maps: entries are read as key and value.
            Shape::Map { value, .. } => value.clone(),
            _ => match elem_type(&kind, by_name) {
                Some(e) => e,
                None => continue,
            },
        };
        let oneof = f
            .containing_oneof()
            .and_then(|o| oneof_index.get(o.name()).copied());
        let presence = oneof.is_none()
            && matches!(shape, Shape::Single)
            && !matches!(elem, ElemType::Message(_))
            && f.supports_presence();
        fields.push(FieldPlan {
            name: f.name().to_owned(),
            number: f.number(),
            elem,
            shape,
            oneof,
            presence,
            rules: field_rules(&f, ext.rules, errors),
            absence_breaks: true,
        });
    }
    fields.sort_by_key(|f| f.number);
    MessagePlan {
        full_name: m.full_name().to_owned(),
        kind: kind_of(m.full_name()),
        ignored,
        relevant: false,
        fields,
        dense: Vec::new(),
        oneofs,
    }
}

fn has_rules(r: &ElemRules) -> bool {
    r.required || r.ty.is_some()
}

/// The message types a field leads to (its element, or its map value), unless `skip`ped.
fn leads_to(f: &FieldPlan) -> Option<usize> {
    if f.rules.skip {
        return None;
    }
    match (&f.shape, &f.elem) {
        (
            Shape::Map {
                value: ElemType::Message(i),
                ..
            },
            _,
        ) => Some(*i),
        (Shape::Map { .. }, _) => None,
        (_, ElemType::Message(i)) => Some(*i),
        _ => None,
    }
}

/// A message is relevant when it carries a rule, holds an `Any` (anything may be packed in
/// it), or holds a relevant message; computed to a fixed point since types recurse.
fn mark_relevant(messages: &mut [MessagePlan]) {
    for m in messages.iter_mut() {
        m.relevant = !m.ignored
            && (m.kind == MessageKind::Any
                || m.oneofs.iter().any(|o| o.required)
                || m.fields.iter().any(|f| has_rules(&f.rules)));
    }
    loop {
        let mut changed = false;
        for i in 0..messages.len() {
            if messages[i].relevant || messages[i].ignored {
                continue;
            }
            let reaches = messages[i]
                .fields
                .iter()
                .filter_map(leads_to)
                .any(|j| messages[j].relevant);
            if reaches {
                messages[i].relevant = true;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
}

/// Keeps the fields the walk needs: those with rules, those leading to relevant messages and
/// the members of required oneofs (for their presence).
fn prune(messages: &mut [MessagePlan]) {
    let relevant: Vec<bool> = messages.iter().map(|m| m.relevant).collect();
    for m in messages.iter_mut() {
        if !m.relevant || m.kind != MessageKind::Plain {
            m.fields.clear();
            continue;
        }
        let oneofs = &m.oneofs;
        m.fields.retain(|f| {
            has_rules(&f.rules)
                || leads_to(f).is_some_and(|j| relevant[j])
                || f.oneof.is_some_and(|o| oneofs[o].required)
        });
        let max = m.fields.last().map_or(0, |f| f.number as usize);
        if max < 512 && m.fields.len() < usize::from(u16::MAX) {
            m.dense = vec![0; max + 1];
            for (i, f) in m.fields.iter().enumerate() {
                m.dense[f.number as usize] = i as u16 + 1;
            }
        }
    }
}
