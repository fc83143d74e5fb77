//! Image references in rendered Kubernetes documents (a Helm release's manifest): every value
//! of an `image` key, in any document, at any depth — a string (`image: registry/team/app:1`),
//! or a map of the parts many operators' custom resources use
//! (`image: {registry, repository, tag}` or `{repository, tag}`, `digest` instead of or with
//! `tag`). The documents are walked as they are parsed, keeping only those values: a release of
//! thousands of documents costs its image list, not a tree of every node.
//!
//! Owns: which values are images. May call: nothing else.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::scalar::Scalar;

/// Every image named in the YAML stream `manifest`, sorted and deduplicated. The parser's
/// budget scales with the input (already capped by the caller), so a release of 5,000
/// documents is read like one of five.
pub fn images(manifest: &str) -> Result<Vec<String>, String> {
    let size = manifest.len();
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            // Each document, node and event costs at least a byte of input.
            max_documents: size / 4 + 1,
            max_nodes: size + 1,
            max_events: 2 * size + 16,
        },
    };
    let documents: Vec<Found> = serde_saphyr::from_str_multiple_with_options(manifest, options)
        .map_err(|e| one_line(&e.to_string()))?;
    let mut images: Vec<String> = documents.into_iter().flat_map(|d| d.0).collect();
    images.sort();
    images.dedup();
    Ok(images)
}

/// The parser's message (which may quote the input over several lines) as one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The images found in one value (and everything under it).
#[derive(Default)]
struct Found(Vec<String>);

impl<'de> serde::Deserialize<'de> for Found {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Walk)
    }
}

struct Walk;

impl<'de> Visitor<'de> for Walk {
    type Value = Found;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Found, E> {
        Ok(Found::default())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Found, E> {
        Ok(Found::default())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Found, E> {
        Ok(Found::default())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Found, E> {
        Ok(Found::default())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Found, E> {
        Ok(Found::default())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Found, E> {
        Ok(Found::default())
    }
    fn visit_none<E: de::Error>(self) -> Result<Found, E> {
        Ok(Found::default())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Found, A::Error> {
        let mut found = Found::default();
        while let Some(inner) = seq.next_element::<Found>()? {
            found.0.extend(inner.0);
        }
        Ok(found)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        let mut found = Found::default();
        while let Some(key) = map.next_key::<Key>()? {
            if key.0 {
                match map.next_value::<Image>()? {
                    Image::Named(image) => found.0.push(image),
                    Image::Under(inner) => found.0.extend(inner.0),
                }
            } else {
                found.0.extend(map.next_value::<Found>()?.0);
            }
        }
        Ok(found)
    }
}

/// Whether a key is `image`; other keys (even non-string ones) are not.
struct Key(bool);

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(Key(key == "image"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Key, E> {
                Ok(Key(false))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Key, E> {
                Ok(Key(false))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Key, E> {
                Ok(Key(false))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Key, E> {
                Ok(Key(false))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key(false))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// The value of an `image` key: a reference, a map of its parts, or something else to look
/// into.
enum Image {
    Named(String),
    Under(Found),
}

impl<'de> serde::Deserialize<'de> for Image {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ImageVisitor)
    }
}

struct ImageVisitor;

impl<'de> Visitor<'de> for ImageVisitor {
    type Value = Image;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an image reference or its parts")
    }

    fn visit_str<E: de::Error>(self, image: &str) -> Result<Image, E> {
        Ok(if image.is_empty() {
            Image::Under(Found::default())
        } else {
            Image::Named(image.to_string())
        })
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Image, E> {
        Ok(Image::Under(Found::default()))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Image, E> {
        Ok(Image::Under(Found::default()))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Image, E> {
        Ok(Image::Under(Found::default()))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Image, E> {
        Ok(Image::Under(Found::default()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Image, E> {
        Ok(Image::Under(Found::default()))
    }
    fn visit_none<E: de::Error>(self) -> Result<Image, E> {
        Ok(Image::Under(Found::default()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Image, A::Error> {
        Walk.visit_seq(seq).map(Image::Under)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Image, A::Error> {
        let (mut registry, mut repository, mut tag, mut digest) = (None, None, None, None);
        let mut under = Found::default();
        while let Some(key) = map.next_key::<String>()? {
            let part = match key.as_str() {
                "registry" => &mut registry,
                "repository" => &mut repository,
                "tag" => &mut tag,
                "digest" => &mut digest,
                _ => {
                    under.0.extend(map.next_value::<Found>()?.0);
                    continue;
                }
            };
            *part = map.next_value::<Scalar<true>>()?.0;
        }
        let Some(repository) = repository.filter(|r| !r.is_empty()) else {
            return Ok(Image::Under(under));
        };
        let mut image = match registry.filter(|r| !r.is_empty()) {
            Some(registry) => format!("{}/{repository}", registry.trim_end_matches('/')),
            None => repository,
        };
        if let Some(tag) = tag.filter(|t| !t.is_empty()) {
            image = format!("{image}:{tag}");
        }
        if let Some(digest) = digest.filter(|d| !d.is_empty()) {
            image = format!("{image}@{digest}");
        }
        under.0.push(image);
        Ok(Image::Under(under))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_maps_of_parts_in_every_document() {
        let manifest = "---\n# Source: api/templates/deployment.yaml\napiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      initContainers:\n        - name: migrate\n          image: \"registry.example.com/team/api:41\"\n      containers:\n        - name: app\n          image: registry.example.com/team/api:41\n---\napiVersion: monitoring.coreos.com/v1\nkind: Prometheus\nspec:\n  image:\n    registry: registry.example.com\n    repository: team/prometheus\n    tag: 2.53\n  sidecar:\n    image: {repository: registry.example.com/team/sidecar, digest: \"sha256:abc\"}\n  other:\n    image: {pullPolicy: Always}\n---\n---\nkind: CronJob\nspec: {jobTemplate: {spec: {template: {spec: {containers: [{image: registry.example.com/team/report@sha256:abc}]}}}}}\n";
        assert_eq!(
            images(manifest).unwrap(),
            [
                "registry.example.com/team/api:41",
                "registry.example.com/team/prometheus:2.53",
                "registry.example.com/team/report@sha256:abc",
                "registry.example.com/team/sidecar@sha256:abc",
            ]
        );
    }

    #[test]
    fn thousands_of_documents_are_read_and_errors_are_one_line() {
        let manifest: String = (0..5_000)
            .map(|n| {
                format!(
                    "---\nkind: ConfigMap\nmetadata: {{name: c{n}}}\ndata: {{image: \"r/x:{n}\"}}\n"
                )
            })
            .collect();
        assert_eq!(images(&manifest).unwrap().len(), 5_000);
        let error = images("a: [unclosed\n  b: c\n").unwrap_err();
        assert!(!error.contains('\n'), "{error}");
    }
}
