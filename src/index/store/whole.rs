//! A whole-index read's records, from keys and values as the engine finds them.

use super::{LINK, MANIFEST, PULL, RESTORE, TAG, decode};
use crate::index::{IndexError, Record};

/// The record `key` holds, if a whole-index read wants it (not repositories, the audit log,
/// leases or the index's own state).
pub(super) fn record(key: &[u8], value: &[u8]) -> Result<Option<Record>, IndexError> {
    let Some((&kind, rest)) = key.split_first() else {
        return Ok(None);
    };
    Ok(Some(match kind {
        TAG => Record::Tag(decode(key, value)?),
        MANIFEST => Record::Manifest(decode(key, value)?),
        LINK => Record::Link(decode(key, value)?),
        RESTORE => Record::Restore(decode(key, value)?),
        PULL => {
            // The key is the repository, NUL, the reference (neither holds a NUL).
            let Some(at) = rest.iter().position(|b| *b == 0) else {
                return Err(IndexError::BadRecord(
                    String::from_utf8_lossy(key).into_owned(),
                    "a pull counter's key names no reference".into(),
                ));
            };
            Record::Pull {
                repository: String::from_utf8_lossy(&rest[..at]).into_owned(),
                reference: String::from_utf8_lossy(&rest[at + 1..]).into_owned(),
                stats: decode(key, value)?,
            }
        }
        _ => return Ok(None),
    }))
}
