//! What a batch being built reads: its transaction's snapshot, under the writes of this
//! process's previous batch when that one is still committing (so the two overlap), and a
//! record of everything read — the keys and ranges the write phase checks no other writer
//! changed, and the keys found absent, which it inserts without `ON CONFLICT`.

use std::{cell::RefCell, collections::BTreeMap, sync::Arc};

use super::{range, transaction::Transaction};
use crate::index::{
    IndexError,
    kv::{KvPair, KvRead, KvWrite},
};

/// A set of keys held as 64-bit hashes, so a batch's tens of thousands of keys are not copied
/// again. A collision can only make a present key look absent (its insert is then a unique
/// violation: the batch runs again) or a key look read (the batch is built again) — and the
/// seed differs every time.
#[derive(Default)]
pub struct KeySet {
    seed: foldhash::fast::RandomState,
    hashes: std::collections::HashSet<u64, foldhash::fast::RandomState>,
}

impl KeySet {
    fn insert(&mut self, key: &[u8]) {
        let hash = std::hash::BuildHasher::hash_one(&self.seed, key);
        self.hashes.insert(hash);
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.hashes
            .contains(&std::hash::BuildHasher::hash_one(&self.seed, key))
    }
}

/// The writes of a batch not known to be committed yet: in key order, one per key, shared
/// with its write phase.
pub struct Overlay(Arc<Vec<KvWrite>>);

impl Overlay {
    pub fn new(writes: Arc<Vec<KvWrite>>) -> Self {
        Self(writes)
    }

    fn get(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        let found = self
            .0
            .binary_search_by(|(k, _)| k.as_slice().cmp(key))
            .ok()?;
        self.0.get(found).map(|(_, value)| value)
    }

    fn under<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = &'a KvWrite> + Clone {
        let start = self.0.partition_point(|(k, _)| k.as_slice() < prefix);
        self.0[start..]
            .iter()
            .take_while(move |(k, _)| k.starts_with(prefix))
    }
}

/// The keys and key ranges a batch read.
#[derive(Default)]
pub struct ReadSet {
    keys: KeySet,
    /// Scanned prefixes; the empty prefix is the whole store.
    prefixes: Vec<Vec<u8>>,
}

impl ReadSet {
    /// Whether changing `key` could change what the batch read.
    pub fn covers(&self, key: &[u8]) -> bool {
        self.keys.contains(key) || self.prefixes.iter().any(|p| key.starts_with(p))
    }
}

pub struct BatchReads<'a> {
    transaction: &'a Transaction,
    overlay: Option<&'a Overlay>,
    read: RefCell<ReadSet>,
    absent: RefCell<KeySet>,
}

impl<'a> BatchReads<'a> {
    pub fn new(transaction: &'a Transaction, overlay: Option<&'a Overlay>) -> Self {
        Self {
            transaction,
            overlay,
            read: RefCell::default(),
            absent: RefCell::default(),
        }
    }

    /// What was read, and the keys found absent.
    pub fn into_parts(self) -> (ReadSet, KeySet) {
        (self.read.into_inner(), self.absent.into_inner())
    }

    fn overlaid(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.overlay.and_then(|overlay| overlay.get(key))
    }
}

impl KvRead for BatchReads<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, IndexError> {
        Ok(self.get_many(&[key.to_vec()])?.pop().flatten())
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, IndexError> {
        let asked: Vec<Vec<u8>> = keys
            .iter()
            .filter(|key| self.overlaid(key).is_none())
            .cloned()
            .collect();
        let mut stored = if asked.is_empty() {
            Vec::new()
        } else {
            self.transaction.get_many(asked)?
        }
        .into_iter();
        let values: Vec<Option<Vec<u8>>> = keys
            .iter()
            .map(|key| match self.overlaid(key) {
                Some(value) => value.clone(),
                None => stored.next().flatten(),
            })
            .collect();
        let mut read = self.read.borrow_mut();
        let mut absent = self.absent.borrow_mut();
        for (key, value) in keys.iter().zip(&values) {
            if value.is_none() {
                absent.insert(key);
            }
            read.keys.insert(key);
        }
        Ok(values)
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<KvPair>, IndexError> {
        let (start, end) = range(prefix);
        let stored = self.transaction.scan(start, end)?;
        self.read.borrow_mut().prefixes.push(prefix.to_vec());
        let Some(overlay) = self.overlay else {
            return Ok(stored);
        };
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
        for (key, value) in overlay.under(prefix) {
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().collect())
    }

    fn is_empty(&self) -> Result<bool, IndexError> {
        self.read.borrow_mut().prefixes.push(Vec::new());
        let overlay = self
            .overlay
            .into_iter()
            .flat_map(|overlay| overlay.under(&[]));
        if overlay.clone().any(|(_, value)| value.is_some()) {
            return Ok(false);
        }
        let deleted = overlay.map(|(key, _)| key.clone()).collect();
        self.transaction.empty_except(deleted)
    }
}
