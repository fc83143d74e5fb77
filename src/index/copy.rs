//! Moving a whole index between engines (`regkeeper index copy`): every stored key and value
//! — tags, manifests, links, pulls, the audit log, leases — copied as stored, in key order, a
//! batch at a time. The target remembers how far it got, so an interrupted copy goes on from
//! there; at the end both sides are read again and compared.

use sha2::{Digest as _, Sha256};

use super::{
    IndexError,
    kv::{KvStore, KvWrite},
};

/// Where the target keeps the last key copied while a copy is under way.
const PROGRESS_KEY: &[u8] = b"\0copy-progress";
/// Keys per batch written to the target.
const BATCH: usize = 2_000;

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Entries written by this run (a resumed copy counts only its own).
    pub copied: u64,
    /// Whether this run went on from an interrupted one.
    pub resumed: bool,
    /// Entries on each side when compared, and whether they were equal.
    pub entries: u64,
    pub verified: bool,
}

/// Copies `from` into `to`, which must be empty (apart from a fresh schema version) or hold an
/// interrupted copy. `progress` is told how many entries were written so far.
pub fn copy(
    from: &dyn KvStore,
    to: &dyn KvStore,
    progress: &mut dyn FnMut(u64),
) -> Result<CopyReport, IndexError> {
    let resume_after = to.get(PROGRESS_KEY)?;
    if resume_after.is_none() {
        refuse_unless_fresh(to)?;
    }
    let resumed = resume_after.is_some();
    let mut batch: Vec<KvWrite> = Vec::with_capacity(BATCH + 1);
    let mut copied = 0u64;
    let mut flush = |batch: &mut Vec<KvWrite>, copied: &mut u64| -> Result<(), IndexError> {
        let Some((last, _)) = batch.last() else {
            return Ok(());
        };
        let marker = (PROGRESS_KEY.to_vec(), Some(last.clone()));
        *copied += batch.len() as u64;
        batch.push(marker);
        to.apply(std::mem::take(batch))?;
        progress(*copied);
        Ok(())
    };
    from.each(b"", &mut |key, value| {
        if key == PROGRESS_KEY || resume_after.as_deref().is_some_and(|after| key <= after) {
            return Ok(());
        }
        batch.push((key.to_vec(), Some(value.to_vec())));
        if batch.len() >= BATCH {
            flush(&mut batch, &mut copied)?;
        }
        Ok(())
    })?;
    flush(&mut batch, &mut copied)?;
    to.apply(vec![(PROGRESS_KEY.to_vec(), None)])?;
    to.flush()?;
    to.settle_after_bulk_load()?;
    let (source, source_entries) = fingerprint(from)?;
    let (target, target_entries) = fingerprint(to)?;
    Ok(CopyReport {
        copied,
        resumed,
        entries: source_entries,
        verified: source == target && source_entries == target_entries,
    })
}

/// A target holding anything but a schema version would be merged into: refused. Its first two
/// keys tell (a fresh store holds the schema version at most).
fn refuse_unless_fresh(to: &dyn KvStore) -> Result<(), IndexError> {
    let first = to.page(b"", None, 2)?;
    match first
        .iter()
        .find(|(key, _)| key != super::store::SCHEMA_KEY)
    {
        None => Ok(()),
        Some((key, _)) => Err(IndexError::Settings(format!(
            "the target index is not empty (it holds {}, among others): copy into an empty one",
            String::from_utf8_lossy(key).replace('\0', "/")
        ))),
    }
}

/// A digest of every entry in key order, and how many there are.
fn fingerprint(kv: &dyn KvStore) -> Result<([u8; 32], u64), IndexError> {
    let mut hash = Sha256::new();
    let mut entries = 0u64;
    kv.each(b"", &mut |key, value| {
        if key == PROGRESS_KEY {
            return Ok(());
        }
        hash.update((key.len() as u64).to_be_bytes());
        hash.update(key);
        hash.update((value.len() as u64).to_be_bytes());
        hash.update(value);
        entries += 1;
        Ok(())
    })?;
    Ok((hash.finalize().into(), entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Index, KvStore, MemoryKv, Store, UnixMillis, Write, kv::KvRead};

    fn filled(tags: usize) -> Store<MemoryKv> {
        let store = Store::new(MemoryKv::default()).unwrap();
        let writes: Vec<Write> = (0..tags)
            .map(|i| {
                Write::push(
                    format!("team/app-{}", i % 7),
                    format!("v{i}"),
                    format!("sha256:{i:064x}"),
                    UnixMillis(i as u64),
                )
            })
            .collect();
        store.apply(&writes).unwrap();
        store
    }

    #[test]
    fn a_copy_holds_every_entry_and_an_interrupted_one_goes_on() {
        let source = filled(5_000);
        let target = Store::new(MemoryKv::default()).unwrap();
        let report = copy(source.kv_for_tests(), target.kv_for_tests(), &mut |_| {}).unwrap();
        assert!(report.verified, "{report:?}");
        assert_eq!(report.copied, report.entries);
        assert_eq!(
            target.tags("team/app-3").unwrap(),
            source.tags("team/app-3").unwrap()
        );

        // Interrupted after the first batches: the marker says where; the rerun finishes.
        let partial = MemoryKv::default();
        let mut all = Vec::new();
        source
            .kv_for_tests()
            .each(b"", &mut |k, v| {
                all.push((k.to_vec(), Some(v.to_vec())));
                Ok(())
            })
            .unwrap();
        let cut = all[BATCH * 2 - 1].0.clone();
        let mut first: Vec<KvWrite> = all[..BATCH * 2].to_vec();
        first.push((PROGRESS_KEY.to_vec(), Some(cut)));
        partial.apply(first).unwrap();
        let report = copy(source.kv_for_tests(), &partial, &mut |_| {}).unwrap();
        assert!(report.resumed && report.verified, "{report:?}");
        assert_eq!(report.copied, report.entries - (BATCH as u64) * 2);
        assert!(partial.get(PROGRESS_KEY).unwrap().is_none());
    }

    #[test]
    fn a_target_with_data_of_its_own_is_refused_and_left_alone() {
        let source = filled(10);
        let target = filled(3);
        let error = copy(source.kv_for_tests(), target.kv_for_tests(), &mut |_| {}).unwrap_err();
        assert!(error.to_string().contains("not empty"), "{error}");
        assert_eq!(target.tags("team/app-0").unwrap().len(), 1);
    }
}
