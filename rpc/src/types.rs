//! The JSON shapes of parameters, results and notifications.
//!
//! Conventions, the same everywhere: hashes, addresses, keys, signatures and byte strings are
//! `0x`-prefixed lowercase hex; every integer (amounts, heights, nonces, fees, times) is a JSON
//! **number** holding the exact `u64` — the ledger's own JSON (genesis, headers, receipts) uses
//! numbers too. Clients in languages whose default JSON numbers are doubles (JavaScript) must
//! parse with a big-integer-aware parser to read values above 2^53 exactly. Field names are
//! `snake_case`; times are Unix milliseconds with the unit in the name (`timestamp_ms`).

use borsh::{BorshDeserialize, BorshSerialize};
use mesh_consensus::{
    BlockId, Epoch, FinalityCertificate, Header as ConsensusHeader, Height, ValidatorSignature,
    View,
};
use mesh_ledger::{Address, BlockHeader, Hash, Receipt, SignedTransaction, TxHash, Validator};
use serde::{Deserialize, Serialize};

use crate::backend::EpochValidators;

/// Bytes shown as `0x`-hex in JSON.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HexBytes(pub Vec<u8>);

impl std::fmt::Debug for HexBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HexBytes({})", mesh_ledger::bytes::to_hex(&self.0))
    }
}

impl Serialize for HexBytes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&mesh_ledger::bytes::to_hex(&self.0))
    }
}

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str> as Deserialize<'de>>::deserialize(deserializer)?;
        parse_hex_strict(&text)
            .map(HexBytes)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses `0x`-prefixed hex. Unlike the ledger's lenient parser, the prefix is required so
/// that a decimal string is never silently taken for bytes.
pub fn parse_hex_strict(text: &str) -> Result<Vec<u8>, String> {
    let digits = text
        .strip_prefix("0x")
        .ok_or_else(|| "hex must start with 0x".to_owned())?;
    hex::decode(digits).map_err(|err| format!("invalid hex: {err}"))
}

/// Whether the node votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    /// Holds a validator key of the current set and votes.
    Validator,
    /// Follows the chain by verifying certificates; serves RPC.
    FullNode,
}

/// `mesh_status`: who the node is and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeStatus {
    /// The chain id.
    pub chain_id: String,
    /// The node's libp2p peer id.
    pub node_id: String,
    /// The `meshd` version.
    pub version: String,
    /// Validator or full node.
    pub role: NodeRole,
    /// The validator address, when `role` is `validator`.
    pub validator_address: Option<Address>,
    /// Newest finalized height.
    pub finalized_height: u64,
    /// Hash of the newest finalized block.
    pub finalized_hash: Hash,
    /// Timestamp of the newest finalized block (proposer's clock, Unix ms).
    pub finalized_time_ms: u64,
    /// Oldest height whose blocks and state the node serves.
    pub retained_from_height: u64,
    /// True while the node catches up with its peers.
    pub syncing: bool,
    /// Connected peers.
    pub peer_count: u32,
}

/// Where a transaction is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum TxStatus {
    /// In the mempool, not yet final.
    Pending,
    /// In the finalized block at `height`, position `index`.
    Final {
        /// Block height.
        height: u64,
        /// Position in the block.
        index: u32,
    },
    /// Left the mempool without becoming final: replaced, evicted, or no longer executable.
    /// Reported by `mesh_getTransaction` for the node's last 10,000 such transactions, by
    /// subscriptions and by waits.
    Dropped {
        /// Why.
        detail: String,
    },
    /// Neither pending nor final on this node.
    Unknown,
}

/// `mesh_getTransaction`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxInfo {
    /// The transaction hash.
    pub hash: TxHash,
    /// Where it is.
    pub status: TxStatus,
    /// The transaction, unless unknown.
    pub transaction: Option<SignedTransaction>,
}

/// `mesh_getBlock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockInfo {
    /// The block hash (hash of the header).
    pub hash: Hash,
    /// The header.
    pub header: BlockHeader,
    /// Hashes of the transactions, in block order.
    pub tx_hashes: Vec<TxHash>,
    /// The transactions themselves, when `full_txs` was true.
    pub transactions: Option<Vec<SignedTransaction>>,
}

/// One validator's signature in a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureJson {
    /// The validator.
    pub signer: Address,
    /// Its ed25519 signature over the finalize vote.
    pub signature: mesh_ledger::Signature,
}

/// A finality certificate: finalize votes of more than two thirds of the voting power for one
/// block (`mesh_consensus::FinalityCertificate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateJson {
    /// Epoch whose validator set signed the certificate.
    pub epoch: u64,
    /// Consensus view (of that epoch) in which the block was finalized.
    pub view: u64,
    /// Height of the certified block.
    pub height: u64,
    /// Hash of the certified block (the ledger header hash).
    pub block_hash: Hash,
    /// Signatures, sorted by signer.
    pub signatures: Vec<SignatureJson>,
}

impl From<&FinalityCertificate> for CertificateJson {
    fn from(cert: &FinalityCertificate) -> CertificateJson {
        CertificateJson {
            epoch: cert.subject.epoch.0,
            view: cert.subject.view.0,
            height: cert.subject.height.0,
            block_hash: cert.subject.hash,
            signatures: cert
                .signatures
                .iter()
                .map(|item| SignatureJson {
                    signer: item.signer,
                    signature: item.signature,
                })
                .collect(),
        }
    }
}

impl From<&CertificateJson> for FinalityCertificate {
    fn from(cert: &CertificateJson) -> FinalityCertificate {
        FinalityCertificate {
            subject: BlockId {
                epoch: Epoch(cert.epoch),
                view: View(cert.view),
                height: Height(cert.height),
                hash: cert.block_hash,
            },
            signatures: cert
                .signatures
                .iter()
                .map(|item| ValidatorSignature {
                    signer: item.signer,
                    signature: item.signature,
                })
                .collect(),
        }
    }
}

/// The consensus header of a finalized block (`mesh_consensus::Header`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsensusHeaderJson {
    /// Epoch in which the block was proposed.
    pub epoch: u64,
    /// View (of that epoch) in which the block was proposed.
    pub view: u64,
    /// Its height.
    pub height: u64,
    /// View of its parent.
    pub parent_view: u64,
    /// Hash of its parent.
    pub parent: Hash,
    /// Its hash (the ledger header hash).
    pub hash: Hash,
}

/// What the node stores per finalized height next to the block: the consensus header and the
/// finality certificate that made it final. Borsh-encodable so the node can store exactly this.
///
/// The certificate is over this block or over a descendant finalized in the same step
/// (Simplex finalizes ancestors implicitly); then `certificate.subject.height` is greater.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct FinalityRecord {
    /// The block's consensus header.
    pub header: ConsensusHeader,
    /// The certificate that finalized it.
    pub certificate: FinalityCertificate,
}

/// `mesh_getCertificate`: the decoded [`FinalityRecord`] of a height.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalityRecordJson {
    /// The height asked for.
    pub height: u64,
    /// The block's consensus header.
    pub header: ConsensusHeaderJson,
    /// The certificate.
    pub certificate: CertificateJson,
    /// The borsh bytes of the record, for clients that keep them.
    pub encoded: HexBytes,
}

impl FinalityRecordJson {
    /// The JSON form of a record.
    pub fn new(height: u64, record: &FinalityRecord) -> FinalityRecordJson {
        let header = &record.header;
        FinalityRecordJson {
            height,
            header: ConsensusHeaderJson {
                epoch: header.epoch.0,
                view: header.view.0,
                height: header.height.0,
                parent_view: header.parent_view.0,
                parent: header.parent,
                hash: header.hash,
            },
            certificate: CertificateJson::from(&record.certificate),
            encoded: HexBytes(mesh_ledger::encoding::encode(record)),
        }
    }
}

/// Evidence that a header is final: a certificate and, when the certificate is over a
/// descendant, the headers from the block's child up to the certified block (each the parent
/// of the next), so the link can be checked hash by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalityProof {
    /// The certificate.
    pub certificate: CertificateJson,
    /// Headers of heights `header.height + 1 ..= certificate.height`, ascending; empty when
    /// the certificate is over the header itself.
    pub links: Vec<BlockHeader>,
}

/// A Merkle proof with everything needed to check it without trusting the node: the header
/// whose state root it verifies against and that header's finality evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofBundle {
    /// Borsh bytes of the `mesh_ledger::state::StateProof` (a Jellyfish Merkle proof).
    pub proof: HexBytes,
    /// The header at the read's height.
    pub header: BlockHeader,
    /// Finality evidence; `null` only for genesis (height 0), which has no certificate.
    pub finality: Option<FinalityProof>,
}

/// Options of `mesh_getAccount` and `mesh_getValue`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadOptions {
    /// Height to read at; the newest finalized height when absent.
    pub height: Option<u64>,
    /// Include a proof bundle.
    pub prove: bool,
}

/// `mesh_getAccount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountInfo {
    /// The account.
    pub address: Address,
    /// The height read at.
    pub height: u64,
    /// False when the account was never created (then balance and nonce are 0).
    pub exists: bool,
    /// Its balance.
    pub balance: u64,
    /// The nonce its next transaction must carry.
    pub nonce: u64,
    /// With `prove`: the proof bundle.
    pub proof: Option<ProofBundle>,
}

/// `mesh_getValue`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueInfo {
    /// Owner of the namespace.
    pub owner: Address,
    /// The key.
    pub key: HexBytes,
    /// The height read at.
    pub height: u64,
    /// The value; `null` when the key is not set.
    pub value: Option<HexBytes>,
    /// With `prove`: the proof bundle.
    pub proof: Option<ProofBundle>,
}

/// One entry of `mesh_listKeys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// The key.
    pub key: HexBytes,
    /// Its value.
    pub value: HexBytes,
}

/// `mesh_listKeys`: one page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysPage {
    /// Owner of the namespace.
    pub owner: Address,
    /// Entries in key order.
    pub entries: Vec<KeyEntry>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<HexBytes>,
}

/// `mesh_validators`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorsInfo {
    /// The height the set is in force at.
    pub height: u64,
    /// The epoch of that height.
    pub epoch: u64,
    /// The epoch's first height.
    pub first_height: u64,
    /// The epoch's last height (its boundary block).
    pub last_height: u64,
    /// Hash of the set (the headers' `validator_set_hash`).
    pub validator_set_hash: Hash,
    /// Sum of voting power.
    pub total_power: u64,
    /// Power a certificate needs (more than two thirds).
    pub quorum_power: u64,
    /// The validators, in address order.
    pub validators: Vec<Validator>,
}

impl ValidatorsInfo {
    /// The JSON form of the set in force at `height`.
    pub fn new(height: u64, epoch: &EpochValidators) -> ValidatorsInfo {
        let set = &epoch.set;
        ValidatorsInfo {
            height,
            epoch: epoch.epoch,
            first_height: epoch.first_height,
            last_height: epoch.last_height,
            validator_set_hash: set.hash(),
            total_power: set.total_power(),
            quorum_power: set.quorum_power(),
            validators: set.validators().to_vec(),
        }
    }
}

/// `mesh_getEpoch`: the epoch in progress (the one the next height belongs to), its set and the
/// next one (both fixed), and the changes still pending — the cut of the stake table as it
/// stands, which becomes `set(epoch + 2)` unless staking changes it before `last_height`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochStatus {
    /// The epoch in progress.
    pub epoch: u64,
    /// Its first height.
    pub first_height: u64,
    /// Its last height (its boundary block, which computes `set(epoch + 2)`).
    pub last_height: u64,
    /// The newest finalized height the answer was read at.
    pub finalized_height: u64,
    /// `set(epoch)`, in address order.
    pub validators: Vec<Validator>,
    /// `set(epoch + 1)`, fixed since `last(epoch − 1)`.
    pub next_validators: Vec<Validator>,
    /// The cut of the stake table now: `set(epoch + 2)` if nothing changes before
    /// `last_height`. Address order.
    pub projected_validators: Vec<Validator>,
    /// Every candidate of the stake table, by key.
    pub candidates: Vec<CandidateInfo>,
    /// Unbonded amounts waiting for release, by release epoch (`epoch` and `epoch + 1`).
    pub unbonding: Vec<UnbondingInfo>,
}

/// A candidate of the stake table (`mesh_getEpoch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateInfo {
    /// The validator key.
    pub key: Address,
    /// Sum of every bond to it, base units (its power if it makes the cut).
    pub bonded: u64,
    /// Height of the self-bond that registered it (0 for genesis validators).
    pub registered_height: u64,
}

/// An unbonded amount waiting for release (`mesh_getEpoch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnbondingInfo {
    /// Released to `owner`'s balance by the end-of-epoch step of this epoch's last height.
    pub release_epoch: u64,
    /// Who unbonded.
    pub owner: Address,
    /// How much.
    pub amount: u64,
}

/// One change of the validator set as a light client checks it (`mesh_getEpochProof`): the
/// boundary header of `epoch` (its last height), the certificate by `set(epoch)` that finalized
/// that very header, and `set(epoch + 1)`, whose hash the header commits to
/// (`next_validator_set_hash`). See [`crate::TrustAnchor::advance`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochChange {
    /// The epoch that ends.
    pub epoch: u64,
    /// Header of its last height.
    pub boundary: BlockHeader,
    /// The certificate over `boundary`, signed by `set(epoch)` in `epoch`.
    pub certificate: CertificateJson,
    /// The set of `epoch + 1`, in address order.
    pub next_validators: Vec<Validator>,
}

/// `mesh_getEpochProof`: consecutive epoch changes from the epoch asked for; fewer than asked
/// (possibly none) when the chain has not finalized the later boundaries yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochProof {
    /// The changes, ascending by epoch.
    pub changes: Vec<EpochChange>,
}

/// One connected peer (`mesh_peers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerInfo {
    /// libp2p peer id.
    pub peer_id: String,
    /// Its address as the node sees it (multiaddress).
    pub address: String,
    /// True when the peer dialed us.
    pub inbound: bool,
}

/// `mesh_mempool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MempoolStats {
    /// Pending transactions.
    pub count: u64,
    /// Their encoded bytes.
    pub bytes: u64,
    /// Capacity in transactions.
    pub max_count: u64,
    /// Capacity in bytes.
    pub max_bytes: u64,
}

/// One readiness check of `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadinessCheck {
    /// `has_peers`, `not_syncing`, `recent_block` or `backend`.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// The observed value against the threshold.
    pub detail: String,
}

/// The body of `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadinessReport {
    /// True when every check passed (then the status is 200, else 503).
    pub ready: bool,
    /// Every check, passed or not.
    pub checks: Vec<ReadinessCheck>,
    /// Names of the failed checks.
    pub failed: Vec<String>,
}

/// Options of `mesh_subscribeBlocks`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscribeBlocksOptions {
    /// Replay every finalized block from this height first (typically the last height the
    /// client saw plus one); when absent, only blocks finalized after subscribing.
    pub from_height: Option<u64>,
}

/// A notification of `mesh_subscribeBlocks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BlockEvent {
    /// A finalized block, in height order, each exactly once.
    Block {
        /// Its height.
        height: u64,
        /// Its hash.
        hash: Hash,
        /// Its header.
        header: Box<BlockHeader>,
    },
    /// The subscriber fell behind; this is the last notification. Resubscribe with
    /// `from_height = resume_from_height` to continue without a gap.
    Lagged {
        /// The first height not delivered.
        resume_from_height: u64,
    },
}

/// A notification of `mesh_subscribeTransaction`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TxEvent {
    /// The transaction's status changed (the first notification is the status at
    /// subscription). After `final` or `dropped` the subscription ends.
    Status {
        /// The transaction.
        hash: TxHash,
        /// Its status.
        status: TxStatus,
        /// The receipt, once final.
        receipt: Option<Receipt>,
    },
    /// The subscriber fell behind; this is the last notification. Ask `mesh_getTransaction`.
    Lagged {
        /// The transaction.
        hash: TxHash,
    },
}

/// A notification of `mesh_subscribeAccount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AccountEvent {
    /// The account at a finalized height: first its state at subscription, then after every
    /// block that changed it.
    Account {
        /// The account.
        address: Address,
        /// The height.
        height: u64,
        /// False when it does not exist.
        exists: bool,
        /// Its balance.
        balance: u64,
        /// Its nonce.
        nonce: u64,
    },
    /// The subscriber fell behind; this is the last notification.
    Lagged {
        /// The first height whose changes were not delivered.
        resume_from_height: u64,
    },
}

/// `rpc_methods`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodList {
    /// Every method name, sorted.
    pub methods: Vec<String>,
}
