//! The transaction journal: every transaction a client submitted to this node and the mempool
//! accepted, kept in the `consensus` column family until it is finalized or dropped, so that a
//! restarted node (or a network stopped as a whole) still proposes and gossips it. An accepted
//! transaction is a promise to the client; the mempool alone forgets it on any restart (issue
//! 20). Like geth's journal of local transactions, only transactions submitted here are kept:
//! a gossiped one is in the journal of the node it was submitted to.
//!
//! Writes are unsynced: a killed process loses nothing (RocksDB hands each write to the OS at
//! once), a power cut may lose the last few, and the next synced write of the driver (its
//! safety state, at every vote) makes them durable.

use std::collections::HashSet;
use std::sync::Arc;

use mesh_ledger::storage::{Store, StoreError};
use mesh_ledger::{SignedTransaction, TxHash};

/// Record-name prefix; the suffix is the transaction hash.
const PREFIX: &[u8] = b"txs/v1/";

fn name(hash: &TxHash) -> Vec<u8> {
    let mut name = Vec::with_capacity(PREFIX.len() + 32);
    name.extend_from_slice(PREFIX);
    name.extend_from_slice(hash.as_bytes());
    name
}

/// The journal over a store, with the set of hashes it holds.
#[derive(Debug)]
pub(super) struct TxJournal {
    store: Arc<Store>,
    held: HashSet<TxHash>,
    /// Most entries: the mempool's own bound, as every journaled transaction is pending.
    capacity: usize,
}

impl TxJournal {
    pub(super) fn new(store: Arc<Store>, capacity: usize) -> TxJournal {
        TxJournal {
            store,
            held: HashSet::new(),
            capacity,
        }
    }

    /// Number of transactions journaled.
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }

    /// Reads every journaled transaction back (at most `capacity`, each at most
    /// `tx_bytes_max` encoded); unreadable entries are deleted. The caller re-admits them and
    /// calls [`TxJournal::forget`] for those the chain has overtaken.
    pub(super) fn load(
        &mut self,
        tx_bytes_max: usize,
    ) -> Result<Vec<SignedTransaction>, StoreError> {
        self.held.clear();
        let records = self
            .store
            .consensus_records_with_prefix(PREFIX, self.capacity)?;
        let mut txs = Vec::with_capacity(records.len());
        let mut damaged = Vec::new();
        for (record_name, bytes) in records {
            let decoded = mesh_ledger::encoding::decode::<SignedTransaction>(
                "journaled transaction",
                &bytes,
                tx_bytes_max,
            );
            match decoded {
                Ok(stx) if name(&stx.hash()) == record_name => {
                    self.held.insert(stx.hash());
                    txs.push(stx);
                }
                _ => damaged.push(record_name),
            }
        }
        if !damaged.is_empty() {
            tracing::warn!(
                entries = damaged.len(),
                "unreadable transaction journal entries dropped"
            );
            self.store.delete_consensus_records_named(&damaged)?;
        }
        Ok(txs)
    }

    /// Journals a transaction the mempool just accepted from a client. Beyond `capacity` it is
    /// not journaled (it stays pending in memory); the mempool's own bound keeps that rare.
    pub(super) fn record(&mut self, stx: &SignedTransaction) -> Result<(), StoreError> {
        let hash = stx.hash();
        if self.held.contains(&hash) || self.held.len() >= self.capacity {
            return Ok(());
        }
        let bytes = mesh_ledger::encoding::encode(stx);
        self.store
            .put_consensus_record_unsynced(&name(&hash), &bytes)?;
        self.held.insert(hash);
        Ok(())
    }

    /// Forgets transactions that were finalized or dropped: one write for the lot.
    pub(super) fn forget<'a>(
        &mut self,
        hashes: impl IntoIterator<Item = &'a TxHash>,
    ) -> Result<(), StoreError> {
        let names: Vec<Vec<u8>> = hashes
            .into_iter()
            .filter(|hash| self.held.remove(*hash))
            .map(name)
            .collect();
        self.store.delete_consensus_records_named(&names)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use mesh_ledger::{Op, SecretKey, Transaction};

    fn transfer(key: &SecretKey, nonce: u64) -> SignedTransaction {
        let tx = Transaction {
            chain_id: "journal-test".into(),
            sender: key.address(),
            nonce,
            fee: 1,
            op: Op::Transfer {
                to: SecretKey::from_seed([9; 32]).address(),
                amount: 5,
            },
        };
        tx.sign(key)
    }

    #[test]
    fn transactions_outlive_a_reopen_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::from_seed([1; 32]);
        let (a, b, c) = (transfer(&key, 0), transfer(&key, 1), transfer(&key, 2));
        {
            let store = Arc::new(Store::open(dir.path()).unwrap());
            let mut journal = TxJournal::new(Arc::clone(&store), 16);
            for stx in [&a, &b, &c] {
                journal.record(stx).unwrap();
            }
            journal.record(&a).unwrap(); // twice: still one entry
            assert_eq!(journal.len(), 3);
            journal.forget([&a.hash()]).unwrap();
        }
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut journal = TxJournal::new(store, 16);
        let mut loaded: Vec<TxHash> = journal
            .load(1 << 16)
            .unwrap()
            .iter()
            .map(|s| s.hash())
            .collect();
        loaded.sort();
        let mut expected = vec![b.hash(), c.hash()];
        expected.sort();
        assert_eq!(loaded, expected);
        journal.forget([&b.hash(), &c.hash()]).unwrap();
        assert!(journal.load(1 << 16).unwrap().is_empty());
    }

    #[test]
    fn the_journal_is_bounded_and_skips_damaged_entries() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::from_seed([2; 32]);
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut journal = TxJournal::new(Arc::clone(&store), 2);
        for nonce in 0..4 {
            journal.record(&transfer(&key, nonce)).unwrap();
        }
        assert_eq!(journal.len(), 2, "beyond capacity nothing more is written");
        // A record whose bytes do not match its name is dropped on load.
        let stray = transfer(&key, 9);
        store
            .put_consensus_record_unsynced(&name(&stray.hash()), b"not a transaction")
            .unwrap();
        let mut reopened = TxJournal::new(Arc::clone(&store), 16);
        assert_eq!(reopened.load(1 << 16).unwrap().len(), 2);
        assert!(store
            .consensus_records_with_prefix(PREFIX, 16)
            .unwrap()
            .iter()
            .all(|(record, _)| record != &name(&stray.hash())));
    }
}
