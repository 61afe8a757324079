//! Stored forms of tree nodes, their keys and a block's receipts (schema 2, see
//! `docs/storage.md`). These are storage formats only: nothing here is hashed, so the state
//! root and proofs do not depend on them.
//!
//! Decoding reads our own database but still never panics on bad bytes: a damaged record is a
//! [`StoreError::Corrupt`], and jmt's constructors (which assert their invariants) are only
//! called once those invariants are checked here.

use jmt::storage::{LeafNode, Node, NodeKey};
use jmt::Version;

use super::StoreError;
use crate::block::Receipt;
use crate::encoding::{self, encode};

/// Longest nibble path (a 32-byte key hash has 64 nibbles).
const NIBBLES_MAX: usize = 64;

/// Bytes of a `tree_nodes` key: version, nibble count, up to 32 packed bytes.
const TREE_NODE_KEY_BYTES_MAX: usize = 8 + 1 + NIBBLES_MAX / 2;

/// A `tree_nodes` key: version (u64 BE) ‖ number of nibbles (u8) ‖ the nibbles packed two to a
/// byte, high nibble first (an odd last nibble is padded with 0).
///
/// The version comes first and big-endian, so all nodes of one block form a single ascending
/// run placed after every older block's: the block's batch inserts into the memtable in order
/// and flushed files do not overlap older ones. Within a version, byte order equals jmt's
/// `NodeKey` order (nibble count, then path), which is the order `NodeBatch` yields.
#[derive(Clone, Copy)]
pub(super) struct TreeNodeKey {
    bytes: [u8; TREE_NODE_KEY_BYTES_MAX],
    len: usize,
}

impl TreeNodeKey {
    pub(super) fn of(key: &NodeKey) -> TreeNodeKey {
        let path = key.nibble_path();
        let nibbles = path.num_nibbles().min(NIBBLES_MAX);
        let mut bytes = [0u8; TREE_NODE_KEY_BYTES_MAX];
        bytes[..8].copy_from_slice(&key.version().to_be_bytes());
        // `nibbles` is at most 64.
        bytes[8] = u8::try_from(nibbles).unwrap_or(u8::MAX);
        for i in 0..nibbles {
            let nibble = u8::from(path.get_nibble(i));
            bytes[9 + i / 2] |= if i % 2 == 0 { nibble << 4 } else { nibble };
        }
        TreeNodeKey {
            bytes,
            len: 9 + nibbles.div_ceil(2),
        }
    }
}

impl AsRef<[u8]> for TreeNodeKey {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

const NODE_NULL: u8 = 0;
const NODE_LEAF: u8 = 1;
const NODE_INTERNAL: u8 = 2;

/// Encodes a tree node into `out` (cleared first):
///
/// - null: `0x00`
/// - leaf: `0x01` ‖ key hash (32) ‖ value hash (32)
/// - internal: `0x02` ‖ bitmap of present children (u16 BE, bit i = nibble i) ‖ bitmap of the
///   children that are leaves (u16 BE) ‖ for each present child in nibble order: its hash (32)
///   ‖ its version (LEB128) ‖ for an internal child, its leaf count (LEB128).
///
/// jmt's own borsh form writes all 16 optional slots with `u64` counters: ≈ 820 bytes for a
/// full internal node, against ≈ 580 here.
pub(super) fn encode_node(node: &Node, out: &mut Vec<u8>) {
    out.clear();
    match node {
        Node::Null => out.push(NODE_NULL),
        Node::Leaf(leaf) => {
            out.push(NODE_LEAF);
            // key hash ‖ value hash: borsh of two 32-byte arrays.
            out.extend_from_slice(&encode(leaf));
        }
        Node::Internal(internal) => {
            out.push(NODE_INTERNAL);
            let mut present = 0u16;
            let mut leaves = 0u16;
            for (nibble, child) in internal.children_sorted() {
                let bit = 1u16 << u8::from(nibble);
                present |= bit;
                if child.is_leaf() {
                    leaves |= bit;
                }
            }
            out.extend_from_slice(&present.to_be_bytes());
            out.extend_from_slice(&leaves.to_be_bytes());
            for (_, child) in internal.children_sorted() {
                out.extend_from_slice(&child.hash);
                put_varint(out, child.version);
                if !child.is_leaf() {
                    put_varint(out, child.leaf_count() as u64);
                }
            }
        }
    }
}

fn corrupt(reason: &str) -> StoreError {
    StoreError::Corrupt(format!("tree node: {reason}"))
}

/// Inverse of [`encode_node`].
pub(super) fn decode_node(bytes: &[u8]) -> Result<Node, StoreError> {
    let (tag, rest) = bytes.split_first().ok_or_else(|| corrupt("empty"))?;
    match *tag {
        NODE_NULL if rest.is_empty() => Ok(Node::Null),
        NODE_LEAF => {
            let leaf: LeafNode = encoding::decode("tree leaf", rest, 64)
                .map_err(|err| StoreError::Corrupt(err.to_string()))?;
            Ok(Node::Leaf(leaf))
        }
        NODE_INTERNAL => decode_internal(rest),
        _ => Err(corrupt("unknown tag or trailing bytes")),
    }
}

/// One child of an internal node: hash, version, and `None` for a leaf or the leaf count of an
/// internal child.
type ChildParts = ([u8; 32], Version, Option<u64>);

fn decode_internal(bytes: &[u8]) -> Result<Node, StoreError> {
    let mut reader = Reader(bytes);
    let present = u16::from_be_bytes(reader.array()?);
    let leaves = u16::from_be_bytes(reader.array()?);
    if leaves & !present != 0 {
        return Err(corrupt("bad child bitmaps"));
    }
    let mut children: [Option<ChildParts>; 16] = [None; 16];
    for (nibble, slot) in children.iter_mut().enumerate() {
        let bit = 1u16 << nibble;
        if present & bit == 0 {
            continue;
        }
        let hash: [u8; 32] = reader.array()?;
        let version: Version = reader.varint()?;
        let leaf_count = if leaves & bit != 0 {
            None
        } else {
            Some(reader.varint()?)
        };
        *slot = Some((hash, version, leaf_count));
    }
    if !reader.0.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    internal_node(&children)
}

/// An internal node from its children. jmt offers no public constructor, so this goes through
/// its borsh form: `Node` tag 1 ‖ 16 × `Option<Child>` (child: hash ‖ version u64 ‖ `NodeType`
/// tag, 0 leaf or 1 internal ‖ leaf count u64) ‖ number of children u64 ‖ leaf count u64.
/// The counts are computed here, and the shapes jmt's own constructor refuses (no child, or
/// a single child that is a leaf) are refused as corrupt.
fn internal_node(children: &[Option<ChildParts>; 16]) -> Result<Node, StoreError> {
    let present: Vec<&ChildParts> = children.iter().flatten().collect();
    match present.as_slice() {
        [] => return Err(corrupt("an internal node without children")),
        [(_, _, None)] => return Err(corrupt("a single child that is a leaf")),
        _ => {}
    }
    let mut borsh_bytes = Vec::with_capacity(1 + 16 * 50 + 16);
    borsh_bytes.push(1);
    let mut leaf_total: u64 = 0;
    for child in children {
        let Some((hash, version, leaf_count)) = child else {
            borsh_bytes.push(0);
            continue;
        };
        borsh_bytes.push(1);
        borsh_bytes.extend_from_slice(hash);
        borsh_bytes.extend_from_slice(&version.to_le_bytes());
        let leaves = match leaf_count {
            None => {
                borsh_bytes.push(0);
                1
            }
            Some(count) => {
                borsh_bytes.push(1);
                borsh_bytes.extend_from_slice(&count.to_le_bytes());
                *count
            }
        };
        // jmt adds leaf counts in usize without checking: keep every sum in range.
        leaf_total = leaf_total
            .checked_add(leaves)
            .filter(|total| usize::try_from(*total).is_ok())
            .ok_or_else(|| corrupt("leaf counts overflow"))?;
    }
    borsh_bytes.extend_from_slice(&(present.len() as u64).to_le_bytes());
    borsh_bytes.extend_from_slice(&leaf_total.to_le_bytes());
    borsh::from_slice(&borsh_bytes).map_err(|err| corrupt(&err.to_string()))
}

/// Reads a stored record front to back.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or_else(|| corrupt("truncated"))?;
        self.0 = rest;
        Ok(*head)
    }

    /// Unsigned LEB128, at most 10 bytes, no bits beyond 64, no redundant trailing zero byte
    /// (so one value has one encoding).
    fn varint(&mut self) -> Result<u64, StoreError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let [byte] = self.array::<1>()?;
            let bits = u64::from(byte & 0x7f);
            if i == 9 && byte > 1 {
                return Err(corrupt("varint overflows 64 bits"));
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    return Err(corrupt("varint not minimal"));
                }
                return Ok(value);
            }
        }
        Err(corrupt("varint too long"))
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value.to_le_bytes()[0] | 0x80);
        value >>= 7;
    }
    out.push(value.to_le_bytes()[0]);
}

/// The `receipts` value of one block: count (u32 BE) ‖ end offset of each receipt within the
/// receipt bytes (u32 BE each) ‖ the borsh receipts, concatenated. One put per block instead of
/// one per transaction, and a single receipt is still read without decoding the others.
pub(super) fn encode_receipts(receipts: &[Receipt]) -> Result<Vec<u8>, StoreError> {
    let too_many = || StoreError::Corrupt("too many receipts in one block".into());
    let count = u32::try_from(receipts.len()).map_err(|_| too_many())?;
    let header_bytes = 4 + 4 * receipts.len();
    let mut out = vec![0u8; header_bytes];
    out.reserve(receipts.len() * 64);
    out[..4].copy_from_slice(&count.to_be_bytes());
    for (index, receipt) in receipts.iter().enumerate() {
        // Writing into a Vec cannot fail (see `encoding::encode`).
        if borsh::BorshSerialize::serialize(receipt, &mut out).is_err() {
            return Err(StoreError::Corrupt("cannot encode a receipt".into()));
        }
        let end = u32::try_from(out.len() - header_bytes).map_err(|_| too_many())?;
        let slot = 4 + 4 * index;
        out[slot..slot + 4].copy_from_slice(&end.to_be_bytes());
    }
    Ok(out)
}

/// Bound on one encoded receipt.
const RECEIPT_BYTES_MAX: usize = 1024;

/// Number of receipts in a block's `receipts` value, and where their bytes start.
fn receipts_layout(bytes: &[u8]) -> Result<(usize, usize), StoreError> {
    let mut reader = Reader(bytes);
    let count = usize::try_from(u32::from_be_bytes(reader.array()?))
        .map_err(|_| StoreError::Corrupt("receipt count".into()))?;
    let header_bytes = count
        .checked_mul(4)
        .and_then(|offsets| offsets.checked_add(4))
        .filter(|header_bytes| *header_bytes <= bytes.len())
        .ok_or_else(|| StoreError::Corrupt("receipts record is truncated".into()))?;
    Ok((count, header_bytes))
}

fn receipt_end(bytes: &[u8], index: usize) -> usize {
    let slot = 4 + 4 * index;
    let mut end = [0u8; 4];
    end.copy_from_slice(&bytes[slot..slot + 4]);
    u32::from_be_bytes(end) as usize
}

/// The receipt at `index` of a block's `receipts` value; `None` past the end.
pub(super) fn decode_receipt(bytes: &[u8], index: usize) -> Result<Option<Receipt>, StoreError> {
    let (count, header_bytes) = receipts_layout(bytes)?;
    if index >= count {
        return Ok(None);
    }
    let start = if index == 0 {
        0
    } else {
        receipt_end(bytes, index - 1)
    };
    let end = receipt_end(bytes, index);
    let body = &bytes[header_bytes..];
    let slice = body
        .get(start..end)
        .ok_or_else(|| StoreError::Corrupt("receipt offsets are out of range".into()))?;
    encoding::decode("receipt", slice, RECEIPT_BYTES_MAX)
        .map(Some)
        .map_err(|err| StoreError::Corrupt(err.to_string()))
}

/// Every receipt of a block's `receipts` value, in order.
pub(super) fn decode_receipts(bytes: &[u8]) -> Result<Vec<Receipt>, StoreError> {
    let (count, _) = receipts_layout(bytes)?;
    let mut receipts = Vec::with_capacity(count);
    for index in 0..count {
        match decode_receipt(bytes, index)? {
            Some(receipt) => receipts.push(receipt),
            None => break,
        }
    }
    Ok(receipts)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

    use jmt::storage::NibblePath;
    use jmt::KeyHash;
    use proptest::prelude::*;

    use super::*;
    use crate::block::{FailureReason, ReceiptStatus};

    /// For tests: a `NibblePath` from nibbles, through its borsh form (jmt offers no public
    /// constructor from nibbles).
    fn nibble_path(nibbles: &[u8]) -> NibblePath {
        let mut packed = vec![0u8; nibbles.len().div_ceil(2)];
        for (i, nibble) in nibbles.iter().enumerate() {
            packed[i / 2] |= if i % 2 == 0 { nibble << 4 } else { *nibble };
        }
        let mut bytes = encode(&(nibbles.len() as u64));
        bytes.extend_from_slice(&encode(&packed));
        borsh::from_slice(&bytes).unwrap_or_else(|_| unreachable!("a valid nibble path"))
    }

    /// An internal node; a leaf count of 0 marks a leaf child.
    fn internal(children: &[(u8, [u8; 32], u64, u64)]) -> Node {
        let mut parts: [Option<ChildParts>; 16] = [None; 16];
        for (nibble, hash, version, leaf_count) in children {
            parts[usize::from(*nibble)] =
                Some((*hash, *version, (*leaf_count > 0).then_some(*leaf_count)));
        }
        internal_node(&parts).unwrap()
    }

    fn round_trip(node: &Node) -> Vec<u8> {
        let mut bytes = Vec::new();
        encode_node(node, &mut bytes);
        assert_eq!(&decode_node(&bytes).unwrap(), node);
        bytes
    }

    /// Pins the stored form (schema 2): a change here is a layout change.
    #[test]
    fn node_encoding_is_pinned() {
        assert_eq!(round_trip(&Node::Null), [0]);
        let leaf = Node::Leaf(LeafNode::new(KeyHash([1; 32]), jmt::ValueHash([2; 32])));
        let bytes = round_trip(&leaf);
        assert_eq!(bytes.len(), 65);
        assert_eq!((bytes[0], bytes[1], bytes[33]), (1, 1, 2));
        let node = internal(&[(0, [7; 32], 300, 0), (15, [9; 32], 5, 4)]);
        let bytes = round_trip(&node);
        let mut expected = vec![2, 0x80, 0x01, 0x00, 0x01]; // bits 0 and 15; bit 0 a leaf
        expected.extend_from_slice(&[7; 32]);
        expected.extend_from_slice(&[0xac, 0x02]); // 300
        expected.extend_from_slice(&[9; 32]);
        expected.extend_from_slice(&[5, 4]);
        assert_eq!(hex::encode(&bytes), hex::encode(&expected));
    }

    #[test]
    fn node_keys_are_version_then_path() {
        let key = NodeKey::new(0x0102, nibble_path(&[0xa, 0xb, 0xc]));
        assert_eq!(
            hex::encode(TreeNodeKey::of(&key).as_ref()),
            "000000000000010203abc0"
        );
        let root = NodeKey::new(7, nibble_path(&[]));
        assert_eq!(
            hex::encode(TreeNodeKey::of(&root).as_ref()),
            "000000000000000700"
        );
    }

    #[test]
    fn bad_nodes_are_errors_not_panics() {
        for bytes in [
            &[][..],
            &[0, 0],
            &[3],
            &[1, 0],
            &[2, 0, 0, 0, 0],       // no children
            &[2, 0, 1, 0, 2],       // leaf bit without the child
            &[2, 0, 1, 0, 1],       // a single leaf child
            &[2, 0, 3, 0, 0, 1, 2], // truncated
        ] {
            assert!(decode_node(bytes).is_err(), "{bytes:?}");
        }
        // Leaf counts whose sum overflows.
        let mut bytes = vec![2, 0, 3, 0, 0];
        for _ in 0..2 {
            bytes.extend_from_slice(&[0; 32]);
            bytes.push(1);
            bytes.extend_from_slice(&[0xff; 9]);
            bytes.push(1);
        }
        assert!(decode_node(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn internal_nodes_round_trip(
            children in prop::collection::btree_map(
                0u8..16,
                (any::<[u8; 32]>(), any::<u64>(), prop_oneof![Just(0u64), 1u64..1_000_000]),
                2..=16,
            ),
        ) {
            let children: Vec<_> = children
                .into_iter()
                .map(|(nibble, (hash, version, leaf_count))| (nibble, hash, version, leaf_count))
                .collect();
            round_trip(&internal(&children));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_node(&bytes);
            let _ = decode_receipts(&bytes);
            let _ = decode_receipt(&bytes, 1);
        }

        #[test]
        fn node_key_order_follows_node_key_order(
            a in (0u64..4, prop::collection::vec(0u8..16, 0..6)),
            b in (0u64..4, prop::collection::vec(0u8..16, 0..6)),
        ) {
            let a = NodeKey::new(a.0, nibble_path(&a.1));
            let b = NodeKey::new(b.0, nibble_path(&b.1));
            prop_assert_eq!(
                a.cmp(&b),
                TreeNodeKey::of(&a).as_ref().cmp(TreeNodeKey::of(&b).as_ref())
            );
        }
    }

    #[test]
    fn receipts_round_trip_one_by_one_and_whole() {
        let receipts: Vec<Receipt> = (0..5u32)
            .map(|index| Receipt {
                tx_hash: crate::Hash([index as u8; 32]),
                height: 9,
                index,
                status: if index % 2 == 0 {
                    ReceiptStatus::Success
                } else {
                    ReceiptStatus::Failed {
                        reason: FailureReason::KeyNotFound,
                    }
                },
                fee_charged: 3,
            })
            .collect();
        let bytes = encode_receipts(&receipts).unwrap();
        assert_eq!(decode_receipts(&bytes).unwrap(), receipts);
        for (index, receipt) in receipts.iter().enumerate() {
            assert_eq!(
                decode_receipt(&bytes, index).unwrap().as_ref(),
                Some(receipt)
            );
        }
        assert_eq!(decode_receipt(&bytes, 5).unwrap(), None);
        assert_eq!(
            decode_receipts(&encode_receipts(&[]).unwrap()).unwrap(),
            vec![]
        );
    }
}
