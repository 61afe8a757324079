//! The authenticated state: accounts and the key-value repository, held in a Jellyfish Merkle
//! tree (jmt) hashed with blake3, with inclusion and absence proofs any client can check
//! against a header's `state_root` alone.
//!
//! Every state entry lives under a [`StateKey`]; the tree is keyed by `blake3(StateKey bytes)`
//! and versioned by block height (genesis is version 0).

use std::collections::BTreeMap;

use borsh::{BorshDeserialize, BorshSerialize};
use jmt::storage::{NodeBatch, TreeReader};
use jmt::{JellyfishMerkleTree, KeyHash, RootHash, SimpleHasher};
use serde::{Deserialize, Serialize};

use crate::crypto::{Address, Hash};
use crate::encoding;

/// blake3 as the tree's hash function, with the tree's nodes hashed in blake3's keyed mode.
///
/// jmt hashes a node as `H(tag ‖ left ‖ right)` (internal) or `H(tag ‖ key hash ‖ value hash)`
/// (leaf): a 16- or 13-byte tag before 64 bytes, two blake3 compressions. It passes the tag as
/// the first update of its own, so this hasher recognises it and hashes what follows under a
/// key derived for that tag instead: `blake3_keyed(K_tag, 64 bytes)`, one compression. The
/// kinds stay apart (each has its own key, and keyed hashes are unrelated to the unkeyed
/// `blake3` that hashes everything else), and node hashing, most of the hashing a block does,
/// costs half (ADR 002). Whatever does not start with a tag update is plain `blake3`.
///
/// Inputs up to [`INLINE_BYTES`] (all node and key hashes, account values) are buffered and
/// hashed in one call; longer ones stream through a `blake3::Hasher`.
#[derive(Clone)]
pub struct Blake3Hasher {
    key: Option<&'static [u8; 32]>,
    started: bool,
    inline: [u8; INLINE_BYTES],
    len: usize,
    stream: Option<Box<blake3::Hasher>>,
}

/// Bytes a [`Blake3Hasher`] buffers before it streams.
const INLINE_BYTES: usize = 128;

/// Key of leaf-node hashes (derived once from a fixed context string).
static LEAF_NODE_KEY: std::sync::LazyLock<[u8; 32]> =
    std::sync::LazyLock::new(|| blake3::derive_key("mesh-ledger state tree v2 leaf node", b""));

/// Key of internal-node hashes.
static INTERNAL_NODE_KEY: std::sync::LazyLock<[u8; 32]> =
    std::sync::LazyLock::new(|| blake3::derive_key("mesh-ledger state tree v2 internal node", b""));

impl std::fmt::Debug for Blake3Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blake3Hasher")
            .field("keyed", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Blake3Hasher {
    fn default() -> Self {
        Blake3Hasher {
            key: None,
            started: false,
            inline: [0; INLINE_BYTES],
            len: 0,
            stream: None,
        }
    }
}

impl SimpleHasher for Blake3Hasher {
    fn new() -> Self {
        Blake3Hasher::default()
    }

    fn update(&mut self, data: &[u8]) {
        if !self.started {
            self.started = true;
            if data == jmt::proof::LEAF_DOMAIN_SEPARATOR {
                self.key = Some(&LEAF_NODE_KEY);
                return;
            }
            if data == jmt::proof::INTERNAL_DOMAIN_SEPARATOR {
                self.key = Some(&INTERNAL_NODE_KEY);
                return;
            }
        }
        if let Some(stream) = &mut self.stream {
            stream.update(data);
            return;
        }
        let end = self.len + data.len();
        if let Some(slot) = self.inline.get_mut(self.len..end) {
            slot.copy_from_slice(data);
            self.len = end;
            return;
        }
        let mut stream = Box::new(match self.key {
            Some(key) => blake3::Hasher::new_keyed(key),
            None => blake3::Hasher::new(),
        });
        stream.update(&self.inline[..self.len]);
        stream.update(data);
        self.stream = Some(stream);
    }

    fn finalize(self) -> [u8; 32] {
        let hash = match (self.stream, self.key) {
            (Some(stream), _) => stream.finalize(),
            (None, Some(key)) => blake3::keyed_hash(key, &self.inline[..self.len]),
            (None, None) => blake3::hash(&self.inline[..self.len]),
        };
        *hash.as_bytes()
    }
}

// The proof type is generic over its hasher and its derived encodings ask the hasher to be
// encodable too; the hasher carries no data of its own on the wire.
impl BorshSerialize for Blake3Hasher {
    fn serialize<W: std::io::Write>(&self, _writer: &mut W) -> std::io::Result<()> {
        Ok(())
    }
}
impl BorshDeserialize for Blake3Hasher {
    fn deserialize_reader<R: std::io::Read>(_reader: &mut R) -> std::io::Result<Self> {
        Ok(<Blake3Hasher as SimpleHasher>::new())
    }
}

/// An account: its balance and the nonce its next transaction must carry.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
pub struct Account {
    pub balance: u64,
    pub nonce: u64,
}

impl Account {
    /// Canonical bytes, as stored in the tree.
    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(self)
    }

    /// Decodes stored bytes.
    pub fn decode(bytes: &[u8]) -> Result<Account, StateError> {
        encoding::decode("account", bytes, 16).map_err(|err| StateError::Corrupt(err.to_string()))
    }
}

/// Tag bytes that open each kind of state key; they keep the kinds' key spaces disjoint.
const ACCOUNT_TAG: u8 = 0x01;
const VALUE_TAG: u8 = 0x02;
const STAKE_TABLE_TAG: u8 = 0x03;
const BOND_TAG: u8 = 0x04;
const UNBONDING_TAG: u8 = 0x05;
const EPOCH_SET_TAG: u8 = 0x06;

/// Where a state entry lives. Staking state (ADR 003 §2) is laid out for point lookups:
/// execution never iterates over state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum StateKey {
    Account(Address),
    Value {
        owner: Address,
        key: Vec<u8>,
    },
    /// The one stake table: every candidate, sorted by key (`staking::StakeTable`).
    StakeTable,
    /// What `owner` has bonded to `validator` (u64, borsh); absent when zero.
    Bond {
        validator: Address,
        owner: Address,
    },
    /// Amounts unbonded during epoch `release_epoch - 1`, paid out by the end-of-epoch step of
    /// `last(release_epoch)` (`staking::UnbondingQueue`).
    Unbonding {
        release_epoch: u64,
    },
    /// The validator set of an epoch, borsh `ValidatorSet`.
    EpochSet(u64),
}

impl StateKey {
    /// `0x01 ‖ address`, `0x02 ‖ owner ‖ key`, `0x03`, `0x04 ‖ validator ‖ owner`,
    /// `0x05 ‖ release epoch (u64 BE)` or `0x06 ‖ epoch (u64 BE)`. Ordered so that one owner's
    /// keys are contiguous, which the storage's prefix scans rely on.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            StateKey::StakeTable => vec![STAKE_TABLE_TAG],
            StateKey::Bond { validator, owner } => {
                let mut out = Vec::with_capacity(65);
                out.push(BOND_TAG);
                out.extend_from_slice(&validator.0);
                out.extend_from_slice(&owner.0);
                out
            }
            StateKey::Unbonding { release_epoch } => {
                let mut out = Vec::with_capacity(9);
                out.push(UNBONDING_TAG);
                out.extend_from_slice(&release_epoch.to_be_bytes());
                out
            }
            StateKey::EpochSet(epoch) => {
                let mut out = Vec::with_capacity(9);
                out.push(EPOCH_SET_TAG);
                out.extend_from_slice(&epoch.to_be_bytes());
                out
            }
            StateKey::Account(address) => {
                let mut out = Vec::with_capacity(33);
                out.push(ACCOUNT_TAG);
                out.extend_from_slice(&address.0);
                out
            }
            StateKey::Value { owner, key } => {
                let mut out = Vec::with_capacity(33 + key.len());
                out.push(VALUE_TAG);
                out.extend_from_slice(&owner.0);
                out.extend_from_slice(key);
                out
            }
        }
    }

    /// The prefix of every value key of `owner`.
    pub fn value_prefix(owner: &Address) -> Vec<u8> {
        let mut out = Vec::with_capacity(33);
        out.push(VALUE_TAG);
        out.extend_from_slice(&owner.0);
        out
    }

    /// Whether an encoded state key is a repository entry's (not an account's).
    pub fn is_value_key(encoded_key: &[u8]) -> bool {
        encoded_key.first() == Some(&VALUE_TAG)
    }

    /// Inverse of [`StateKey::encode`].
    pub fn decode(bytes: &[u8]) -> Option<StateKey> {
        let (tag, rest) = bytes.split_first()?;
        match *tag {
            STAKE_TABLE_TAG if rest.is_empty() => return Some(StateKey::StakeTable),
            BOND_TAG if rest.len() == 64 => {
                return Some(StateKey::Bond {
                    validator: Address(rest[..32].try_into().ok()?),
                    owner: Address(rest[32..].try_into().ok()?),
                })
            }
            UNBONDING_TAG => {
                let release_epoch = u64::from_be_bytes(rest.try_into().ok()?);
                return Some(StateKey::Unbonding { release_epoch });
            }
            EPOCH_SET_TAG => {
                return Some(StateKey::EpochSet(u64::from_be_bytes(
                    rest.try_into().ok()?,
                )))
            }
            _ => {}
        }
        let address = Address(rest.get(..32)?.try_into().ok()?);
        match *tag {
            ACCOUNT_TAG if rest.len() == 32 => Some(StateKey::Account(address)),
            VALUE_TAG if rest.len() > 32 => Some(StateKey::Value {
                owner: address,
                key: rest[32..].to_vec(),
            }),
            _ => None,
        }
    }
}

/// The tree key of an encoded state key.
pub fn key_hash(encoded_key: &[u8]) -> KeyHash {
    KeyHash::with::<Blake3Hasher>(encoded_key)
}

/// Why state could not be read or updated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("storage error: {0}")]
    Storage(String),
    #[error("corrupt state: {0}")]
    Corrupt(String),
    #[error("state tree error: {0}")]
    Tree(String),
    #[error("height {height} is not retained (retained: {oldest}..={newest})")]
    HeightNotRetained {
        height: u64,
        oldest: u64,
        newest: u64,
    },
}

/// Read access to the latest state (or a speculative state layered on it).
pub trait StateReader {
    /// The stored bytes under an encoded state key.
    fn raw(&self, encoded_key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;

    /// An account; `None` if it was never created.
    fn account(&self, address: &Address) -> Result<Option<Account>, StateError> {
        self.raw(&StateKey::Account(*address).encode())?
            .map(|bytes| Account::decode(&bytes))
            .transpose()
    }

    /// A value of the key-value repository.
    fn value(&self, owner: &Address, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.raw(
            &StateKey::Value {
                owner: *owner,
                key: key.to_vec(),
            }
            .encode(),
        )
    }
}

/// Writes of one block: encoded state key → new bytes (`None` deletes). A `BTreeMap`, so
/// iteration order, and so everything derived from it, is the same on every machine.
pub type StateChanges = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Computes the state root at `version` after applying `changes` on top of `version - 1`, and
/// the tree nodes to store. For version 0 (genesis) the tree starts empty.
///
/// A change set without deletions (every block of transfers) goes through jmt's batch
/// insertion, which visits and hashes each touched node once; one with deletions, or an empty
/// one, inserts key by key. Both give the same root (the tree's shape depends only on the set
/// of keys) and the same nodes to store; `tests::batch_and_sequential_updates_agree` checks it.
pub fn compute_state_root<R: TreeReader>(
    tree: &R,
    version: u64,
    changes: &StateChanges,
) -> Result<(Hash, NodeBatch), StateError> {
    let inserts: Option<Vec<(KeyHash, Vec<u8>)>> = changes
        .iter()
        .map(|(key, value)| value.as_ref().map(|value| (key_hash(key), value.clone())))
        .collect();
    match inserts {
        Some(inserts) if !inserts.is_empty() => batch_state_root(tree, version, inserts),
        _ => sequential_state_root(tree, version, changes),
    }
}

/// [`compute_state_root`] through jmt's batch insertion (no deletions, at least one entry).
fn batch_state_root<R: TreeReader>(
    tree: &R,
    version: u64,
    inserts: Vec<(KeyHash, Vec<u8>)>,
) -> Result<(Hash, NodeBatch), StateError> {
    let jmt = JellyfishMerkleTree::<_, Blake3Hasher>::new(tree);
    let (roots, batch) = jmt
        .batch_put_value_sets(vec![inserts], None, version)
        .map_err(|err| StateError::Tree(err.to_string()))?;
    let root = roots
        .first()
        .ok_or_else(|| StateError::Tree("batch update returned no root".into()))?;
    Ok((Hash(root.0), batch.node_batch))
}

/// [`compute_state_root`] key by key.
fn sequential_state_root<R: TreeReader>(
    tree: &R,
    version: u64,
    changes: &StateChanges,
) -> Result<(Hash, NodeBatch), StateError> {
    let value_set: Vec<(KeyHash, Option<Vec<u8>>)> = changes
        .iter()
        .map(|(key, value)| (key_hash(key), value.clone()))
        .collect();
    let jmt = JellyfishMerkleTree::<_, Blake3Hasher>::new(tree);
    let (root, batch) = jmt
        .put_value_set(value_set, version)
        .map_err(|err| StateError::Tree(err.to_string()))?;
    Ok((Hash(root.0), batch.node_batch))
}

/// Reads an entry at `version` with a proof of inclusion (or absence).
pub fn prove<R: TreeReader>(
    tree: &R,
    version: u64,
    encoded_key: &[u8],
) -> Result<(Option<Vec<u8>>, StateProof), StateError> {
    let jmt = JellyfishMerkleTree::<_, Blake3Hasher>::new(tree);
    let (value, proof) = jmt
        .get_with_proof(key_hash(encoded_key), version)
        .map_err(|err| StateError::Tree(err.to_string()))?;
    Ok((value, StateProof(proof)))
}

/// The root of the tree at `version`.
pub fn root_at<R: TreeReader>(tree: &R, version: u64) -> Result<Hash, StateError> {
    let jmt = JellyfishMerkleTree::<_, Blake3Hasher>::new(tree);
    jmt.get_root_hash(version)
        .map(|root| Hash(root.0))
        .map_err(|err| StateError::Tree(err.to_string()))
}

/// A Merkle proof that a state key holds a value, or holds none, under some root.
#[derive(BorshSerialize, BorshDeserialize)]
pub struct StateProof(pub jmt::proof::SparseMerkleProof<Blake3Hasher>);

impl std::fmt::Debug for StateProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateProof")
            .field("encoded_bytes", &self.encode().len())
            .finish()
    }
}

impl Clone for StateProof {
    fn clone(&self) -> Self {
        StateProof(self.0.clone())
    }
}

impl StateProof {
    /// Canonical bytes, for the wire.
    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(self)
    }

    /// Decodes untrusted bytes (a proof has at most 256 siblings of 33 bytes or so).
    pub fn decode(bytes: &[u8]) -> Result<StateProof, ProofError> {
        encoding::decode("state proof", bytes, PROOF_BYTES_MAX)
            .map_err(|err| ProofError(err.to_string()))
    }
}

/// Largest encoded proof accepted.
pub const PROOF_BYTES_MAX: usize = 16 * 1024;

/// A proof did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state proof does not verify: {0}")]
pub struct ProofError(pub String);

/// Verifies that under `root`, `key` holds exactly `value` (`None`: holds nothing). Needs
/// nothing but the root: usable by light clients.
pub fn verify_proof(
    root: &Hash,
    key: &StateKey,
    value: Option<&[u8]>,
    proof: &StateProof,
) -> Result<(), ProofError> {
    proof
        .0
        .verify(RootHash(root.0), key_hash(&key.encode()), value)
        .map_err(|err| ProofError(err.to_string()))
}

/// Verifies an account read (`None`: the account does not exist).
pub fn verify_account_proof(
    root: &Hash,
    address: &Address,
    account: Option<&Account>,
    proof: &StateProof,
) -> Result<(), ProofError> {
    let bytes = account.map(Account::encode);
    verify_proof(root, &StateKey::Account(*address), bytes.as_deref(), proof)
}

/// Verifies a key-value read (`None`: the key is not set).
pub fn verify_value_proof(
    root: &Hash,
    owner: &Address,
    key: &[u8],
    value: Option<&[u8]>,
    proof: &StateProof,
) -> Result<(), ProofError> {
    verify_proof(
        root,
        &StateKey::Value {
            owner: *owner,
            key: key.to_vec(),
        },
        value,
        proof,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use jmt::storage::{LeafNode, Node, NodeKey};
    use jmt::{OwnedValue, Version};
    use proptest::prelude::*;

    use super::*;

    /// The nodes and values of every stored version.
    #[derive(Default)]
    struct Tree {
        nodes: HashMap<NodeKey, Node>,
        values: BTreeMap<(KeyHash, Version), Option<OwnedValue>>,
    }

    impl Tree {
        fn store(&mut self, batch: &NodeBatch) {
            for (key, node) in batch.nodes() {
                self.nodes.insert(key.clone(), node.clone());
            }
            for ((version, key_hash), value) in batch.values() {
                self.values.insert((*key_hash, *version), value.clone());
            }
        }
    }

    impl TreeReader for Tree {
        fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
            Ok(self.nodes.get(node_key).cloned())
        }
        fn get_value_option(
            &self,
            max_version: Version,
            key_hash: KeyHash,
        ) -> anyhow::Result<Option<OwnedValue>> {
            Ok(self
                .values
                .range((key_hash, 0)..=(key_hash, max_version))
                .next_back()
                .and_then(|(_, value)| value.clone()))
        }
        fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
            anyhow::bail!("not needed")
        }
    }

    fn sorted_nodes(batch: &NodeBatch) -> Vec<(NodeKey, Node)> {
        let mut nodes: Vec<_> = batch
            .nodes()
            .iter()
            .map(|(key, node)| (key.clone(), node.clone()))
            .collect();
        nodes.sort_by(|a, b| a.0.cmp(&b.0));
        nodes
    }

    fn sorted_values(batch: &NodeBatch) -> Vec<((Version, KeyHash), Option<OwnedValue>)> {
        let mut values: Vec<_> = batch
            .values()
            .iter()
            .map(|(key, value)| (*key, value.clone()))
            .collect();
        values.sort_by_key(|a| a.0);
        values
    }

    fn hash_in_pieces(pieces: &[&[u8]]) -> [u8; 32] {
        let mut hasher = <Blake3Hasher as SimpleHasher>::new();
        for piece in pieces {
            hasher.update(piece);
        }
        hasher.finalize()
    }

    #[test]
    fn the_tree_hash_is_keyed_blake3_for_nodes_and_plain_blake3_otherwise() {
        let left = [7u8; 32];
        let right = [9u8; 32];
        let both = [left, right].concat();
        let leaf_key = blake3::derive_key("mesh-ledger state tree v2 leaf node", b"");
        let internal_key = blake3::derive_key("mesh-ledger state tree v2 internal node", b"");
        assert_ne!(leaf_key, internal_key);
        assert_eq!(
            hash_in_pieces(&[jmt::proof::INTERNAL_DOMAIN_SEPARATOR, &left, &right]),
            *blake3::keyed_hash(&internal_key, &both).as_bytes()
        );
        assert_eq!(
            hash_in_pieces(&[jmt::proof::LEAF_DOMAIN_SEPARATOR, &left, &right]),
            *blake3::keyed_hash(&leaf_key, &both).as_bytes()
        );
        // A tag that is not the first update, or is part of a longer first update, is data.
        let tagged = [jmt::proof::LEAF_DOMAIN_SEPARATOR, &both].concat();
        assert_eq!(
            hash_in_pieces(&[&tagged]),
            *blake3::hash(&tagged).as_bytes()
        );
        assert_eq!(
            hash_in_pieces(&[&[], jmt::proof::LEAF_DOMAIN_SEPARATOR, &both]),
            *blake3::hash(&tagged).as_bytes()
        );
    }

    proptest! {
        /// Inputs of any length, fed in any pieces, hash as one blake3 call would (buffered
        /// and streamed alike, keyed or not).
        #[test]
        fn the_tree_hash_does_not_depend_on_buffering(
            data in prop::collection::vec(any::<u8>(), 0..600),
            cuts in prop::collection::vec(0usize..600, 0..6),
            keyed in any::<bool>(),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|cut| cut.min(data.len())).collect();
            cuts.push(0);
            cuts.push(data.len());
            cuts.sort_unstable();
            let mut pieces: Vec<&[u8]> = Vec::new();
            if keyed {
                pieces.push(jmt::proof::INTERNAL_DOMAIN_SEPARATOR);
            }
            for window in cuts.windows(2) {
                pieces.push(&data[window[0]..window[1]]);
            }
            let expected = if keyed {
                let key = blake3::derive_key("mesh-ledger state tree v2 internal node", b"");
                blake3::keyed_hash(&key, &data)
            } else {
                blake3::hash(&data)
            };
            prop_assert_eq!(hash_in_pieces(&pieces), *expected.as_bytes());
        }

        /// Batch and key-by-key insertion give the same root and the same nodes and values to
        /// store, version after version, whether keys are new (splitting leaves) or updated
        /// (a small key space makes blocks overlap).
        #[test]
        fn batch_and_sequential_updates_agree(
            blocks in prop::collection::vec(
                prop::collection::btree_map(
                    prop::collection::vec(0u8..4, 1..4),
                    prop::collection::vec(any::<u8>(), 0..4),
                    1..24,
                ),
                1..6,
            ),
        ) {
            let mut tree = Tree::default();
            for (version, block) in blocks.iter().enumerate() {
                let changes: StateChanges = block
                    .iter()
                    .map(|(key, value)| (key.clone(), Some(value.clone())))
                    .collect();
                let version = version as u64;
                let (root, batch) = compute_state_root(&tree, version, &changes).unwrap();
                let (expected_root, expected) =
                    sequential_state_root(&tree, version, &changes).unwrap();
                prop_assert_eq!(root, expected_root);
                prop_assert_eq!(sorted_nodes(&batch), sorted_nodes(&expected));
                prop_assert_eq!(sorted_values(&batch), sorted_values(&expected));
                tree.store(&batch);
                prop_assert_eq!(root_at(&tree, version).unwrap(), root);
            }
        }
    }
}
