//! Deserializing a parsed [`Node`] the way serde_yaml deserializes the same
//! YAML, or refusing to.
//!
//! serde_yaml resolves a scalar by what the type asks for: a string field
//! takes any scalar's text (`80`, `true` and `null` alike), an `Option` is
//! `None` for an empty or null plain scalar, numbers and booleans come from
//! plain scalars only. The conversions here are those, restricted to the
//! forms whose meaning is beyond doubt; anything else is an error, and the
//! caller falls back to serde_yaml.

use std::borrow::Cow;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

use super::{Node, Scalar};

/// Never shown: the caller parses again with serde_yaml for the message.
#[derive(Debug)]
pub struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not in the fast YAML subset")
    }
}

impl std::error::Error for Refused {}

impl de::Error for Refused {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Self
    }
}

type R<T> = Result<T, Refused>;

pub struct NodeDe<'n, 'a>(pub &'n Node<'a>);

impl<'a> Scalar<'a> {
    fn is_null(&self) -> bool {
        self.plain && matches!(&*self.text, "" | "~" | "null" | "Null" | "NULL")
    }

    fn bool(&self) -> Option<bool> {
        match &*self.text {
            _ if !self.plain => None,
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            _ => None,
        }
    }

    /// A plain decimal integer without sign, leading zero or underscore:
    /// the only number form taken here.
    fn unsigned(&self) -> Option<u64> {
        let t = &*self.text;
        let simple = self.plain
            && !t.is_empty()
            && t.bytes().all(|c| c.is_ascii_digit())
            && (t == "0" || !t.starts_with('0'));
        if simple { t.parse().ok() } else { None }
    }

    fn signed(&self) -> Option<i64> {
        if let Some(u) = self.unsigned() {
            return i64::try_from(u).ok();
        }
        let digits = self.text.strip_prefix('-')?;
        let abs = Scalar {
            text: Cow::Borrowed(digits),
            plain: self.plain,
        }
        .unsigned()?;
        if abs == 0 {
            return None;
        }
        0i64.checked_sub_unsigned(abs)
    }

    /// A plain scalar that serde_yaml might read as a number (`+1`, `0x1f`,
    /// `1e3`, `.inf`) when the type leaves it open.
    fn maybe_number(&self) -> bool {
        self.plain
            && self
                .text
                .bytes()
                .next()
                .is_some_and(|c| c.is_ascii_digit() || matches!(c, b'+' | b'-' | b'.'))
    }

    fn visit_str<'de, V: Visitor<'de>>(&self, visitor: V) -> R<V::Value> {
        match &self.text {
            Cow::Borrowed(s) => visitor.visit_str(s),
            Cow::Owned(s) => visitor.visit_str(s),
        }
    }
}

impl<'de, 'n, 'a> Deserializer<'de> for NodeDe<'n, 'a> {
    type Error = Refused;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        match self.0 {
            Node::Seq(items) => visitor.visit_seq(Items(items.iter())),
            Node::Map(entries) => visitor.visit_map(Entries {
                iter: entries.iter(),
                value: None,
            }),
            Node::Scalar(s) if s.is_null() => visitor.visit_unit(),
            Node::Scalar(s) => {
                if let Some(b) = s.bool() {
                    visitor.visit_bool(b)
                } else if let Some(u) = s.unsigned() {
                    visitor.visit_u64(u)
                } else if let Some(i) = s.signed() {
                    visitor.visit_i64(i)
                } else if s.maybe_number() {
                    Err(Refused)
                } else {
                    s.visit_str(visitor)
                }
            }
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        match self.0 {
            Node::Scalar(s) => visitor.visit_bool(s.bool().ok_or(Refused)?),
            _ => Err(Refused),
        }
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        match self.0 {
            Node::Scalar(s) => visitor.visit_u64(s.unsigned().ok_or(Refused)?),
            _ => Err(Refused),
        }
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        match self.0 {
            Node::Scalar(s) => visitor.visit_i64(s.signed().ok_or(Refused)?),
            _ => Err(Refused),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        match self.0 {
            Node::Scalar(s) => s.visit_str(visitor),
            _ => Err(Refused),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        match self.0 {
            Node::Scalar(s) if s.is_null() => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        match self.0 {
            Node::Scalar(s) if s.is_null() => visitor.visit_unit(),
            _ => Err(Refused),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> R<V::Value> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> R<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        match self.0 {
            Node::Seq(items) => visitor.visit_seq(Items(items.iter())),
            _ => Err(Refused),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> R<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> R<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        match self.0 {
            Node::Map(entries) => visitor.visit_map(Entries {
                iter: entries.iter(),
                value: None,
            }),
            _ => Err(Refused),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> R<V::Value> {
        self.deserialize_map(visitor)
    }

    /// Unit variants only, written as their name.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> R<V::Value> {
        match self.0 {
            Node::Scalar(s) if !s.text.is_empty() => visitor.visit_enum(UnitVariant(s)),
            _ => Err(Refused),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        visitor.visit_unit()
    }

    fn deserialize_f32<V: Visitor<'de>>(self, _visitor: V) -> R<V::Value> {
        Err(Refused)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, _visitor: V) -> R<V::Value> {
        Err(Refused)
    }

    fn deserialize_char<V: Visitor<'de>>(self, _visitor: V) -> R<V::Value> {
        Err(Refused)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, _visitor: V) -> R<V::Value> {
        Err(Refused)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, _visitor: V) -> R<V::Value> {
        Err(Refused)
    }
}

struct Items<'n, 'a>(std::slice::Iter<'n, Node<'a>>);

impl<'de, 'n, 'a> SeqAccess<'de> for Items<'n, 'a> {
    type Error = Refused;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> R<Option<T::Value>> {
        self.0
            .next()
            .map(|n| seed.deserialize(NodeDe(n)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Entries<'n, 'a> {
    iter: std::slice::Iter<'n, (Scalar<'a>, Node<'a>)>,
    value: Option<&'n Node<'a>>,
}

impl<'de, 'n, 'a> MapAccess<'de> for Entries<'n, 'a> {
    type Error = Refused;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> R<Option<K::Value>> {
        let Some((key, value)) = self.iter.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        seed.deserialize(KeyDe(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> R<V::Value> {
        seed.deserialize(NodeDe(self.value.take().ok_or(Refused)?))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// A mapping key: a scalar, deserialized like a scalar value.
struct KeyDe<'n, 'a>(&'n Scalar<'a>);

impl<'de, 'n, 'a> Deserializer<'de> for KeyDe<'n, 'a> {
    type Error = Refused;

    /// Only keys that are strings whatever the type: the rest is refused.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        let s = self.0;
        if s.maybe_number() || s.bool().is_some() || s.is_null() {
            return Err(Refused);
        }
        s.visit_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.0.visit_str(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.0.visit_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        self.0.visit_str(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct
        enum ignored_any
    }
}

struct UnitVariant<'n, 'a>(&'n Scalar<'a>);

impl<'de, 'n, 'a> EnumAccess<'de> for UnitVariant<'n, 'a> {
    type Error = Refused;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> R<(V::Value, Self)> {
        let name: &str = &self.0.text;
        let v = seed.deserialize(IntoDeserializer::<Refused>::into_deserializer(name))?;
        Ok((v, self))
    }
}

impl<'de, 'n, 'a> VariantAccess<'de> for UnitVariant<'n, 'a> {
    type Error = Refused;

    fn unit_variant(self) -> R<()> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> R<T::Value> {
        Err(Refused)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> R<V::Value> {
        Err(Refused)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> R<V::Value> {
        Err(Refused)
    }
}
