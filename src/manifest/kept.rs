//! What the index keeps of an image's annotations and config labels: only the keys linking and
//! the rules read, each value at most [`MAX_VALUE_BYTES`]. Anything else a client put there is
//! skipped while parsing — never allocated as a map, never copied into a record — so a config
//! with 90,000 labels costs what its body costs, once, and the records referring to it stay
//! small. A kept key whose value is over the limit is dropped and the record says so.
//!
//! Owns: the list of kept keys and the value limit. May call: nothing outside `manifest`.

use std::{collections::BTreeMap, fmt};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{REVISION, SOURCE};
use crate::scalar::Text;

/// The annotation and label keys recorded: what commit linking (`linking::COMMIT_LABELS`) and
/// the rules (`source`) read.
pub const KEPT_KEYS: [&str; 4] = [REVISION, "org.label-schema.vcs-ref", "vcs-ref", SOURCE];

/// A kept value longer than this is dropped (a commit id is 40 or 64 characters, a source URL
/// rarely a few hundred).
pub const MAX_VALUE_BYTES: usize = 1024;

/// The kept entries of an annotation or label map, and what was dropped for being too long.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kept {
    pub entries: BTreeMap<String, String>,
    /// `key (N bytes)` for each kept key whose value was over the limit.
    pub dropped: Vec<String>,
}

impl Kept {
    /// Keeps what a map (already parsed elsewhere) holds of the kept keys.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut kept = Self::default();
        for (key, value) in pairs {
            if let Some(key) = kept_key(key) {
                kept.offer(key, value);
            }
        }
        kept
    }

    fn offer(&mut self, key: &'static str, value: &str) {
        if value.len() > MAX_VALUE_BYTES {
            self.dropped.push(format!("{key} ({} bytes)", value.len()));
        } else {
            self.entries.insert(key.to_string(), value.to_string());
        }
    }

    /// The record's `problem` text for what was dropped, if anything was.
    pub fn problem(&self, what: &str) -> Option<String> {
        (!self.dropped.is_empty()).then(|| {
            format!(
                "{what} over {MAX_VALUE_BYTES} bytes not recorded: {}",
                self.dropped.join(", ")
            )
        })
    }
}

fn kept_key(key: &str) -> Option<&'static str> {
    KEPT_KEYS.iter().copied().find(|k| *k == key)
}

impl<'de> serde::Deserialize<'de> for Kept {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KeptVisitor)
    }
}

struct KeptVisitor;

impl<'de> Visitor<'de> for KeptVisitor {
    type Value = Kept;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of strings")
    }

    // `null` (Docker writes `"Labels": null`) and any other non-map are read as empty: labels
    // are evidence regkeeper looks for, never a reason to reject what the registry accepted.
    fn visit_unit<E: de::Error>(self) -> Result<Kept, E> {
        Ok(Kept::default())
    }
    fn visit_none<E: de::Error>(self) -> Result<Kept, E> {
        Ok(Kept::default())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Kept, E> {
        Ok(Kept::default())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Kept, E> {
        Ok(Kept::default())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Kept, E> {
        Ok(Kept::default())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Kept, E> {
        Ok(Kept::default())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Kept, E> {
        Ok(Kept::default())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Kept, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Kept::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kept, A::Error> {
        let mut kept = Kept::default();
        while let Some(key) = map.next_key::<KeyName>()? {
            match key.0 {
                Some(key) => {
                    if let Some(value) = map.next_value::<Text>()?.0 {
                        kept.offer(key, &value);
                    }
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(kept)
    }
}

/// A map key, matched against the kept keys without allocating.
struct KeyName(Option<&'static str>);

impl<'de> serde::Deserialize<'de> for KeyName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<KeyName, E> {
                Ok(KeyName(kept_key(key)))
            }
        }
        deserializer.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kept_keys_within_the_limit_are_kept() {
        let long = "x".repeat(MAX_VALUE_BYTES + 1);
        let json = format!(
            r#"{{"a":"1","vcs-ref":"abc","{SOURCE}":{{"nested":[1,2]}},"{REVISION}":"{long}","b":[null]}}"#
        );
        let kept: Kept = serde_json::from_str(&json).unwrap();
        assert_eq!(
            kept.entries,
            BTreeMap::from([("vcs-ref".to_string(), "abc".to_string())])
        );
        assert_eq!(kept.dropped, [format!("{REVISION} (1025 bytes)")]);
        assert!(kept.problem("labels").unwrap().contains(REVISION));
        for empty in ["null", "3", "\"s\"", "[1]", "{}"] {
            let kept: Kept = serde_json::from_str(empty).unwrap();
            assert_eq!(kept, Kept::default(), "{empty}");
        }
        let from_pairs = Kept::from_pairs([("vcs-ref", "abc"), ("other", "y")]);
        assert_eq!(from_pairs.entries.len(), 1);
        assert_eq!(from_pairs.problem("annotations"), None);
    }
}
