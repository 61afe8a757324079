//! RocksDB storage: blocks, certificates, receipts, the transaction index, the state tree and
//! the latest state, committed one block at a time in a single synced write batch.
//!
//! Layout (schema version [`SCHEMA_VERSION`], documented in `docs/storage.md`):
//!
//! | column family | key | value |
//! |---|---|---|
//! | `meta` | name | see `META_*` |
//! | `headers` | height (u64 BE) | borsh `BlockHeader` |
//! | `block_txs` | height | borsh `Vec<SignedTransaction>` |
//! | `block_index` | block hash | height |
//! | `certificates` | height | finality certificate, opaque bytes from consensus |
//! | `tx_index` | tx hash | height ‖ index (u32 BE) |
//! | `receipts` | height | the block's receipts: count, end offsets, borsh `Receipt`s |
//! | `tree_nodes` | version (u64 BE) ‖ nibble count ‖ packed nibbles | compact node ([`codec`]) |
//! | `tree_values` | key hash ‖ version (u64 BE) | borsh `Option<Vec<u8>>` |
//! | `value_keys` | encoded `StateKey::Value` | empty: the repository's keys, for listing |
//! | `consensus` | name | the consensus driver's safety state and block journal |
//!
//! *Invariant:* everything of height h is written by one batch, together with `meta/latest`
//! = h; so after a crash at any instant the database holds whole blocks 0..=latest and nothing
//! of latest + 1.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use jmt::storage::{LeafNode, NibblePath, Node, NodeKey, TreeReader};
use jmt::{KeyHash, OwnedValue, Version};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Direction,
    IteratorMode, Options, WriteBatch, WriteOptions, DB,
};

use crate::block::{Block, BlockHeader, Receipt};
use crate::crypto::{Address, Hash};
use crate::encoding::{self, encode};
use crate::execution::{genesis_block, ExecutedBlock};
use crate::genesis::{Genesis, GenesisError};
use crate::limits::HEADER_BYTES_MAX;
use crate::state::{self, Account, StateError, StateKey, StateProof, StateReader};
use crate::tx::{SignedTransaction, TxHash};
use crate::validator::ValidatorSet;
use crate::HashMap;

mod codec;

use codec::TreeNodeKey;

/// Version of the storage layout above. A database of another version is refused.
///
/// 2: one `receipts` record per block; compact `tree_nodes` keys and values.
/// 3: no `state` column family (latest values are read from `tree_values`); `value_keys`
/// lists the repository's keys; tree hashes of protocol version 2.
/// 4: headers of protocol version 3 (`next_validator_set_hash`), whose state holds the stake
/// table, bonds, unbonding queues and epoch sets (ADR 003). Same column families as 3.
/// 5: the node's consensus records (finality records, safety state, block and certificate
/// journals) carry consensus headers and votes that name their epoch (ADR 003 step 3). Same
/// column families as 4.
pub const SCHEMA_VERSION: u32 = 5;

const CF_META: &str = "meta";
const CF_HEADERS: &str = "headers";
const CF_BLOCK_TXS: &str = "block_txs";
const CF_BLOCK_INDEX: &str = "block_index";
const CF_CERTIFICATES: &str = "certificates";
const CF_TX_INDEX: &str = "tx_index";
const CF_RECEIPTS: &str = "receipts";
const CF_TREE_NODES: &str = "tree_nodes";
const CF_TREE_VALUES: &str = "tree_values";
const CF_VALUE_KEYS: &str = "value_keys";
const CF_CONSENSUS: &str = "consensus";
const COLUMN_FAMILIES: [&str; 11] = [
    CF_META,
    CF_HEADERS,
    CF_BLOCK_TXS,
    CF_BLOCK_INDEX,
    CF_CERTIFICATES,
    CF_TX_INDEX,
    CF_RECEIPTS,
    CF_TREE_NODES,
    CF_TREE_VALUES,
    CF_VALUE_KEYS,
    CF_CONSENSUS,
];

/// Column families of earlier schemas: a database holding one is ours, of an older version.
const RETIRED_COLUMN_FAMILIES: [&str; 1] = ["state"];

const META_SCHEMA_VERSION: &[u8] = b"schema_version";
const META_LATEST_HEIGHT: &[u8] = b"latest_height";
const META_GENESIS_HASH: &[u8] = b"genesis_hash";

/// Bound on any stored blob we decode (a block's transactions are the largest).
const STORED_BYTES_MAX: usize = 128 << 20;

/// Why the store failed. Any error from a write is fatal to a node: it must stop rather than
/// run on a state that may differ from what is on disk.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("the database at {path} has schema version {found}; this meshd reads version {expected}. Use a meshd release that reads version {found}, or resync into an empty data directory")]
    SchemaMismatch {
        path: String,
        found: u32,
        expected: u32,
    },
    #[error("the database at {path} was made from another genesis (stored {stored}, given {given}); point --home at the right directory")]
    GenesisMismatch {
        path: String,
        stored: Hash,
        given: Hash,
    },
    #[error("database error: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt database: {0}")]
    Corrupt(String),
    #[error("block {got} cannot be committed: the next height is {expected}")]
    NotNext { expected: u64, got: u64 },
    #[error("block {height} does not extend the stored chain (parent {parent} is not {stored})")]
    WrongParent {
        height: u64,
        parent: Hash,
        stored: Hash,
    },
    #[error("the database has no genesis yet")]
    NoGenesis,
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Genesis(#[from] GenesisError),
}

/// A key of the repository and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Where a transaction landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxLocation {
    pub height: u64,
    pub index: u32,
}

/// Decoded tree nodes, so that the Jellyfish tree's updates do not fetch and borsh-decode the
/// same nodes from RocksDB block after block (every update reads the whole path from the root
/// to its leaf).
///
/// Keyed by position in the tree (nibble path), holding the newest stored node there and its
/// version. A jmt `NodeKey` is (version, path), and a stored node is never rewritten (versions
/// are heights, each committed once), so an entry never needs invalidating: a lookup of
/// (version, path) hits only if the entry has exactly that version. When a block is stored its
/// nodes replace the older versions at their positions, which every update of that block read
/// and superseded, so the cache holds about the live tree and no dead versions. Only nodes that
/// are in the database enter it: those read from it, and a block's after its batch is written.
///
/// Bounded by an estimate of the memory held, with two generations: when the newer one is
/// full the older one is dropped whole, and a hit in the older one moves the entry to the newer
/// one (an approximate LRU without per-entry links).
struct NodeCache {
    newer: HashMap<PathKey, (Version, Node)>,
    older: HashMap<PathKey, (Version, Node)>,
    newer_bytes: usize,
    generation_bytes: usize,
}

/// A nibble path packed inline (length, then two nibbles a byte), so that a lookup does not
/// chase a heap pointer.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct PathKey([u8; 33]);

impl PathKey {
    fn of(path: &NibblePath) -> PathKey {
        let mut key = [0u8; 33];
        // A path has at most 64 nibbles (a 32-byte key hash).
        let nibbles = path.num_nibbles().min(64);
        key[0] = u8::try_from(nibbles).unwrap_or(64);
        for i in 0..nibbles {
            let nibble = u8::from(path.get_nibble(i));
            key[1 + i / 2] |= if i % 2 == 0 { nibble << 4 } else { nibble };
        }
        PathKey(key)
    }
}

impl NodeCache {
    fn new(bytes_max: usize) -> NodeCache {
        NodeCache {
            newer: HashMap::default(),
            older: HashMap::default(),
            newer_bytes: 0,
            generation_bytes: bytes_max / 2,
        }
    }

    /// Estimated memory of one entry: the table slot and an internal node's boxed array of 16
    /// optional children (hash, version, type: 64 bytes each).
    fn footprint(node: &Node) -> usize {
        const SLOT: usize = std::mem::size_of::<(PathKey, (Version, Node))>() + 8;
        match node {
            Node::Internal(_) => SLOT + 16 * 64,
            Node::Leaf(_) | Node::Null => SLOT,
        }
    }

    /// The node `key`, if cached. An entry in the newer generation hides one in the older.
    fn get(&mut self, key: &NodeKey) -> Option<Node> {
        let path = PathKey::of(key.nibble_path());
        if let Some((version, node)) = self.newer.get(&path) {
            return (*version == key.version()).then(|| node.clone());
        }
        let (version, node) = self.older.remove(&path)?;
        let found = (version == key.version()).then(|| node.clone());
        self.put(path, version, node);
        found
    }

    /// Records the stored node `key`, unless a newer version at its position is known.
    fn insert(&mut self, key: &NodeKey, node: &Node) {
        let path = PathKey::of(key.nibble_path());
        if let Some((version, cached)) = self.newer.get_mut(&path) {
            if *version < key.version() {
                self.newer_bytes =
                    self.newer_bytes - Self::footprint(cached) + Self::footprint(node);
                *version = key.version();
                cached.clone_from(node);
            }
            return;
        }
        self.put(path, key.version(), node.clone());
    }

    fn put(&mut self, path: PathKey, version: Version, node: Node) {
        if self.newer_bytes >= self.generation_bytes {
            self.older = std::mem::take(&mut self.newer);
            self.newer_bytes = 0;
        }
        self.newer_bytes += Self::footprint(&node);
        if let Some((_, old)) = self.newer.insert(path, (version, node)) {
            self.newer_bytes -= Self::footprint(&old);
        }
    }
}

/// Latest state entries (the newest `tree_values` of each key) recently read or written, so that
/// executing a block does not search RocksDB for every account it touches.
///
/// Unlike tree nodes these change: a commit writes its changes here after its batch is
/// written, and a read that missed records what it read only if no commit happened meanwhile
/// (`commits` is compared), so an entry always equals the stored one. Two generations as in
/// [`NodeCache`]; a commit writes to the newer one, which hides the older.
struct StateCache {
    newer: HashMap<Vec<u8>, Option<Vec<u8>>>,
    older: HashMap<Vec<u8>, Option<Vec<u8>>>,
    newer_bytes: usize,
    generation_bytes: usize,
    /// Commits so far.
    commits: u64,
}

impl StateCache {
    fn new(bytes_max: usize) -> StateCache {
        StateCache {
            newer: HashMap::default(),
            older: HashMap::default(),
            newer_bytes: 0,
            generation_bytes: bytes_max / 2,
            commits: 0,
        }
    }

    fn footprint(key: &[u8], value: Option<&[u8]>) -> usize {
        key.len() + value.map_or(0, <[u8]>::len) + 96
    }

    fn clear(&mut self) {
        self.newer.clear();
        self.older.clear();
        self.newer_bytes = 0;
    }

    /// The stored entry under `key`, if cached (`Some(None)`: known absent).
    fn get(&mut self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        if let Some(value) = self.newer.get(key) {
            return Some(value.clone());
        }
        let (key, value) = self.older.remove_entry(key)?;
        self.put(key, value.clone());
        Some(value)
    }

    fn put(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        if self.newer_bytes >= self.generation_bytes {
            self.older = std::mem::take(&mut self.newer);
            self.newer_bytes = 0;
        }
        self.newer_bytes += Self::footprint(&key, value.as_deref());
        if let Some(slot) = self.newer.get_mut(&key) {
            self.newer_bytes -= Self::footprint(&key, slot.as_deref());
            *slot = value;
        } else {
            self.newer.insert(key, value);
        }
    }

    /// Records a committed change (the key is copied only if it is new to the cache).
    fn update(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Some(slot) = self.newer.get_mut(key) else {
            return self.put(key.to_vec(), value.map(<[u8]>::to_vec));
        };
        let old = Self::footprint(key, slot.as_deref());
        match (slot, value) {
            (Some(bytes), Some(value)) => {
                bytes.clear();
                bytes.extend_from_slice(value);
            }
            (slot, value) => *slot = value.map(<[u8]>::to_vec),
        }
        self.newer_bytes = self.newer_bytes + Self::footprint(key, value) - old;
    }
}

/// Memory the latest-state cache may hold (estimated): ≈ 150 bytes an account.
const STATE_CACHE_BYTES: usize = 64 << 20;

/// Memory the decoded-node cache may hold (estimated). A 100k-account tree is about 35k
/// internal nodes and 100k leaves, ≈ 55 MiB decoded.
const NODE_CACHE_BYTES: usize = 128 << 20;

/// Memtable size of the column families that take random keys every block (see `Store::open`).
const RANDOM_KEY_MEMTABLE_BYTES: usize = 4 << 20;

/// The node's database.
pub struct Store {
    db: DB,
    path: PathBuf,
    nodes: Mutex<NodeCache>,
    state: Mutex<StateCache>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn height_key(height: u64) -> [u8; 8] {
    height.to_be_bytes()
}

fn location_key(height: u64, index: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&height.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

fn tree_value_key(key_hash: &KeyHash, version: Version) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..32].copy_from_slice(&key_hash.0);
    key[32..].copy_from_slice(&version.to_be_bytes());
    key
}

fn decode_u64(what: &'static str, bytes: &[u8]) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} is {} bytes, not 8", bytes.len())))?;
    Ok(u64::from_be_bytes(array))
}

fn decode_stored<T: borsh::BorshDeserialize>(
    what: &'static str,
    bytes: &[u8],
    max: usize,
) -> Result<T, StoreError> {
    encoding::decode(what, bytes, max).map_err(|err| StoreError::Corrupt(err.to_string()))
}

impl Store {
    /// Opens (or creates) the database at `path`, refusing one of another schema version.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let open_error = |reason: String| StoreError::Open {
            path: shown.clone(),
            reason,
        };
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_paranoid_checks(true);
        let cache = Cache::new_lru_cache(128 << 20);
        let descriptors = COLUMN_FAMILIES.iter().map(|name| {
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            table.set_bloom_filter(10.0, false);
            let mut cf_options = Options::default();
            cf_options.set_block_based_table_factory(&table);
            // Every block inserts thousands of random keys into these three (latest state and
            // versioned values by key hash, tx index by tx hash). A skip-list insert searches
            // the whole memtable, so with the default 64 MiB memtable (genesis alone leaves
            // ~100k accounts in it) each insert walks a large, cache-cold list. 4 MiB memtables
            // flush sooner and keep inserts cheap: committing a 1,000-transfer block took
            // ~40 % less CPU on the committing thread, and less CPU in all counting flushes
            // (docs/performance.md). 1 MiB saved a little more in the commit but cost more in
            // flushes and compactions.
            if [CF_TREE_VALUES, CF_TX_INDEX].contains(name) {
                cf_options.set_write_buffer_size(RANDOM_KEY_MEMTABLE_BYTES);
            }
            // These are mostly hashes (a tree node is its children's 32-byte hashes; the others
            // are keyed by hashes), which LZ4 cannot shrink: compressing each of their flushed
            // and compacted blocks was about a quarter of RocksDB's background CPU in the ledger
            // benchmark's profile. The other families keep LZ4. (Per-file setting: no format
            // change, older files stay readable.)
            cf_options.set_compression_type(
                if [CF_TREE_NODES, CF_TREE_VALUES, CF_TX_INDEX, CF_BLOCK_INDEX].contains(name) {
                    DBCompressionType::None
                } else {
                    DBCompressionType::Lz4
                },
            );
            ColumnFamilyDescriptor::new(*name, cf_options)
        });
        if path.exists() {
            // A directory of something else is refused rather than turned into a database.
            let existing = DB::list_cf(&Options::default(), path).unwrap_or_default();
            let foreign = existing
                .iter()
                .find(|name| *name != "default" && !COLUMN_FAMILIES.contains(&name.as_str()));
            if let Some(name) = foreign {
                if !RETIRED_COLUMN_FAMILIES.contains(&name.as_str()) {
                    return Err(open_error(format!("it has a column family {name:?} that Mesh Ledger does not use: not a Mesh Ledger database")));
                }
                // An older layout: read its version (read-only, all families as they are) to
                // say which.
                let old = DB::open_cf_for_read_only(&Options::default(), path, &existing, false)
                    .map_err(|err| open_error(err.to_string()))?;
                let found = old
                    .cf_handle(CF_META)
                    .and_then(|meta| old.get_cf(meta, META_SCHEMA_VERSION).ok().flatten())
                    .and_then(|bytes| <[u8; 4]>::try_from(bytes.as_slice()).ok())
                    .map(u32::from_be_bytes)
                    .ok_or_else(|| {
                        open_error(format!("it has the retired column family {name:?} but no readable schema version"))
                    })?;
                return Err(StoreError::SchemaMismatch {
                    path: shown,
                    found,
                    expected: SCHEMA_VERSION,
                });
            }
        }
        let db = DB::open_cf_descriptors(&options, path, descriptors)
            .map_err(|err| open_error(err.to_string()))?;
        let store = Store {
            db,
            path: path.to_path_buf(),
            nodes: Mutex::new(NodeCache::new(NODE_CACHE_BYTES)),
            state: Mutex::new(StateCache::new(STATE_CACHE_BYTES)),
        };
        match store.get(CF_META, META_SCHEMA_VERSION)? {
            Some(bytes) => {
                let array: [u8; 4] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| open_error("schema version record is malformed".into()))?;
                let found = u32::from_be_bytes(array);
                if found != SCHEMA_VERSION {
                    return Err(StoreError::SchemaMismatch {
                        path: shown,
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
            }
            None => {
                if store.get(CF_META, META_LATEST_HEIGHT)?.is_some() {
                    return Err(open_error(
                        "it has blocks but no schema version record".into(),
                    ));
                }
                let mut batch = WriteBatch::default();
                batch.put_cf(
                    store.cf(CF_META)?,
                    META_SCHEMA_VERSION,
                    SCHEMA_VERSION.to_be_bytes(),
                );
                store.write_synced(batch)?;
            }
        }
        Ok(store)
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, name: &str) -> Result<&ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StoreError::Corrupt(format!("column family {name} is missing")))
    }

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(cf)?, key)?)
    }

    fn write_synced(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        Ok(())
    }

    /// Writes the genesis state and header (height 0) into an empty database, or checks that
    /// the stored genesis is `genesis`. Returns the genesis header.
    pub fn init_genesis(&self, genesis: &Genesis) -> Result<BlockHeader, StoreError> {
        let given = genesis.hash();
        if let Some(stored) = self.get(CF_META, META_GENESIS_HASH)? {
            let stored = Hash(
                stored
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("genesis hash record is malformed".into()))?,
            );
            if stored != given {
                return Err(StoreError::GenesisMismatch {
                    path: self.path.display().to_string(),
                    stored,
                    given,
                });
            }
            return self.header(0)?.ok_or(StoreError::NoGenesis);
        }
        let executed = genesis_block(self, genesis)?;
        let mut batch = self.block_batch(&executed, &[])?;
        batch.put_cf(self.cf(CF_META)?, META_GENESIS_HASH, given.0);
        self.write_synced(batch)?;
        self.cache_block(&executed);
        Ok(executed.block.header)
    }

    /// Height of the newest committed block (0 = only genesis), `None` before genesis.
    pub fn latest_height(&self) -> Result<Option<u64>, StoreError> {
        self.get(CF_META, META_LATEST_HEIGHT)?
            .map(|bytes| decode_u64("latest height", &bytes))
            .transpose()
    }

    /// The newest committed header.
    pub fn latest_header(&self) -> Result<BlockHeader, StoreError> {
        let height = self.latest_height()?.ok_or(StoreError::NoGenesis)?;
        self.header(height)?
            .ok_or_else(|| StoreError::Corrupt(format!("header {height} is missing")))
    }

    /// The header at `height`.
    pub fn header(&self, height: u64) -> Result<Option<BlockHeader>, StoreError> {
        self.get(CF_HEADERS, &height_key(height))?
            .map(|bytes| decode_stored("header", &bytes, HEADER_BYTES_MAX))
            .transpose()
    }

    /// The block at `height`.
    pub fn block(&self, height: u64) -> Result<Option<Block>, StoreError> {
        let Some(header) = self.header(height)? else {
            return Ok(None);
        };
        let bytes = self
            .get(CF_BLOCK_TXS, &height_key(height))?
            .ok_or_else(|| {
                StoreError::Corrupt(format!("transactions of block {height} are missing"))
            })?;
        let txs: Vec<SignedTransaction> =
            decode_stored("block transactions", &bytes, STORED_BYTES_MAX)?;
        Ok(Some(Block { header, txs }))
    }

    /// The height of the block with hash `hash`.
    pub fn height_of(&self, hash: &Hash) -> Result<Option<u64>, StoreError> {
        self.get(CF_BLOCK_INDEX, &hash.0)?
            .map(|bytes| decode_u64("block index", &bytes))
            .transpose()
    }

    /// The finality certificate stored with block `height` (empty for genesis).
    pub fn certificate(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(CF_CERTIFICATES, &height_key(height))
    }

    /// Where a transaction landed, if it is final.
    pub fn tx_location(&self, tx_hash: &TxHash) -> Result<Option<TxLocation>, StoreError> {
        let Some(bytes) = self.get(CF_TX_INDEX, &tx_hash.0)? else {
            return Ok(None);
        };
        if bytes.len() != 12 {
            return Err(StoreError::Corrupt(format!(
                "tx index entry is {} bytes, not 12",
                bytes.len()
            )));
        }
        let height = decode_u64("tx height", &bytes[..8])?;
        let index = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        Ok(Some(TxLocation { height, index }))
    }

    /// The receipt of a final transaction.
    pub fn receipt(&self, tx_hash: &TxHash) -> Result<Option<Receipt>, StoreError> {
        let Some(location) = self.tx_location(tx_hash)? else {
            return Ok(None);
        };
        let Some(bytes) = self.get(CF_RECEIPTS, &height_key(location.height))? else {
            return Ok(None);
        };
        let index = usize::try_from(location.index)
            .map_err(|_| StoreError::Corrupt("receipt index out of range".into()))?;
        codec::decode_receipt(&bytes, index)
    }

    /// The receipts of block `height`, in order (none for a height not stored).
    pub fn receipts(&self, height: u64) -> Result<Vec<Receipt>, StoreError> {
        match self.get(CF_RECEIPTS, &height_key(height))? {
            Some(bytes) => codec::decode_receipts(&bytes),
            None => Ok(Vec::new()),
        }
    }

    /// Commits an executed block and its certificate in one synced batch. The block must
    /// extend the newest stored block.
    pub fn commit_block(
        &self,
        executed: &ExecutedBlock,
        certificate: &[u8],
    ) -> Result<(), StoreError> {
        let latest = self.latest_header()?;
        let header = &executed.block.header;
        let expected = latest.height + 1;
        if header.height != expected {
            return Err(StoreError::NotNext {
                expected,
                got: header.height,
            });
        }
        let stored = latest.hash();
        if header.parent_hash != stored {
            return Err(StoreError::WrongParent {
                height: header.height,
                parent: header.parent_hash,
                stored,
            });
        }
        let batch = self.block_batch(executed, certificate)?;
        self.write_synced(batch)?;
        self.cache_block(executed);
        Ok(())
    }

    /// Puts the tree nodes and state changes of a block that is now stored into the caches:
    /// the next block's execution starts from them.
    fn cache_block(&self, executed: &ExecutedBlock) {
        let mut state = self.state_cache();
        for (key, value) in &executed.changes {
            state.update(key, value.as_deref());
        }
        state.commits += 1;
        drop(state);
        let mut nodes = self.node_cache();
        for (key, node) in executed.tree_nodes.nodes() {
            nodes.insert(key, node);
        }
    }

    fn state_cache(&self) -> std::sync::MutexGuard<'_, StateCache> {
        self.state.lock().unwrap_or_else(|poisoned| {
            // A panic mid-update may have left part of a commit's changes out: start afresh.
            let mut cache = poisoned.into_inner();
            cache.clear();
            self.state.clear_poison();
            cache
        })
    }

    fn node_cache(&self) -> std::sync::MutexGuard<'_, NodeCache> {
        // The cache holds only copies of stored nodes and is consistent after any panic.
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn block_batch(
        &self,
        executed: &ExecutedBlock,
        certificate: &[u8],
    ) -> Result<WriteBatch, StoreError> {
        let header = &executed.block.header;
        let height = header.height;
        let nodes = executed.tree_nodes.nodes();
        // Sized up front (≈ 600 bytes an internal node, 100 a leaf, 100 a tx and its index
        // entry): the batch is one buffer that would otherwise be regrown and copied.
        let mut batch = WriteBatch::with_capacity_bytes(
            nodes.len() * 400
                + executed.block.txs.len() * 300
                + executed.changes.len() * 200
                + 4096,
        );
        batch.put_cf(self.cf(CF_HEADERS)?, height_key(height), encode(header));
        batch.put_cf(
            self.cf(CF_BLOCK_TXS)?,
            height_key(height),
            encode(&executed.block.txs),
        );
        batch.put_cf(
            self.cf(CF_BLOCK_INDEX)?,
            executed.block_hash.0,
            height_key(height),
        );
        batch.put_cf(self.cf(CF_CERTIFICATES)?, height_key(height), certificate);
        // Within each column family, entries go into the batch in key order: RocksDB inserts a
        // batch into each memtable's skip list in batch order and starts each search from where
        // the previous insert ended, so ascending keys cost far less than scattered ones. The
        // maps below already iterate in key order; transaction hashes are sorted here.
        let tx_index = self.cf(CF_TX_INDEX)?;
        let mut locations = Vec::with_capacity(executed.tx_hashes.len());
        for (index, tx_hash) in executed.tx_hashes.iter().enumerate() {
            let index = u32::try_from(index)
                .map_err(|_| StoreError::Corrupt("too many transactions".into()))?;
            locations.push((tx_hash.0, location_key(height, index)));
        }
        locations.sort_unstable();
        for (tx_hash, location) in &locations {
            batch.put_cf(tx_index, tx_hash, location);
        }
        batch.put_cf(
            self.cf(CF_RECEIPTS)?,
            height_key(height),
            codec::encode_receipts(&executed.receipts)?,
        );
        // `NodeBatch` iterates in `NodeKey` order, which is the byte order of the stored keys.
        let nodes_cf = self.cf(CF_TREE_NODES)?;
        let mut node_bytes = Vec::with_capacity(1024);
        for (key, node) in nodes {
            codec::encode_node(node, &mut node_bytes);
            batch.put_cf(nodes_cf, TreeNodeKey::of(key), &node_bytes);
        }
        let values = self.cf(CF_TREE_VALUES)?;
        for ((version, key_hash), value) in executed.tree_nodes.values() {
            batch.put_cf(values, tree_value_key(key_hash, *version), encode(value));
        }
        // The latest value of every entry is its newest `tree_values` version; only the
        // repository's keys need a second record, so that an owner's keys can be listed in
        // order (tree keys are hashes). Accounts, all a transfer block touches, need none.
        let value_keys = self.cf(CF_VALUE_KEYS)?;
        for (key, value) in &executed.changes {
            if !StateKey::is_value_key(key) {
                continue;
            }
            match value {
                Some(_) => batch.put_cf(value_keys, key, []),
                None => batch.delete_cf(value_keys, key),
            }
        }
        batch.put_cf(self.cf(CF_META)?, META_LATEST_HEIGHT, height_key(height));
        Ok(batch)
    }

    fn check_retained(&self, height: u64) -> Result<(), StoreError> {
        let newest = self.latest_height()?.ok_or(StoreError::NoGenesis)?;
        if height > newest {
            return Err(StateError::HeightNotRetained {
                height,
                oldest: 0,
                newest,
            }
            .into());
        }
        Ok(())
    }

    /// An account at `height` with its proof against that height's state root.
    pub fn account_at(
        &self,
        address: &Address,
        height: u64,
    ) -> Result<(Option<Account>, StateProof), StoreError> {
        self.check_retained(height)?;
        let (bytes, proof) = state::prove(self, height, &StateKey::Account(*address).encode())?;
        let account = bytes.map(|bytes| Account::decode(&bytes)).transpose()?;
        Ok((account, proof))
    }

    /// A key-value entry at `height` with its proof against that height's state root.
    pub fn value_at(
        &self,
        owner: &Address,
        key: &[u8],
        height: u64,
    ) -> Result<(Option<Vec<u8>>, StateProof), StoreError> {
        self.check_retained(height)?;
        let encoded = StateKey::Value {
            owner: *owner,
            key: key.to_vec(),
        }
        .encode();
        Ok(state::prove(self, height, &encoded)?)
    }

    /// `set(epoch)` as the state of `version` holds it (`None` if that state holds none).
    /// The set in force at height `h` is `set(epoch(h))` in the state of `h - 1`: sets are
    /// written two epochs ahead, and the boundary block that ends an epoch keeps its own.
    pub fn epoch_set_at(
        &self,
        epoch: u64,
        version: u64,
    ) -> Result<Option<ValidatorSet>, StoreError> {
        self.check_retained(version)?;
        let key = state::key_hash(&StateKey::EpochSet(epoch).encode());
        self.tree_value(&key, version)?
            .map(|bytes| {
                encoding::decode("validator set", &bytes, bytes.len())
                    .map_err(|err| StoreError::Corrupt(format!("set of epoch {epoch}: {err}")))
            })
            .transpose()
    }

    /// The state root of `height` recomputed from the tree (for audits; headers store it).
    pub fn state_root_at(&self, height: u64) -> Result<Hash, StoreError> {
        self.check_retained(height)?;
        Ok(state::root_at(self, height)?)
    }

    /// Up to `limit` latest entries of `owner` whose key starts with `prefix`, in key order,
    /// starting after `start_after` when given.
    pub fn keys(
        &self,
        owner: &Address,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let owner_prefix = StateKey::value_prefix(owner);
        let mut full_prefix = owner_prefix.clone();
        full_prefix.extend_from_slice(prefix);
        let mut start = full_prefix.clone();
        if let Some(after) = start_after {
            start = owner_prefix.clone();
            start.extend_from_slice(after);
            start.push(0); // the smallest key strictly after `after`
            if start < full_prefix {
                start = full_prefix.clone();
            }
        }
        let mut entries = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(CF_VALUE_KEYS)?,
            IteratorMode::From(&start, Direction::Forward),
        ) {
            let (key, _) = item?;
            if !key.starts_with(&full_prefix) || entries.len() >= limit {
                break;
            }
            // A commit between the index read and this one may have deleted the entry.
            if let Some(value) = self.raw(&key)? {
                entries.push((key[owner_prefix.len()..].to_vec(), value));
            }
        }
        Ok(entries)
    }

    /// The value of the tree key `key_hash` at `version`: its newest stored version at or
    /// below (`None`: never set, or deleted).
    fn tree_value(
        &self,
        key_hash: &KeyHash,
        version: Version,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut iter = self.db.raw_iterator_cf(self.cf(CF_TREE_VALUES)?);
        iter.seek_for_prev(tree_value_key(key_hash, version));
        if let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if key.len() == 40 && key[..32] == key_hash.0 {
                return decode_stored("tree value", value, STORED_BYTES_MAX);
            }
        }
        iter.status()?;
        Ok(None)
    }

    /// Durably stores a record of the consensus driver (its safety state). Synced before it
    /// returns: the driver sends the vote this record protects only afterwards.
    pub fn put_consensus_record(&self, name: &[u8], bytes: &[u8]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_CONSENSUS)?, name, bytes);
        self.write_synced(batch)
    }

    /// Reads a record of the consensus driver.
    pub fn consensus_record(&self, name: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(CF_CONSENSUS, name)
    }

    /// Stores a record of the consensus driver without waiting for the disk. It becomes
    /// durable with the next synced write (RocksDB syncs its one write-ahead log in order), so
    /// a record written before a `put_consensus_record` is durable when that call returns.
    pub fn put_consensus_record_unsynced(
        &self,
        name: &[u8],
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_CONSENSUS)?, name, bytes);
        self.db.write(batch)?;
        Ok(())
    }

    /// Deletes the consensus driver's records named `from` (inclusive) to `to` (exclusive),
    /// without waiting for the disk.
    pub fn delete_consensus_records(&self, from: &[u8], to: &[u8]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_CONSENSUS)?, from, to);
        self.db.write(batch)?;
        Ok(())
    }

    /// Deletes the consensus driver's records with these exact names in one write, without
    /// waiting for the disk (point deletes: no range tombstones for reads to skip).
    pub fn delete_consensus_records_named(&self, names: &[Vec<u8>]) -> Result<(), StoreError> {
        if names.is_empty() {
            return Ok(());
        }
        let cf = self.cf(CF_CONSENSUS)?;
        let mut batch = WriteBatch::default();
        for name in names {
            batch.delete_cf(cf, name);
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// The consensus driver's records whose name starts with `prefix`, in name order, at most
    /// `max` of them.
    pub fn consensus_records_with_prefix(
        &self,
        prefix: &[u8],
        max: usize,
    ) -> Result<Vec<NamedRecord>, StoreError> {
        let mut records = Vec::new();
        let mut iter = self.db.raw_iterator_cf(self.cf(CF_CONSENSUS)?);
        iter.seek(prefix);
        while records.len() < max {
            let (Some(key), Some(value)) = (iter.key(), iter.value()) else {
                break;
            };
            if !key.starts_with(prefix) {
                break;
            }
            records.push((key.to_vec(), value.to_vec()));
            iter.next();
        }
        iter.status()?;
        Ok(records)
    }
}

/// A record of the consensus driver: its name and its bytes.
pub type NamedRecord = (Vec<u8>, Vec<u8>);

impl StateReader for Store {
    fn raw(&self, encoded_key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let commits = {
            let mut cache = self.state_cache();
            if let Some(value) = cache.get(encoded_key) {
                return Ok(value);
            }
            cache.commits
        };
        let value = self
            .tree_value(&state::key_hash(encoded_key), Version::MAX)
            .map_err(|err| StateError::Storage(err.to_string()))?;
        let mut cache = self.state_cache();
        // A commit since the read may have changed the entry: then leave it to the next read.
        if cache.commits == commits {
            cache.put(encoded_key.to_vec(), value.clone());
        }
        Ok(value)
    }
}

impl TreeReader for Store {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        if let Some(node) = self.node_cache().get(node_key) {
            return Ok(Some(node));
        }
        let Some(bytes) = self.get(CF_TREE_NODES, TreeNodeKey::of(node_key).as_ref())? else {
            return Ok(None);
        };
        let node = codec::decode_node(&bytes)?;
        self.node_cache().insert(node_key, &node);
        Ok(Some(node))
    }

    fn get_value_option(
        &self,
        max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        Ok(self.tree_value(&key_hash, max_version)?)
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        anyhow::bail!("rightmost-leaf lookups (tree restore) are not supported")
    }
}
