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

use mesh_consensus::{Block as ConsensusBlock, Message, Round};
use mesh_ledger::storage::{Store, StoreError};
use mesh_ledger::Hash;

/// Record-name prefix of journal entries; the suffix is height (u64 BE) ‖ block hash.
const PREFIX: &[u8] = b"journal/v1/";
/// Record-name prefix of journaled certificates; the suffix is epoch (u64 BE) ‖ view (u64 BE) ‖
/// kind (0 for a notarization, 1 for a nullification). `v2`: views restart in every epoch.
const CERT_PREFIX: &[u8] = b"certs/v2/";
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

fn cert_name(round: Round, kind: u8) -> Vec<u8> {
    let mut name = cert_bound(round);
    name.push(kind);
    name
}

/// The record name every certificate of a round before `round` sorts below.
fn cert_bound(round: Round) -> Vec<u8> {
    let mut name = Vec::with_capacity(CERT_PREFIX.len() + 17);
    name.extend_from_slice(CERT_PREFIX);
    name.extend_from_slice(&round.epoch.0.to_be_bytes());
    name.extend_from_slice(&round.view.0.to_be_bytes());
    name
}

/// The round after `round`, in the same epoch.
fn next_round(round: Round) -> Round {
    Round {
        epoch: round.epoch,
        view: round.view.next(),
    }
}

/// The round and kind a journaled certificate is filed under.
fn cert_key(message: &Message) -> Option<(Round, u8)> {
    match message {
        Message::Notarization(cert) => Some((cert.subject.id().round(), 0u8)),
        Message::Nullification(cert) => Some((cert.subject, 1u8)),
        _ => None,
    }
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
    /// Journaled certificates by (round, kind).
    certificates: BTreeSet<(Round, u8)>,
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
        let Some((round, kind)) = cert_key(message) else {
            return Ok(());
        };
        if self.certificates.contains(&(round, kind)) {
            return Ok(());
        }
        if self.certificates.len() >= CERTIFICATES_MAX {
            if let Some((lowest, lowest_kind)) = self.certificates.pop_first() {
                self.delete_record(&cert_name(lowest, lowest_kind))?;
            }
        }
        let bytes = mesh_ledger::encoding::encode(message);
        self.store
            .put_consensus_record_unsynced(&cert_name(round, kind), &bytes)?;
        self.certificates.insert((round, kind));
        Ok(())
    }

    /// Reads the journaled certificates of rounds after `finalized` (the round of the
    /// finalized block in the current epoch), ascending; older ones are deleted.
    pub(super) fn load_certificates(
        &mut self,
        finalized: Round,
    ) -> Result<Vec<Message>, StoreError> {
        self.certificates.clear();
        let end = cert_bound(next_round(finalized));
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
            let key = decoded.as_ref().ok().and_then(cert_key);
            match (decoded, key) {
                (Ok(message), Some((round, kind))) if cert_name(round, kind) == record_name => {
                    self.certificates.insert((round, kind));
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

    /// Forgets the certificates of rounds at or before `round` (finality passed them; every
    /// round of an earlier epoch too).
    pub(super) fn prune_certificates_through(&mut self, round: Round) -> Result<(), StoreError> {
        let keep = self.certificates.split_off(&(next_round(round), 0));
        // Nothing indexed at or below `view`: skip the range delete (a tombstone per block
        // would only slow the column family down).
        let pruned = !self.certificates.is_empty();
        self.certificates = keep;
        if !pruned {
            return Ok(());
        }
        let end = cert_bound(next_round(round));
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
    use mesh_consensus::{Epoch, Header, Height, View};

    fn block(height: u64, tag: u8) -> ConsensusBlock {
        let payload = vec![tag; 10];
        ConsensusBlock {
            header: Header {
                epoch: Epoch(0),
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

    fn round(epoch: u64, view: u64) -> Round {
        Round {
            epoch: Epoch(epoch),
            view: View(view),
        }
    }

    fn nullification(epoch: u64, view: u64) -> Message {
        Message::Nullification(mesh_consensus::Certificate {
            subject: round(epoch, view),
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
                journal.record_certificate(&nullification(0, view)).unwrap();
            }
            journal.record_certificate(&nullification(0, 7)).unwrap(); // once
                                                                       // Views start again in the next epoch: view 2 of epoch 1 comes after view 9 of 0.
            journal.record_certificate(&nullification(1, 2)).unwrap();
        }
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut journal = BlockJournal::new(Arc::clone(&store));
        assert_eq!(
            journal.load_certificates(round(0, 5)).unwrap(),
            vec![
                nullification(0, 7),
                nullification(0, 9),
                nullification(1, 2)
            ]
        );
        journal.prune_certificates_through(round(0, 7)).unwrap();
        let mut reloaded = BlockJournal::new(Arc::clone(&store));
        assert_eq!(
            reloaded.load_certificates(round(0, 0)).unwrap(),
            vec![nullification(0, 9), nullification(1, 2)]
        );
        // Entering epoch 1 at view 0 leaves every certificate of epoch 0 behind.
        let mut entered = BlockJournal::new(store);
        assert_eq!(
            entered.load_certificates(round(1, 0)).unwrap(),
            vec![nullification(1, 2)]
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
