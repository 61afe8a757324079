//! What nodes say to each other, byte for byte: gossip envelopes, block-sync requests and
//! responses, and the finality record stored next to each block.
//!
//! Every format starts with a borsh enum tag that names its version. A tag this node does not
//! know is a message from a newer (or foreign) node: it is ignored and counted, never treated
//! as garbage, so nodes of two versions coexist during a rolling upgrade. Bytes that carry a
//! known tag but do not decode are garbage, and the peer that sent them is penalised.
//! `docs/networking.md` ("Wire formats") documents each layout.

use borsh::{BorshDeserialize, BorshSerialize};
use mesh_consensus::{
    Block as ConsensusBlock, CertifiedBlock, FinalityCertificate, Header, Message,
};
use mesh_ledger::encoding::{self, DecodeError};
use mesh_ledger::{Address, Hash, SignedTransaction};

/// Most transactions in one gossip batch.
pub const TX_BATCH_MAX: usize = 1_000;

/// Why received bytes were not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The version tag is one this node does not speak: ignore, count, do not penalise.
    #[error("unknown message kind {tag}")]
    UnknownKind { tag: u8 },
    /// Known kind, bad bytes: the sender broke the protocol.
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
}

impl WireError {
    fn malformed(what: &'static str, err: DecodeError) -> WireError {
        WireError::Malformed {
            what,
            reason: err.to_string(),
        }
    }
}

/// Decodes a versioned envelope whose first byte is its tag; `known_tags` are the tags this
/// node speaks.
fn decode_versioned<T: BorshDeserialize>(
    what: &'static str,
    bytes: &[u8],
    max: usize,
    known_tags: &[u8],
) -> Result<T, WireError> {
    let Some(&tag) = bytes.first() else {
        return Err(WireError::Malformed {
            what,
            reason: "empty".into(),
        });
    };
    if !known_tags.contains(&tag) {
        return Err(WireError::UnknownKind { tag });
    }
    encoding::decode(what, bytes, max).map_err(|err| WireError::malformed(what, err))
}

/// A consensus message on the gossip topic.
///
/// `sequence` makes every send distinct bytes: gossip de-duplicates by content, and a vote
/// re-sent after a partition heals must not be mistaken for the copy dropped an hour ago.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum ConsensusEnvelope {
    V1 {
        /// The sending validator (a hint for replies; votes are attributed to their signer).
        sender: Address,
        /// Increases with every message this node sends.
        sequence: u64,
        message: Message,
    },
}

impl ConsensusEnvelope {
    /// Encodes for the wire.
    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(self)
    }

    /// Decodes at most `max` bytes.
    pub fn decode(bytes: &[u8], max: usize) -> Result<ConsensusEnvelope, WireError> {
        decode_versioned("consensus message", bytes, max, &[0])
    }
}

/// Transactions on the gossip topic, batched: one gossip message costs about as much as 20
/// transactions, so a node sends what arrived within a few milliseconds together.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum TxGossip {
    V1 { txs: Vec<SignedTransaction> },
}

impl TxGossip {
    /// Encodes for the wire.
    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(self)
    }

    /// Decodes at most `max` bytes and [`TX_BATCH_MAX`] transactions.
    pub fn decode(bytes: &[u8], max: usize) -> Result<Vec<SignedTransaction>, WireError> {
        let TxGossip::V1 { txs } = decode_versioned("transaction batch", bytes, max, &[0])?;
        if txs.len() > TX_BATCH_MAX {
            return Err(WireError::Malformed {
                what: "transaction batch",
                reason: format!("{} transactions, more than {TX_BATCH_MAX}", txs.len()),
            });
        }
        Ok(txs)
    }
}

/// A block-sync request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum SyncRequest {
    /// "What is your newest finalized block?"
    Status,
    /// "Send the finalized blocks `from..=to`." The server may send fewer (a prefix).
    Blocks { from: u64, to: u64 },
    /// "Send the block with this hash, final or not." Asked for a parent that a proposal or
    /// this node's own proposal must extend, when this node lacks it (since 2026-12-07; an
    /// older node answers `Refused`, as for any unknown kind).
    Block { hash: Hash },
}

/// Largest encoded sync request.
pub const SYNC_REQUEST_BYTES_MAX: usize = 64;

impl SyncRequest {
    /// Encodes for the wire.
    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(self)
    }

    /// Decodes a request.
    pub fn decode(bytes: &[u8]) -> Result<SyncRequest, WireError> {
        decode_versioned("sync request", bytes, SYNC_REQUEST_BYTES_MAX, &[0, 1, 2])
    }
}

/// A block-sync response.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum SyncResponse {
    Status {
        finalized_height: u64,
        finalized_hash: Hash,
    },
    /// Ascending, consecutive, starting at the requested `from`; possibly fewer than asked.
    Blocks { blocks: Vec<CertifiedBlock> },
    /// The request could not be served (e.g. the range is above our head).
    Refused { reason: String },
    /// The answer to `SyncRequest::Block`: the block, or `None` when the server lacks it. The
    /// asker checks that it hashes to what it asked for before using it.
    Block { block: Option<ConsensusBlock> },
}

impl SyncResponse {
    /// Encodes for the wire.
    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(self)
    }

    /// Decodes at most `max` bytes.
    pub fn decode(bytes: &[u8], max: usize) -> Result<SyncResponse, WireError> {
        decode_versioned("sync response", bytes, max, &[0, 1, 2, 3])
    }
}

/// What the node stores as a block's "certificate" bytes (the ledger treats them as opaque):
/// the consensus header (for its view and parent view, which the ledger header lacks) and the
/// finality certificate, which is over this block or over a descendant finalized with it.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum FinalityRecord {
    V1 {
        header: Header,
        certificate: FinalityCertificate,
    },
}

/// Largest stored finality record (a certificate of up to a few hundred validators).
pub const FINALITY_RECORD_BYTES_MAX: usize = 256 * 1024;

impl FinalityRecord {
    /// Encodes for storage.
    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(self)
    }

    /// Decodes stored bytes.
    pub fn decode(bytes: &[u8]) -> Result<FinalityRecord, WireError> {
        decode_versioned("finality record", bytes, FINALITY_RECORD_BYTES_MAX, &[0])
    }

    /// The consensus header of the block.
    pub fn header(&self) -> &Header {
        match self {
            FinalityRecord::V1 { header, .. } => header,
        }
    }

    /// The certificate that finalized the block.
    pub fn certificate(&self) -> &FinalityCertificate {
        match self {
            FinalityRecord::V1 { certificate, .. } => certificate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_tags_are_not_garbage() {
        assert_eq!(
            ConsensusEnvelope::decode(&[7, 1, 2], 1024),
            Err(WireError::UnknownKind { tag: 7 })
        );
        assert!(matches!(
            ConsensusEnvelope::decode(&[0, 1, 2], 1024),
            Err(WireError::Malformed { .. })
        ));
        assert!(matches!(
            TxGossip::decode(&[], 1024),
            Err(WireError::Malformed { .. })
        ));
        assert_eq!(
            SyncRequest::decode(&[9]),
            Err(WireError::UnknownKind { tag: 9 })
        );
    }

    #[test]
    fn sync_request_round_trips() {
        let request = SyncRequest::Blocks { from: 3, to: 9 };
        assert_eq!(SyncRequest::decode(&request.encode()), Ok(request));
        assert_eq!(
            SyncRequest::decode(&SyncRequest::Status.encode()),
            Ok(SyncRequest::Status)
        );
    }
}
