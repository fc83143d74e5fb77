//! A document value read as text when it is a scalar, and skipped (never allocated) when it is
//! anything else: what the parsers of client- and cluster-supplied documents read keys into
//! (image annotations and labels, image parts in rendered Helm manifests). A leaf.
//!
//! May call: nothing.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A string's text, or with `NUMBERS` a number's too (`tag: 1.2` is a number to YAML); `None`
/// for everything else, which is skipped without being kept.
pub struct Scalar<const NUMBERS: bool>(pub Option<String>);

/// Only strings are text.
pub type Text = Scalar<false>;

impl<'de, const NUMBERS: bool> serde::Deserialize<'de> for Scalar<NUMBERS> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<const NUMBERS: bool>;
        impl<'de, const NUMBERS: bool> Visitor<'de> for V<NUMBERS> {
            type Value = Scalar<NUMBERS>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(if NUMBERS { "a scalar" } else { "a string" })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar(NUMBERS.then(|| v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar(NUMBERS.then(|| v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar(NUMBERS.then(|| v.to_string())))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Scalar(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
        }
        deserializer.deserialize_any(V::<NUMBERS>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_text_numbers_only_when_asked_and_the_rest_is_skipped() {
        let text = |json: &str| serde_json::from_str::<Text>(json).unwrap().0;
        let scalar = |json: &str| serde_json::from_str::<Scalar<true>>(json).unwrap().0;
        assert_eq!(text(r#""v1""#).as_deref(), Some("v1"));
        assert_eq!(text("1.2"), None);
        assert_eq!(scalar("1.2").as_deref(), Some("1.2"));
        assert_eq!(scalar("7").as_deref(), Some("7"));
        for skipped in ["true", "null", "[1, [2]]", r#"{"a": {"b": 1}}"#] {
            assert_eq!(text(skipped), None, "{skipped}");
            assert_eq!(scalar(skipped), None, "{skipped}");
        }
    }
}
