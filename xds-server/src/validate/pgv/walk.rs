//! The walk over an encoded message: fields are read straight from the wire, only those the
//! plan names are looked at, and subtrees without rules are skipped unread.
//!
//! Envoy validates the decoded message (source/common/protobuf/utility.h,
//! `MessageUtil::validate`, and `anyConvertAndValidate` for typed configs); reading the wire
//! gives the same values as decoding, with one difference that encoders like prost never
//! produce: a singular message field that occurs twice is merged by a decoder, and here each
//! occurrence but the last is ignored.

use std::fmt::Write as _;

use super::rules::{ElemRules, TypeRules, check_count};
use super::table::{ElemType, FieldPlan, MessageKind, Scalar, Shape, Tables};
use crate::validate::Violation;

/// One value as read from the wire.
#[derive(Debug, Clone, Copy)]
enum Raw<'b> {
    Varint(u64),
    Fixed64(u64),
    Len(&'b [u8]),
    Fixed32(u32),
}

/// Why the bytes are not a message.
#[derive(Debug)]
struct Malformed(&'static str);

struct Reader<'b> {
    bytes: &'b [u8],
}

impl<'b> Reader<'b> {
    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&b, rest) = self
                .bytes
                .split_first()
                .ok_or(Malformed("truncated varint"))?;
            self.bytes = rest;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(Malformed("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'b [u8], Malformed> {
        if self.bytes.len() < n {
            return Err(Malformed("truncated field"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    /// The next field's number and value, `None` at the end.
    fn field(&mut self) -> Result<Option<(u32, Raw<'b>)>, Malformed> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let number = u32::try_from(tag >> 3).map_err(|_| Malformed("field number too large"))?;
        if number == 0 {
            return Err(Malformed("field number 0"));
        }
        let raw = match tag & 7 {
            0 => Raw::Varint(self.varint()?),
            1 => Raw::Fixed64(u64::from_le_bytes(fixed(self.take(8)?)?)),
            2 => {
                let n =
                    usize::try_from(self.varint()?).map_err(|_| Malformed("length too large"))?;
                Raw::Len(self.take(n)?)
            }
            5 => Raw::Fixed32(u32::from_le_bytes(fixed(self.take(4)?)?)),
            _ => {
                return Err(Malformed(
                    "unsupported wire type (groups are not used by Envoy)",
                ));
            }
        };
        Ok(Some((number, raw)))
    }
}

fn fixed<const N: usize>(b: &[u8]) -> Result<[u8; N], Malformed> {
    b.try_into()
        .map_err(|_| Malformed("truncated fixed-width field"))
}

/// A scalar as its rules see it.
#[derive(Debug, Clone, Copy)]
enum Val<'b> {
    I(i64),
    U(u64),
    F(f64),
    B(bool),
    S(&'b [u8]),
}

/// Reads a scalar of type `s`, or its default when absent.
fn scalar<'b>(s: Scalar, raw: Option<Raw<'b>>) -> Result<Val<'b>, Malformed> {
    let mismatch = Malformed("wire type does not match the field's type");
    Ok(match (s, raw) {
        (Scalar::Double | Scalar::Float, None) => Val::F(0.0),
        (Scalar::Int32 | Scalar::Int64 | Scalar::Sint32 | Scalar::Sint64, None)
        | (Scalar::Sfixed32 | Scalar::Sfixed64, None) => Val::I(0),
        (Scalar::Uint32 | Scalar::Uint64 | Scalar::Fixed32 | Scalar::Fixed64, None) => Val::U(0),
        (Scalar::Bool, None) => Val::B(false),
        (Scalar::String | Scalar::Bytes, None) => Val::S(&[]),
        // Truncations and sign changes as protobuf's decoders do them.
        (Scalar::Int32, Some(Raw::Varint(v))) => Val::I(i64::from(v as i32)),
        (Scalar::Int64, Some(Raw::Varint(v))) => Val::I(v as i64),
        (Scalar::Uint32, Some(Raw::Varint(v))) => Val::U(u64::from(v as u32)),
        (Scalar::Uint64, Some(Raw::Varint(v))) => Val::U(v),
        (Scalar::Sint32, Some(Raw::Varint(v))) => {
            let n = v as u32;
            Val::I(i64::from((n >> 1) as i32 ^ -((n & 1) as i32)))
        }
        (Scalar::Sint64, Some(Raw::Varint(v))) => Val::I((v >> 1) as i64 ^ -((v & 1) as i64)),
        (Scalar::Bool, Some(Raw::Varint(v))) => Val::B(v != 0),
        (Scalar::Fixed32, Some(Raw::Fixed32(v))) => Val::U(u64::from(v)),
        (Scalar::Sfixed32, Some(Raw::Fixed32(v))) => Val::I(i64::from(v as i32)),
        (Scalar::Float, Some(Raw::Fixed32(v))) => Val::F(f64::from(f32::from_bits(v))),
        (Scalar::Fixed64, Some(Raw::Fixed64(v))) => Val::U(v),
        (Scalar::Sfixed64, Some(Raw::Fixed64(v))) => Val::I(v as i64),
        (Scalar::Double, Some(Raw::Fixed64(v))) => Val::F(f64::from_bits(v)),
        (Scalar::String | Scalar::Bytes, Some(Raw::Len(b))) => Val::S(b),
        _ => return Err(mismatch),
    })
}

/// The elements of a packed repeated scalar.
fn packed<'b>(s: Scalar, bytes: &'b [u8]) -> Result<Vec<Raw<'b>>, Malformed> {
    let mut r = Reader { bytes };
    let mut out = Vec::new();
    while !r.bytes.is_empty() {
        out.push(match s {
            Scalar::Fixed32 | Scalar::Sfixed32 | Scalar::Float => {
                Raw::Fixed32(u32::from_le_bytes(fixed(r.take(4)?)?))
            }
            Scalar::Fixed64 | Scalar::Sfixed64 | Scalar::Double => {
                Raw::Fixed64(u64::from_le_bytes(fixed(r.take(8)?)?))
            }
            _ => Raw::Varint(r.varint()?),
        });
    }
    Ok(out)
}

/// One step of a violation's path.
#[derive(Debug, Clone)]
enum Seg<'t, 'b> {
    /// `.name`
    Field(&'t str),
    /// `[i]`
    Index(u32),
    /// `["key"]`
    Key(&'b [u8]),
    /// `[7]`, `[true]`: an integral or bool map key.
    Number(String),
    /// `{full.type.Name}`: into an `Any`.
    Any(&'b str),
}

fn render(path: &[Seg<'_, '_>]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Field(name) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            }
            Seg::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
            Seg::Key(k) => {
                let _ = write!(out, "[{:?}]", String::from_utf8_lossy(k));
            }
            Seg::Number(n) => {
                let _ = write!(out, "[{n}]");
            }
            Seg::Any(name) => {
                let _ = write!(out, "{{{name}}}");
            }
        }
    }
    out
}

/// What the walk remembers of one planned field while it reads a message.
#[derive(Debug, Clone, Copy, Default)]
struct Slot<'b> {
    count: u32,
    /// The last occurrence, which is the value of a singular field.
    last: Option<Raw<'b>>,
}

/// Whether leaving `f` unset breaks its rules: a required message, a scalar whose default
/// fails its rules (proto3 checks the default of an unset scalar), a minimum count.
pub(super) fn absence_breaks(t: &Tables, f: &FieldPlan) -> bool {
    if f.oneof.is_some() || f.presence {
        return false;
    }
    let mut w = Walker::new(t);
    let mut found = false;
    match (&f.shape, &f.rules.ty) {
        (Shape::Single, _) => {
            found = w.value(&f.elem, &f.rules, None).is_err();
        }
        (Shape::Repeated, Some(TypeRules::Repeated(r))) if !r.ignore_empty => {
            check_count(0, r.min_items, r.max_items, ("", ""), &mut |_| found = true);
        }
        (Shape::Map { .. }, Some(TypeRules::Map(r))) if !r.ignore_empty => {
            check_count(0, r.min_pairs, r.max_pairs, ("", ""), &mut |_| found = true);
        }
        _ => {}
    }
    found || !w.out.is_empty()
}

pub(super) struct Walker<'t, 'b> {
    t: &'t Tables,
    /// Where the walk is, rendered only when something is reported.
    path: Vec<Seg<'t, 'b>>,
    out: Vec<Violation>,
    /// The slots of the messages being read, innermost last.
    slots: Vec<Slot<'b>>,
}

impl<'t, 'b> Walker<'t, 'b> {
    pub fn new(t: &'t Tables) -> Self {
        Self {
            t,
            path: Vec::new(),
            out: Vec::new(),
            slots: Vec::new(),
        }
    }

    pub fn finish(self) -> Vec<Violation> {
        self.out
    }

    fn report(&mut self, message: impl Into<String>) {
        self.out.push(Violation::new(render(&self.path), message));
    }

    fn push_field(&mut self, name: &'t str) -> usize {
        let len = self.path.len();
        self.path.push(Seg::Field(name));
        len
    }

    /// Checks a message of plan `idx` encoded in `bytes`.
    pub fn message(&mut self, idx: usize, bytes: &'b [u8]) {
        let t = self.t;
        let plan = &t.messages[idx];
        if plan.ignored || !plan.relevant {
            return;
        }
        // One slot per field, then one per oneof whose `count` is 1 + the index of the
        // member set last (0: none).
        let base = self.slots.len();
        let nf = plan.fields.len();
        self.slots
            .resize(base + nf + plan.oneofs.len(), Slot::default());
        if let Err(Malformed(why)) = self.read(idx, base, bytes) {
            self.report(format!("malformed {}: {why}", plan.full_name));
            self.slots.truncate(base);
            return;
        }
        for (i, f) in plan.fields.iter().enumerate() {
            let slot = self.slots[base + i];
            if slot.count == 0 && !f.absence_breaks {
                continue;
            }
            match &f.shape {
                Shape::Single => {
                    // Only the member set last is the oneof's value.
                    if let Some(o) = f.oneof
                        && self.slots[base + nf + o].count as usize != i + 1
                    {
                        continue;
                    }
                    let mark = self.push_field(&f.name);
                    if let Err(Malformed(why)) = self.value(&f.elem, &f.rules, slot.last) {
                        self.report(why);
                    }
                    self.path.truncate(mark);
                }
                Shape::Repeated => {
                    if let Some(TypeRules::Repeated(r)) = &f.rules.ty
                        && !(r.ignore_empty && slot.count == 0)
                    {
                        let mark = self.push_field(&f.name);
                        let mut found = Vec::new();
                        check_count(
                            u64::from(slot.count),
                            r.min_items,
                            r.max_items,
                            ("item(s)", "items"),
                            &mut |m| found.push(m),
                        );
                        for m in found {
                            self.report(m);
                        }
                        if r.unique {
                            self.unique(f, bytes);
                        }
                        self.path.truncate(mark);
                    }
                }
                Shape::Map { .. } => {
                    if let Some(TypeRules::Map(r)) = &f.rules.ty
                        && !(r.ignore_empty && slot.count == 0)
                    {
                        let mark = self.push_field(&f.name);
                        let mut found = Vec::new();
                        check_count(
                            u64::from(slot.count),
                            r.min_pairs,
                            r.max_pairs,
                            ("pair(s)", "pairs"),
                            &mut |m| found.push(m),
                        );
                        for m in found {
                            self.report(m);
                        }
                        self.path.truncate(mark);
                    }
                }
            }
        }
        // PGV: templates/cc/msg.go: a required oneof with no member set.
        for (o, oneof) in plan.oneofs.iter().enumerate() {
            if !oneof.required {
                continue;
            }
            if self.slots[base + nf + o].count == 0 {
                let mark = self.push_field(&oneof.name);
                self.report("value is required");
                self.path.truncate(mark);
            }
        }
        self.slots.truncate(base);
    }

    /// Reads the fields of a message, checking elements of repeated fields and map entries
    /// as they come and remembering the rest in the slots from `base`.
    fn read(&mut self, idx: usize, base: usize, bytes: &'b [u8]) -> Result<(), Malformed> {
        let t = self.t;
        let plan = &t.messages[idx];
        let mut reader = Reader { bytes };
        while let Some((number, raw)) = reader.field()? {
            let Some(i) = plan.field(number) else {
                continue;
            };
            let f = &plan.fields[i];
            match &f.shape {
                Shape::Single => {
                    let slot = &mut self.slots[base + i];
                    slot.count += 1;
                    slot.last = Some(raw);
                    if let Some(o) = f.oneof {
                        self.slots[base + plan.fields.len() + o].count = i as u32 + 1;
                    }
                }
                Shape::Repeated => {
                    let items = match &f.rules.ty {
                        Some(TypeRules::Repeated(r)) => r.items.as_ref(),
                        _ => None,
                    };
                    match (raw, &f.elem) {
                        (Raw::Len(b), ElemType::Scalar(s)) if s.packable() => {
                            for elem in packed(*s, b)? {
                                self.element(f, base + i, items, elem);
                            }
                        }
                        (Raw::Len(b), ElemType::Enum(_)) => {
                            for elem in packed(Scalar::Int32, b)? {
                                self.element(f, base + i, items, elem);
                            }
                        }
                        _ => self.element(f, base + i, items, raw),
                    }
                }
                Shape::Map { key, value } => {
                    let index = self.slots[base + i].count;
                    self.slots[base + i].count += 1;
                    let Raw::Len(entry) = raw else {
                        return Err(Malformed("map entry is not length-delimited"));
                    };
                    self.map_entry(f, index, key, value, entry)?;
                }
            }
        }
        Ok(())
    }

    fn element(&mut self, f: &'t FieldPlan, slot: usize, items: Option<&ElemRules>, raw: Raw<'b>) {
        let index = self.slots[slot].count;
        self.slots[slot].count += 1;
        let descends = matches!(f.elem, ElemType::Message(j) if self.t.messages[j].relevant);
        if items.is_none() && !descends {
            return;
        }
        let none = ElemRules::default();
        let mark = self.push_field(&f.name);
        self.path.push(Seg::Index(index));
        if let Err(Malformed(why)) = self.value(&f.elem, items.unwrap_or(&none), Some(raw)) {
            self.report(why);
        }
        self.path.truncate(mark);
    }

    fn map_entry(
        &mut self,
        f: &'t FieldPlan,
        index: u32,
        key_type: &ElemType,
        value_type: &ElemType,
        entry: &'b [u8],
    ) -> Result<(), Malformed> {
        let (mut key, mut value) = (None, None);
        let mut reader = Reader { bytes: entry };
        while let Some((number, raw)) = reader.field()? {
            match number {
                1 => key = Some(raw),
                2 => value = Some(raw),
                _ => {}
            }
        }
        let (keys, values, no_sparse) = match &f.rules.ty {
            Some(TypeRules::Map(r)) => (r.keys.as_ref(), r.values.as_ref(), r.no_sparse),
            _ => (None, None, false),
        };
        // An absent key is the default of its type, as a decoder reads it.
        let label = match key_type {
            ElemType::Scalar(k) => match scalar(*k, key)? {
                Val::S(b) => Seg::Key(b),
                Val::I(n) => Seg::Number(n.to_string()),
                Val::U(n) => Seg::Number(n.to_string()),
                Val::B(b) => Seg::Number(b.to_string()),
                Val::F(_) => Seg::Index(index),
            },
            _ => Seg::Index(index),
        };
        let mark = self.push_field(&f.name);
        self.path.push(label);
        // PGV's Go templates (map.go): a message value must be set. C++ maps cannot hold an
        // unset value, so Envoy reads one as the default message; Lanyard refuses it anyway.
        if no_sparse && value.is_none() && matches!(value_type, ElemType::Message(_)) {
            self.report("value cannot be sparse, all pairs must be non-nil");
        }
        let none = ElemRules::default();
        if let Some(k) = keys
            && let Err(Malformed(why)) = self.value(key_type, k, key)
        {
            self.report(why);
        }
        let result = self.value(value_type, values.unwrap_or(&none), value);
        if let Err(Malformed(why)) = result {
            self.report(why);
        }
        self.path.truncate(mark);
        Ok(())
    }

    /// `unique`: PGV compares the decoded items; equal encodings are equal items.
    fn unique(&mut self, f: &'t FieldPlan, bytes: &'b [u8]) {
        let mut items: Vec<Raw<'b>> = Vec::new();
        let mut reader = Reader { bytes };
        while let Ok(Some((number, raw))) = reader.field() {
            if number != f.number {
                continue;
            }
            match (raw, &f.elem) {
                (Raw::Len(b), ElemType::Scalar(s)) if s.packable() => {
                    items.extend(packed(*s, b).unwrap_or_default());
                }
                (Raw::Len(b), ElemType::Enum(_)) => {
                    items.extend(packed(Scalar::Int32, b).unwrap_or_default());
                }
                _ => items.push(raw),
            }
        }
        let key = |r: &Raw<'b>| -> (u8, u64, &'b [u8]) {
            match *r {
                Raw::Varint(v) => (0, v, &[]),
                Raw::Fixed64(v) => (1, v, &[]),
                Raw::Len(b) => (2, 0, b),
                Raw::Fixed32(v) => (5, u64::from(v), &[]),
            }
        };
        let mut seen = std::collections::HashSet::new();
        for (i, item) in items.iter().enumerate() {
            if !seen.insert(key(item)) {
                let len = self.path.len();
                self.path.push(Seg::Index(i as u32));
                self.report("repeated value must contain unique items");
                self.path.truncate(len);
            }
        }
    }

    /// Checks one value (a singular field, an element or a map key or value) against its
    /// rules; `None` is an absent field.
    fn value(
        &mut self,
        elem: &ElemType,
        rules: &ElemRules,
        raw: Option<Raw<'b>>,
    ) -> Result<(), Malformed> {
        match elem {
            ElemType::Scalar(s) => {
                if let Some(ty) = &rules.ty {
                    let v = scalar(*s, raw)?;
                    self.check_scalar(ty, v);
                }
            }
            ElemType::Enum(defined) => {
                if let Some(TypeRules::Enum(r)) = &rules.ty {
                    let v = match raw {
                        None => 0,
                        Some(Raw::Varint(v)) => v as i32,
                        Some(_) => return Err(Malformed("wire type does not match an enum")),
                    };
                    let mut found = Vec::new();
                    r.check(v, defined, &mut |m| found.push(m));
                    for m in found {
                        self.report(m);
                    }
                }
            }
            ElemType::Message(j) => self.message_value(*j, rules, raw)?,
        }
        Ok(())
    }

    fn check_scalar(&mut self, ty: &TypeRules, v: Val<'b>) {
        let mut found = Vec::new();
        let mut report = |m: String| found.push(m);
        match (ty, v) {
            (TypeRules::Int(r), Val::I(v)) => r.check(&v, &mut report),
            (TypeRules::Uint(r), Val::U(v)) => r.check(&v, &mut report),
            (TypeRules::Float(r), Val::F(v)) => r.check(&v, &mut report),
            (TypeRules::Bool(Some(c)), Val::B(v)) if v != *c => {
                report(format!("value must equal {c}"));
            }
            (TypeRules::Str(r), Val::S(b)) => match std::str::from_utf8(b) {
                Ok(s) => r.check(s, &self.t.uuid, &mut report),
                Err(_) => report("value must be valid UTF-8".to_owned()),
            },
            (TypeRules::Bytes(r), Val::S(b)) => r.check(b, &mut report),
            // PGV's checker refuses rules of another type than the field's.
            _ => {}
        }
        for m in found {
            self.report(m);
        }
    }

    fn message_value(
        &mut self,
        j: usize,
        rules: &ElemRules,
        raw: Option<Raw<'b>>,
    ) -> Result<(), Malformed> {
        let t = self.t;
        let m = &t.messages[j];
        let bytes = match raw {
            None => {
                if rules.required {
                    // PGV: templates/cc/wrapper.go has its own wording.
                    self.report(match m.kind {
                        MessageKind::Wrapper(_) => "value is required and must not be nil.",
                        _ => "value is required",
                    });
                }
                return Ok(());
            }
            Some(Raw::Len(b)) => b,
            Some(_) => return Err(Malformed("a message field is not length-delimited")),
        };
        match m.kind {
            MessageKind::Plain => {
                if !rules.skip {
                    self.message(j, bytes);
                }
            }
            MessageKind::Duration | MessageKind::Timestamp => {
                let (mut seconds, mut nanos) = (0i64, 0i32);
                let mut reader = Reader { bytes };
                while let Some((number, raw)) = reader.field()? {
                    match (number, raw) {
                        (1, Raw::Varint(v)) => seconds = v as i64,
                        (2, Raw::Varint(v)) => nanos = v as i32,
                        _ => {}
                    }
                }
                let v = super::rules::Instant { seconds, nanos };
                let mut found = Vec::new();
                match &rules.ty {
                    Some(TypeRules::Duration(r)) => r.check_duration(v, &mut |m| found.push(m)),
                    Some(TypeRules::Timestamp(r)) => r.check(&v, &mut |m| found.push(m)),
                    _ => {}
                }
                for msg in found {
                    self.report(msg);
                }
            }
            MessageKind::Wrapper(s) => {
                if let Some(ty) = &rules.ty {
                    let mut inner = None;
                    let mut reader = Reader { bytes };
                    while let Some((number, raw)) = reader.field()? {
                        if number == 1 {
                            inner = Some(raw);
                        }
                    }
                    let v = scalar(s, inner)?;
                    self.check_scalar(ty, v);
                }
            }
            MessageKind::Any => self.any(rules, bytes)?,
        }
        Ok(())
    }

    /// An `Any`: its type URL against the rules, then what it packs, as Envoy validates a
    /// typed config when it instantiates the extension
    /// (source/common/protobuf/utility.h, `MessageUtil::anyConvertAndValidate`).
    fn any(&mut self, rules: &ElemRules, bytes: &'b [u8]) -> Result<(), Malformed> {
        let (mut type_url, mut value): (&[u8], &[u8]) = (&[], &[]);
        let mut reader = Reader { bytes };
        while let Some((number, raw)) = reader.field()? {
            match (number, raw) {
                (1, Raw::Len(b)) => type_url = b,
                (2, Raw::Len(b)) => value = b,
                _ => {}
            }
        }
        let type_url = std::str::from_utf8(type_url)
            .map_err(|_| Malformed("the type URL of an Any is not UTF-8"))?;
        if let Some(TypeRules::Any(r)) = &rules.ty {
            let mut found = Vec::new();
            r.check(type_url, &mut |m| found.push(m));
            for m in found {
                self.report(m);
            }
        }
        if rules.skip {
            return Ok(());
        }
        let name = type_url.rsplit('/').next().unwrap_or(type_url);
        if let Some(k) = self.t.index(name) {
            let mark = self.path.len();
            self.path.push(Seg::Any(name));
            self.message(k, value);
            self.path.truncate(mark);
        }
        Ok(())
    }
}
