//! State held in memory, and speculative state layered over a base.
//!
//! [`MemoryState`] backs tests, benchmarks and tools that need no database. [`Layered`] lets a
//! node execute a block on top of blocks that are executed but not yet final (Simplex extends
//! notarized blocks before they are finalized) without writing anything.

use std::collections::{BTreeMap, HashMap};

use jmt::storage::{LeafNode, Node, NodeBatch, NodeKey, TreeReader};
use jmt::{KeyHash, OwnedValue, Version};

use crate::execution::ExecutedBlock;
use crate::state::{StateError, StateReader};

/// A whole state (latest entries plus every tree version) in memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryState {
    latest: BTreeMap<Vec<u8>, Vec<u8>>,
    nodes: HashMap<NodeKey, Node>,
    values: BTreeMap<(KeyHash, Version), Option<OwnedValue>>,
}

impl MemoryState {
    /// An empty state.
    pub fn new() -> MemoryState {
        MemoryState::default()
    }

    /// Applies an executed block (or the genesis block) on top.
    pub fn commit(&mut self, executed: &ExecutedBlock) {
        for (key, value) in &executed.changes {
            match value {
                Some(bytes) => self.latest.insert(key.clone(), bytes.clone()),
                None => self.latest.remove(key),
            };
        }
        for (key, node) in executed.tree_nodes.nodes() {
            self.nodes.insert(key.clone(), node.clone());
        }
        for ((version, key_hash), value) in executed.tree_nodes.values() {
            self.values.insert((*key_hash, *version), value.clone());
        }
    }

    /// Number of entries in the latest state.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// True when the latest state holds nothing.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

impl StateReader for MemoryState {
    fn raw(&self, encoded_key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.latest.get(encoded_key).cloned())
    }
}

impl TreeReader for MemoryState {
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
        anyhow::bail!("rightmost-leaf lookups (tree restore) are not supported")
    }
}

/// A base state with executed-but-unstored blocks on top, oldest first. Reads see the newest
/// layer that wrote the entry.
#[derive(Debug)]
pub struct Layered<'a, S> {
    base: &'a S,
    layers: Vec<&'a ExecutedBlock>,
}

impl<'a, S> Layered<'a, S> {
    /// Layers `layers` (oldest first, consecutive heights) over `base`.
    pub fn new(base: &'a S, layers: Vec<&'a ExecutedBlock>) -> Layered<'a, S> {
        Layered { base, layers }
    }

    fn nodes_newest_first(&self) -> impl Iterator<Item = &'a NodeBatch> + '_ {
        self.layers.iter().rev().map(|layer| &layer.tree_nodes)
    }
}

impl<S: StateReader> StateReader for Layered<'_, S> {
    fn raw(&self, encoded_key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        for layer in self.layers.iter().rev() {
            if let Some(value) = layer.changes.get(encoded_key) {
                return Ok(value.clone());
            }
        }
        self.base.raw(encoded_key)
    }
}

impl<S: TreeReader> TreeReader for Layered<'_, S> {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        for nodes in self.nodes_newest_first() {
            if let Some(node) = nodes.get_node(node_key) {
                return Ok(Some(node.clone()));
            }
        }
        self.base.get_node_option(node_key)
    }

    fn get_value_option(
        &self,
        max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        for layer in self.layers.iter().rev() {
            let version = layer.height();
            if version > max_version {
                continue;
            }
            if let Some(value) = layer.tree_nodes.values().get(&(version, key_hash)) {
                return Ok(value.clone());
            }
        }
        self.base.get_value_option(max_version, key_hash)
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        anyhow::bail!("rightmost-leaf lookups (tree restore) are not supported")
    }
}
