//! The block journal: every block above the finalized height that this node built as leader
//! or found valid as a proposal, kept in the database's `consensus` column family so that a
//! notarized block outlives a restart of every node (see `docs/storage.md`).
//!
//! Simplex forces every later block to extend a notarized block unless its view is nullified,
//! and a view where some validators voted finalize can never be; if the only copies of such a
//! block were in memory, a network stopped as a whole could never extend it again (issue 20).
//! The journal closes that hole: each honest validator that notarized a block holds it on disk
//! before its vote leaves, so a quorum's honest part can always serve it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use mesh_consensus::{Block as ConsensusBlock, Message};
use mesh_ledger::storage::{Store, StoreError};
use mesh_ledger::Hash;

/// Record-name prefix of journal entries; the suffix is height (u64 BE) ‖ block hash.
const PREFIX: &[u8] = b"journal/v1/";
/// Record-name prefix of journaled certificates; the suffix is view (u64 BE) ‖ kind (0 for a
/// notarization, 1 for a nullification).
const CERT_PREFIX: &[u8] = b"certs/v1/";
/// Most certificates kept: the justification of the current view is the newest notarization
/// and the nullifications after it, so only a long run of failed views comes near this.
pub(super) const CERTIFICATES_MAX: usize = 1024;
/// Largest certificate record read back.
const CERT_BYTES_MAX: usize = 1 << 20;
/// Most entries kept. Honest validators verify one proposal per view and a few views are open
/// at a time; anything beyond this comes from a flood of proposals, and the oldest heights go.
pub(super) const JOURNAL_ENTRIES_MAX: usize = 1024;
/// Largest journal entry read back (a block payload plus its header).
const ENTRY_BYTES_MAX: usize = 8 << 20;

fn name(height: u64, hash: &Hash) -> Vec<u8> {
    let mut name = Vec::with_capacity(PREFIX.len() + 8 + 32);
    name.extend_from_slice(PREFIX);
    name.extend_from_slice(&height.to_be_bytes());
    name.extend_from_slice(hash.as_bytes());
    name
}

fn cert_name(view: u64, kind: u8) -> Vec<u8> {
    let mut name = Vec::with_capacity(CERT_PREFIX.len() + 9);
    name.extend_from_slice(CERT_PREFIX);
    name.extend_from_slice(&view.to_be_bytes());
    name.push(kind);
    name
}

fn height_bound(height: u64) -> Vec<u8> {
    let mut name = PREFIX.to_vec();
    name.extend_from_slice(&height.to_be_bytes());
    name
}

/// The journal over a store, with an in-memory index of what it holds.
#[derive(Debug)]
pub(super) struct BlockJournal {
    store: Arc<Store>,
    /// Journaled certificates by (view, kind).
    certificates: BTreeSet<(u64, u8)>,
    by_height: BTreeSet<(u64, Hash)>,
    heights: HashMap<Hash, u64>,
}

impl BlockJournal {
    /// The journal over `store`; call [`BlockJournal::load`] before using it.
    pub(super) fn new(store: Arc<Store>) -> BlockJournal {
        BlockJournal {
            store,
            certificates: BTreeSet::new(),
            by_height: BTreeSet::new(),
            heights: HashMap::new(),
        }
    }

    /// Reads the journal and returns the blocks it holds above `finalized_height`, in
    /// ascending height; entries at or below it (left by a crash before their prune) go.
    pub(super) fn load(
        &mut self,
        finalized_height: u64,
    ) -> Result<Vec<ConsensusBlock>, StoreError> {
        self.by_height.clear();
        self.heights.clear();
        self.store
            .delete_consensus_records(PREFIX, &height_bound(finalized_height.saturating_add(1)))?;
        let records = self
            .store
            .consensus_records_with_prefix(PREFIX, JOURNAL_ENTRIES_MAX)?;
        let mut blocks = Vec::with_capacity(records.len());
        for (record_name, bytes) in records {
            let decoded = mesh_ledger::encoding::decode::<ConsensusBlock>(
                "journal block",
                &bytes,
                ENTRY_BYTES_MAX,
            );
            match decoded {
                Ok(block) if name(block.header.height.0, &block.header.hash) == record_name => {
                    self.index(block.header.height.0, block.header.hash);
                    blocks.push(block);
                }
                // A damaged entry only costs the chance to serve that block: drop it.
                _ => {
                    tracing::warn!("unreadable block journal entry dropped");
                    self.delete_record(&record_name)?;
                }
            }
        }
        Ok(blocks)
    }

    /// Writes a notarization or nullification this node formed or received (unsynced, like
    /// blocks). After a restart of every node these are what lets views resume where they
    /// were: the votes that formed them may have left every safety state's window.
    pub(super) fn record_certificate(&mut self, message: &Message) -> Result<(), StoreError> {
        let (view, kind) = match message {
            Message::Notarization(cert) => (cert.subject.view.0, 0u8),
            Message::Nullification(cert) => (cert.subject.0, 1u8),
            _ => return Ok(()),
        };
        if self.certificates.contains(&(view, kind)) {
            return Ok(());
        }
        if self.certificates.len() >= CERTIFICATES_MAX {
            if let Some((lowest, lowest_kind)) = self.certificates.pop_first() {
                self.delete_record(&cert_name(lowest, lowest_kind))?;
            }
        }
        let bytes = mesh_ledger::encoding::encode(message);
        self.store
            .put_consensus_record_unsynced(&cert_name(view, kind), &bytes)?;
        self.certificates.insert((view, kind));
        Ok(())
    }

    /// Reads the journaled certificates of views above `finalized_view`, ascending.
    pub(super) fn load_certificates(
        &mut self,
        finalized_view: u64,
    ) -> Result<Vec<Message>, StoreError> {
        self.certificates.clear();
        let mut end = CERT_PREFIX.to_vec();
        end.extend_from_slice(&finalized_view.saturating_add(1).to_be_bytes());
        self.store.delete_consensus_records(CERT_PREFIX, &end)?;
        let records = self
            .store
            .consensus_records_with_prefix(CERT_PREFIX, CERTIFICATES_MAX)?;
        let mut messages = Vec::with_capacity(records.len());
        for (record_name, bytes) in records {
            let decoded = mesh_ledger::encoding::decode::<Message>(
                "journaled certificate",
                &bytes,
                CERT_BYTES_MAX,
            );
            let key = match &decoded {
                Ok(Message::Notarization(cert)) => Some((cert.subject.view.0, 0u8)),
                Ok(Message::Nullification(cert)) => Some((cert.subject.0, 1u8)),
                _ => None,
            };
            match (decoded, key) {
                (Ok(message), Some((view, kind))) if cert_name(view, kind) == record_name => {
                    self.certificates.insert((view, kind));
                    messages.push(message);
                }
                _ => {
                    tracing::warn!("unreadable journaled certificate dropped");
                    self.delete_record(&record_name)?;
                }
            }
        }
        Ok(messages)
    }

    /// Forgets the certificates of views at or below `view` (finality passed them).
    pub(super) fn prune_certificates_through(&mut self, view: u64) -> Result<(), StoreError> {
        let keep = self.certificates.split_off(&(view.saturating_add(1), 0));
        // Nothing indexed at or below `view`: skip the range delete (a tombstone per block
        // would only slow the column family down).
        let pruned = !self.certificates.is_empty();
        self.certificates = keep;
        if !pruned {
            return Ok(());
        }
        let mut end = CERT_PREFIX.to_vec();
        end.extend_from_slice(&view.saturating_add(1).to_be_bytes());
        self.store.delete_consensus_records(CERT_PREFIX, &end)
    }

    /// Deletes the one record named `record_name`.
    fn delete_record(&self, record_name: &[u8]) -> Result<(), StoreError> {
        let mut end = record_name.to_vec();
        end.push(0);
        self.store.delete_consensus_records(record_name, &end)
    }

    fn index(&mut self, height: u64, hash: Hash) {
        self.by_height.insert((height, hash));
        self.heights.insert(hash, height);
    }

    /// Writes `block` (unsynced: the synced safety-state write that precedes any vote on it
    /// makes it durable first). At capacity the lowest height is dropped.
    pub(super) fn record(&mut self, block: &ConsensusBlock) -> Result<(), StoreError> {
        let hash = block.header.hash;
        if self.heights.contains_key(&hash) {
            return Ok(());
        }
        if self.heights.len() >= JOURNAL_ENTRIES_MAX {
            if let Some((height, lowest)) = self.by_height.pop_first() {
                self.heights.remove(&lowest);
                self.delete_record(&name(height, &lowest))?;
            }
        }
        let bytes = mesh_ledger::encoding::encode(block);
        self.store
            .put_consensus_record_unsynced(&name(block.header.height.0, &hash), &bytes)?;
        self.index(block.header.height.0, hash);
        Ok(())
    }

    /// Reads a journaled block.
    pub(super) fn get(&self, hash: &Hash) -> Result<Option<ConsensusBlock>, StoreError> {
        let Some(height) = self.heights.get(hash) else {
            return Ok(None);
        };
        let Some(bytes) = self.store.consensus_record(&name(*height, hash))? else {
            return Ok(None);
        };
        Ok(mesh_ledger::encoding::decode("journal block", &bytes, ENTRY_BYTES_MAX).ok())
    }

    /// Forgets every block at or below `height` (it was committed, or lost to a competitor).
    pub(super) fn prune_through(&mut self, height: u64) -> Result<(), StoreError> {
        let keep = self
            .by_height
            .split_off(&(height.saturating_add(1), Hash([0; 32])));
        if self.by_height.is_empty() {
            self.by_height = keep;
            return Ok(());
        }
        for (_, hash) in std::mem::replace(&mut self.by_height, keep) {
            self.heights.remove(&hash);
        }
        self.store
            .delete_consensus_records(PREFIX, &height_bound(height.saturating_add(1)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use mesh_consensus::{Header, Height, View};

    fn block(height: u64, tag: u8) -> ConsensusBlock {
        let payload = vec![tag; 10];
        ConsensusBlock {
            header: Header {
                view: View(height + 5),
                height: Height(height),
                parent_view: View(height + 4),
                parent: Hash::of(&[tag, 1]),
                hash: Hash::of(&[&[tag][..], &height.to_be_bytes()].concat()),
            },
            payload,
        }
    }

    #[test]
    fn blocks_survive_a_reopen_and_finality_prunes_them() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (block(3, 1), block(4, 2), block(4, 3));
        {
            let store = Arc::new(Store::open(dir.path()).unwrap());
            let mut journal = BlockJournal::new(Arc::clone(&store));
            assert!(journal.load(2).unwrap().is_empty());
            for item in [&a, &b, &c] {
                journal.record(item).unwrap();
            }
            journal.record(&a).unwrap(); // again: no second entry
            assert_eq!(journal.get(&b.header.hash).unwrap(), Some(b.clone()));
            assert_eq!(journal.get(&Hash::of(b"other")).unwrap(), None);
            // An unsynced write becomes durable with the next synced one.
            store
                .put_consensus_record(b"safety_state/v1", b"x")
                .unwrap();
        }
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut journal = BlockJournal::new(Arc::clone(&store));
        let mut loaded = journal.load(2).unwrap();
        loaded.sort_by_key(|block| (block.header.height, block.header.hash));
        let mut expected = vec![a.clone(), b.clone(), c.clone()];
        expected.sort_by_key(|block| (block.header.height, block.header.hash));
        assert_eq!(loaded, expected);
        journal.prune_through(3).unwrap();
        assert_eq!(journal.get(&a.header.hash).unwrap(), None);
        assert!(journal.get(&c.header.hash).unwrap().is_some());
        // Loading above a finalized height drops what lies at or below it.
        let mut reloaded = BlockJournal::new(store);
        assert!(reloaded.load(4).unwrap().is_empty());
    }

    fn nullification(view: u64) -> Message {
        Message::Nullification(mesh_consensus::Certificate {
            subject: View(view),
            signatures: Vec::new(),
        })
    }

    #[test]
    fn certificates_above_the_finalized_view_come_back_and_prune_at_finality() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Arc::new(Store::open(dir.path()).unwrap());
            let mut journal = BlockJournal::new(store);
            for view in [5, 7, 9] {
                journal.record_certificate(&nullification(view)).unwrap();
            }
            journal.record_certificate(&nullification(7)).unwrap(); // once
        }
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut journal = BlockJournal::new(Arc::clone(&store));
        assert_eq!(
            journal.load_certificates(5).unwrap(),
            vec![nullification(7), nullification(9)]
        );
        journal.prune_certificates_through(7).unwrap();
        let mut reloaded = BlockJournal::new(store);
        assert_eq!(
            reloaded.load_certificates(0).unwrap(),
            vec![nullification(9)]
        );
    }

    #[test]
    fn a_full_journal_drops_its_lowest_height() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut journal = BlockJournal::new(Arc::clone(&store));
        for height in 1..=(JOURNAL_ENTRIES_MAX as u64 + 1) {
            let mut item = block(height, 7);
            item.header.hash = Hash::of(&height.to_be_bytes());
            journal.record(&item).unwrap();
        }
        assert_eq!(journal.heights.len(), JOURNAL_ENTRIES_MAX);
        assert_eq!(journal.get(&Hash::of(&1u64.to_be_bytes())).unwrap(), None);
        let mut reloaded = BlockJournal::new(store);
        assert_eq!(reloaded.load(0).unwrap().len(), JOURNAL_ENTRIES_MAX);
    }
}
