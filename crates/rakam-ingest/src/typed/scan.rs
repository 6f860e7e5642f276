//! One NDJSON line into borrowed scalars: no `serde_json::Value`, no map,
//! and strings without escapes are slices of the request body. A nested
//! object or array ends the line with an error, since only the general
//! path flattens or keeps them.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

/// A property value as parsed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawScalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    /// A positive integer beyond i64 (the general path keeps its digits as
    /// text, so the typed path never stores it).
    HugeUnsigned,
    Float(f64),
    Str(Cow<'a, str>),
    /// An object or an array (only as the value of `properties`, which
    /// is not an object there).
    Nested,
}

pub(crate) type Fields<'a> = Vec<(Cow<'a, str>, RawScalar<'a>)>;

/// What the top level of a line held besides its properties.
#[derive(Debug, Default)]
pub(crate) struct LineShape<'a> {
    /// The last `collection` key, when its value is a string.
    pub collection: Option<Cow<'a, str>>,
    /// Whether the last `properties` key held an object (its fields are
    /// in the `properties` buffer).
    pub properties_object: bool,
    /// Whether an `api` key with a non-null value was present.
    pub api: bool,
}

/// Parses one line. `top` receives every top-level key but `api` (the
/// properties of a bare line), `properties` the fields of a `properties`
/// object (those of an envelope).
pub(crate) struct LineSeed<'b, 'a> {
    pub top: &'b mut Fields<'a>,
    pub properties: &'b mut Fields<'a>,
}

impl<'de, 'b> DeserializeSeed<'de> for LineSeed<'b, 'de> {
    type Value = LineShape<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, 'b> Visitor<'de> for LineSeed<'b, 'de> {
    type Value = LineShape<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut shape = LineShape::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match &*key {
                "api" => shape.api = !map.next_value::<RawScalar<'de>>()?.is_null(),
                "properties" => {
                    let seed = PropertiesSeed {
                        out: &mut *self.properties,
                    };
                    match map.next_value_seed(seed)? {
                        None => {
                            shape.properties_object = true;
                            self.top.push((key, RawScalar::Nested));
                        }
                        Some(value) => {
                            shape.properties_object = false;
                            self.top.push((key, value));
                        }
                    }
                }
                "collection" => {
                    let value = map.next_value::<RawScalar<'de>>()?;
                    shape.collection = match &value {
                        RawScalar::Str(name) => Some(name.clone()),
                        _ => None,
                    };
                    self.top.push((key, value));
                }
                _ => {
                    let value = map.next_value::<RawScalar<'de>>()?;
                    self.top.push((key, value));
                }
            }
        }
        Ok(shape)
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(text))
    }

    fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text.to_string()))
    }

    fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text))
    }
}

/// The value of `properties`: an object fills `out` (and gives `None`),
/// anything else is returned as a scalar.
struct PropertiesSeed<'b, 'a> {
    out: &'b mut Fields<'a>,
}

impl<'de, 'b> DeserializeSeed<'de> for PropertiesSeed<'b, 'de> {
    type Value = Option<RawScalar<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, 'b> Visitor<'de> for PropertiesSeed<'b, 'de> {
    type Value = Option<RawScalar<'de>>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // A later `properties` key replaces an earlier one, as in a map.
        self.out.clear();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value = map.next_value::<RawScalar<'de>>()?;
            self.out.push((key, value));
        }
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        ScalarVisitor.visit_seq(seq).map(Some)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Some(RawScalar::Null))
    }

    fn visit_bool<E>(self, flag: bool) -> Result<Self::Value, E> {
        Ok(Some(RawScalar::Bool(flag)))
    }

    fn visit_i64<E>(self, number: i64) -> Result<Self::Value, E> {
        Ok(Some(RawScalar::Int(number)))
    }

    fn visit_u64<E>(self, number: u64) -> Result<Self::Value, E> {
        Ok(Some(
            i64::try_from(number).map_or(RawScalar::HugeUnsigned, RawScalar::Int),
        ))
    }

    fn visit_f64<E>(self, number: f64) -> Result<Self::Value, E> {
        Ok(Some(RawScalar::Float(number)))
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Some(RawScalar::Str(Cow::Borrowed(text))))
    }

    fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Some(RawScalar::Str(Cow::Owned(text.to_string()))))
    }

    fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
        Ok(Some(RawScalar::Str(Cow::Owned(text))))
    }
}

impl RawScalar<'_> {
    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }
}

impl<'de> serde::Deserialize<'de> for RawScalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = RawScalar<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(RawScalar::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(RawScalar::Null)
    }

    fn visit_bool<E>(self, flag: bool) -> Result<Self::Value, E> {
        Ok(RawScalar::Bool(flag))
    }

    fn visit_i64<E>(self, number: i64) -> Result<Self::Value, E> {
        Ok(RawScalar::Int(number))
    }

    fn visit_u64<E>(self, number: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(number).map_or(RawScalar::HugeUnsigned, RawScalar::Int))
    }

    fn visit_f64<E>(self, number: f64) -> Result<Self::Value, E> {
        Ok(RawScalar::Float(number))
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(RawScalar::Str(Cow::Borrowed(text)))
    }

    fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
        Ok(RawScalar::Str(Cow::Owned(text.to_string())))
    }

    fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
        Ok(RawScalar::Str(Cow::Owned(text)))
    }

    // A nested value stops the line at once: only the general path
    // flattens or keeps it. Skipping it instead would recurse once per
    // level in the parser (a stack overflow on deep input) and would not
    // check its text (UTF-8, escapes) as the general path does.
    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<Self::Value, A::Error> {
        Err(A::Error::custom(NESTED))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<Self::Value, A::Error> {
        Err(A::Error::custom(NESTED))
    }
}

/// The error a nested value stops a line with.
pub(crate) const NESTED: &str = "rakam: nested value";
