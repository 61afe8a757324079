//! The mempool: transactions that passed validation and wait for a block.
//!
//! Admission runs the cheap stateless checks first, then signatures (in one batch when many
//! arrive together), then the stateful checks against the sender's committed account. The pool
//! is bounded by count and bytes; when full, a transaction paying a higher fee evicts the
//! lowest-fee ones. Per sender it keeps nonces in order and accepts nonces at most
//! `future_nonce_window` ahead of the account's. A bounded cache of recently seen hashes makes
//! repeated gossip cheap, and admission reports whether a transaction is new, so the caller
//! gossips each valid transaction once.
//!
//! Pure and synchronous: the node owns the I/O around it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use mesh_ledger::tx::{verify_signatures, TxError};
use mesh_ledger::{Account, Address, FailureReason, Params, SignedTransaction, TxHash};

/// Bounds of the pool. Sizes live in the node's config.
#[derive(Debug, Clone)]
pub struct MempoolConfig {
    /// Most transactions held.
    pub max_txs: usize,
    /// Most encoded bytes held.
    pub max_bytes: usize,
    /// How far past the account's nonce a held transaction may be.
    pub future_nonce_window: u64,
    /// How many recently seen hashes are remembered for deduplication.
    pub seen_cache_size: usize,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            max_txs: 50_000,
            max_bytes: 64 << 20,
            future_nonce_window: 64,
            seen_cache_size: 100_000,
        }
    }
}

/// A transaction whose stateless checks and signature passed where it was submitted (the
/// RPC's admission pool), so the driver's loop admits it with the stateful checks alone and
/// never spends a signature check on a client's behalf. Only [`CheckedTx::check`] makes one.
#[derive(Debug, Clone)]
pub struct CheckedTx {
    tx: SignedTransaction,
    hash: TxHash,
    encoded_len: usize,
}

impl CheckedTx {
    /// Runs the checks that need no state — size, chain id, fee floor, key and value sizes —
    /// and then the signature.
    pub fn check(tx: SignedTransaction, chain_id: &str, params: &Params) -> Result<Self, TxError> {
        let encoded = tx.encode();
        tx.check_stateless_sized(encoded.len(), chain_id, params)?;
        tx.verify_signature()?;
        Ok(CheckedTx {
            hash: TxHash::of(&encoded),
            encoded_len: encoded.len(),
            tx,
        })
    }

    pub fn hash(&self) -> TxHash {
        self.hash
    }

    pub fn tx(&self) -> &SignedTransaction {
        &self.tx
    }
}

/// Why a transaction was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    #[error(transparent)]
    Invalid(#[from] TxError),
    #[error("nonce {got} is too low: the account expects {expected}")]
    NonceTooLow { expected: u64, got: u64 },
    #[error(
        "nonce {got} is too far ahead: the account expects {expected}, the pool holds up to {max}"
    )]
    NonceTooHigh { expected: u64, got: u64, max: u64 },
    #[error("insufficient balance for the fee: balance {balance}, fee {fee}")]
    InsufficientBalance { balance: u64, fee: u64 },
    #[error("a transaction with nonce {nonce} from this sender is already pending with fee {pending_fee}; replace it with a higher fee")]
    NonceAlreadyPending { nonce: u64, pending_fee: u64 },
    #[error("mempool is full and fee {fee} does not beat the lowest pending fee {lowest}")]
    Full { fee: u64, lowest: u64 },
    /// A bond or unbond that would fail now (the node's admission check against the committed
    /// state, `mesh_ledger::check_staking`): refused rather than charged a fee for a failed
    /// receipt. The reason is the one its receipt would carry.
    #[error("staking operation refused: {reason}")]
    Staking {
        reason: FailureReason,
        /// The transaction's fee (the API reports a bond the balance cannot cover with it).
        fee: u64,
    },
}

/// A transaction admitted, or already known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// New in the pool: gossip it.
    New(TxHash),
    /// Already pending (same bytes): nothing to do, same hash.
    Known(TxHash),
}

impl Admitted {
    /// The transaction's hash.
    pub fn hash(&self) -> TxHash {
        match self {
            Admitted::New(hash) | Admitted::Known(hash) => *hash,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    stx: SignedTransaction,
    encoded_len: usize,
    arrival: u64,
    /// Blocks committed (`Mempool::blocks`) when it was admitted or last re-announced.
    announced_at_block: u64,
}

impl Entry {
    /// Order for eviction: lowest fee first, then newest first.
    fn eviction_key(&self, hash: TxHash) -> (u64, Reverse<u64>, TxHash) {
        (self.stx.tx.fee, Reverse(self.arrival), hash)
    }
}

/// The pool.
#[derive(Debug)]
pub struct Mempool {
    config: MempoolConfig,
    chain_id: String,
    params: Params,
    entries: HashMap<TxHash, Entry>,
    by_sender: HashMap<Address, BTreeMap<u64, TxHash>>,
    by_fee: BTreeSet<(u64, Reverse<u64>, TxHash)>,
    bytes: usize,
    arrivals: u64,
    /// Blocks committed since start: the clock of re-announcement.
    blocks: u64,
    seen: HashSet<TxHash>,
    seen_order: VecDeque<TxHash>,
    /// Transactions that left without being included, and why, until taken.
    dropped: Vec<(TxHash, &'static str)>,
    /// The last `DROPPED_LOG_MAX` transactions that left without being included, with why, so
    /// a client asking later hears "dropped: <reason>" rather than "unknown".
    dropped_log: HashMap<TxHash, (SignedTransaction, &'static str)>,
    dropped_log_order: VecDeque<TxHash>,
}

/// Most dropped transactions remembered for look-ups (a few MiB at most).
pub const DROPPED_LOG_MAX: usize = 10_000;

/// Most drop reports kept until [`Mempool::take_dropped`] collects them.
const DROPPED_REPORTS_MAX: usize = 100_000;

/// Why a pending transaction left the pool without being included.
pub const DROP_REPLACED: &str = "replaced by a transaction with the same nonce and a higher fee";
/// See [`DROP_REPLACED`].
pub const DROP_EVICTED: &str = "evicted: the mempool was full and higher fees arrived";
/// See [`DROP_REPLACED`].
pub const DROP_STALE: &str =
    "can no longer execute after a block: its nonce was used, it is too far ahead, or the balance no longer covers the fee";

impl Mempool {
    /// An empty pool for `chain_id` under `params`.
    pub fn new(config: MempoolConfig, chain_id: String, params: Params) -> Mempool {
        Mempool {
            config,
            chain_id,
            params,
            entries: HashMap::new(),
            by_sender: HashMap::new(),
            by_fee: BTreeSet::new(),
            bytes: 0,
            arrivals: 0,
            blocks: 0,
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            dropped: Vec::new(),
            dropped_log: HashMap::new(),
            dropped_log_order: VecDeque::new(),
        }
    }

    /// Most transactions the pool holds.
    pub fn capacity(&self) -> usize {
        self.config.max_txs
    }

    /// Number of pending transactions.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Encoded bytes of all pending transactions.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True when `hash` is pending.
    pub fn contains(&self, hash: &TxHash) -> bool {
        self.entries.contains_key(hash)
    }

    /// True when `hash` is pending, and so its signature passed: every pending transaction
    /// was verified on its way in ([`CheckedTx::check`] or [`Mempool::insert_batch`]), and a
    /// hash covers the signature. A block holding it need not verify it again
    /// (`mesh_ledger::SignaturesVerified`).
    pub fn signature_verified(&self, hash: &TxHash) -> bool {
        self.entries.contains_key(hash)
    }

    /// A pending transaction.
    pub fn get(&self, hash: &TxHash) -> Option<&SignedTransaction> {
        self.entries.get(hash).map(|entry| &entry.stx)
    }

    /// True when `hash` was seen recently (pending, included, or refused): gossip of it can be
    /// dropped without decoding or verifying again.
    pub fn recently_seen(&self, hash: &TxHash) -> bool {
        self.seen.contains(hash)
    }

    fn remember(&mut self, hash: TxHash) {
        if self.seen.insert(hash) {
            self.seen_order.push_back(hash);
            while self.seen_order.len() > self.config.seen_cache_size {
                if let Some(old) = self.seen_order.pop_front() {
                    self.seen.remove(&old);
                }
            }
        }
    }

    /// Admits one transaction. `account` is the sender's committed account.
    pub fn insert(
        &mut self,
        stx: SignedTransaction,
        account: &Account,
    ) -> Result<Admitted, MempoolError> {
        let mut results = self.insert_batch(vec![stx], |_| *account);
        results
            .pop()
            .unwrap_or(Err(MempoolError::Invalid(TxError::InvalidSignature)))
    }

    /// Admits a transaction checked elsewhere ([`CheckedTx`]): the stateful checks only.
    pub fn insert_checked(
        &mut self,
        checked: CheckedTx,
        account: &Account,
    ) -> Result<Admitted, MempoolError> {
        let CheckedTx {
            tx,
            hash,
            encoded_len,
        } = checked;
        if self.entries.contains_key(&hash) {
            return Ok(Admitted::Known(hash));
        }
        self.remember(hash);
        self.admit_verified(tx, hash, encoded_len, account)
    }

    /// Admits many transactions, verifying their signatures in one batch. `account_of` gives
    /// each sender's committed account. Results are in input order.
    pub fn insert_batch(
        &mut self,
        txs: Vec<SignedTransaction>,
        mut account_of: impl FnMut(&Address) -> Account,
    ) -> Vec<Result<Admitted, MempoolError>> {
        let mut results: Vec<Option<Result<Admitted, MempoolError>>> =
            Vec::with_capacity(txs.len());
        let mut to_verify = Vec::new();
        let mut to_verify_at = Vec::new();
        let mut hashes = Vec::with_capacity(txs.len());
        let mut lengths = Vec::with_capacity(txs.len());
        for (index, stx) in txs.into_iter().enumerate() {
            // Encode once: the hash, the size check and the byte accounting all need it.
            let encoded = stx.encode();
            let hash = TxHash::of(&encoded);
            hashes.push(hash);
            lengths.push(encoded.len());
            if self.entries.contains_key(&hash) {
                results.push(Some(Ok(Admitted::Known(hash))));
                continue;
            }
            // Cheap checks before any signature work.
            match stx.check_stateless_sized(encoded.len(), &self.chain_id, &self.params) {
                Err(err) => results.push(Some(Err(err.into()))),
                Ok(()) => {
                    results.push(None);
                    to_verify.push(stx);
                    to_verify_at.push(index);
                }
            }
        }
        let verdicts = verify_all(&to_verify);
        for ((stx, index), verdict) in to_verify.into_iter().zip(to_verify_at).zip(verdicts) {
            let hash = hashes[index];
            self.remember(hash);
            let result = match verdict {
                Err(err) => Err(err.into()),
                Ok(()) => {
                    let account = account_of(&stx.tx.sender);
                    self.admit_verified(stx, hash, lengths[index], &account)
                }
            };
            results[index] = Some(result);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(MempoolError::Invalid(TxError::InvalidSignature))))
            .collect()
    }

    fn admit_verified(
        &mut self,
        stx: SignedTransaction,
        hash: TxHash,
        encoded_len: usize,
        account: &Account,
    ) -> Result<Admitted, MempoolError> {
        if self.entries.contains_key(&hash) {
            return Ok(Admitted::Known(hash));
        }
        let tx = &stx.tx;
        if tx.nonce < account.nonce {
            return Err(MempoolError::NonceTooLow {
                expected: account.nonce,
                got: tx.nonce,
            });
        }
        let max = account
            .nonce
            .saturating_add(self.config.future_nonce_window);
        if tx.nonce > max {
            return Err(MempoolError::NonceTooHigh {
                expected: account.nonce,
                got: tx.nonce,
                max,
            });
        }
        if account.balance < tx.fee {
            return Err(MempoolError::InsufficientBalance {
                balance: account.balance,
                fee: tx.fee,
            });
        }
        // Same sender and nonce: only a higher fee replaces (so a stuck transaction can be
        // bumped, and a peer cannot churn the pool with equal-fee variants).
        let sender = tx.sender;
        let pending = self
            .by_sender
            .get(&sender)
            .and_then(|nonces| nonces.get(&tx.nonce))
            .copied();
        if let Some(pending_hash) = pending {
            let pending_fee = self.entries.get(&pending_hash).map_or(0, |e| e.stx.tx.fee);
            if tx.fee <= pending_fee {
                return Err(MempoolError::NonceAlreadyPending {
                    nonce: tx.nonce,
                    pending_fee,
                });
            }
            self.drop_tx(&pending_hash, DROP_REPLACED);
        }
        self.make_room(encoded_len, tx.fee, &sender, tx.nonce)?;
        self.arrivals += 1;
        let entry = Entry {
            stx,
            encoded_len,
            arrival: self.arrivals,
            announced_at_block: self.blocks,
        };
        self.by_fee.insert(entry.eviction_key(hash));
        self.by_sender
            .entry(sender)
            .or_default()
            .insert(entry.stx.tx.nonce, hash);
        self.bytes += encoded_len;
        self.entries.insert(hash, entry);
        Ok(Admitted::New(hash))
    }

    /// Evicts lowest-fee transactions until one of `len` bytes fits, if `fee` beats them.
    fn make_room(
        &mut self,
        len: usize,
        fee: u64,
        sender: &Address,
        nonce: u64,
    ) -> Result<(), MempoolError> {
        loop {
            let fits = self.entries.len() < self.config.max_txs
                && self.bytes + len <= self.config.max_bytes;
            if fits {
                return Ok(());
            }
            let Some(&(lowest, _, victim)) = self.by_fee.iter().next() else {
                return Err(MempoolError::Full { fee, lowest: 0 });
            };
            if fee <= lowest {
                return Err(MempoolError::Full { fee, lowest });
            }
            // Evicting one of the newcomer's own earlier nonces would leave it unexecutable.
            if let Some(entry) = self.entries.get(&victim) {
                if entry.stx.tx.sender == *sender && entry.stx.tx.nonce < nonce {
                    return Err(MempoolError::Full { fee, lowest });
                }
            }
            self.evict_with_successors(&victim);
        }
    }

    /// Removes `hash` and the same sender's later nonces, which could no longer execute.
    fn evict_with_successors(&mut self, hash: &TxHash) {
        let Some(entry) = self.entries.get(hash) else {
            return;
        };
        let sender = entry.stx.tx.sender;
        let nonce = entry.stx.tx.nonce;
        let doomed: Vec<TxHash> = self
            .by_sender
            .get(&sender)
            .map(|nonces| nonces.range(nonce..).map(|(_, h)| *h).collect())
            .unwrap_or_default();
        for hash in doomed {
            self.drop_tx(&hash, DROP_EVICTED);
        }
    }

    fn drop_tx(&mut self, hash: &TxHash, reason: &'static str) {
        let Some(stx) = self.remove(hash) else {
            return;
        };
        if self.dropped.len() < DROPPED_REPORTS_MAX {
            self.dropped.push((*hash, reason));
        }
        if self.dropped_log.len() >= DROPPED_LOG_MAX {
            if let Some(oldest) = self.dropped_log_order.pop_front() {
                self.dropped_log.remove(&oldest);
            }
        }
        if self.dropped_log.insert(*hash, (stx, reason)).is_none() {
            self.dropped_log_order.push_back(*hash);
        }
    }

    /// A transaction that left the pool without being included (among the last
    /// [`DROPPED_LOG_MAX`]), and why.
    pub fn dropped(&self, hash: &TxHash) -> Option<(&SignedTransaction, &'static str)> {
        self.dropped_log
            .get(hash)
            .map(|(stx, reason)| (stx, *reason))
    }

    /// Transactions that left the pool without being included since the last call, with the
    /// reason (replaced, evicted, or stale after a block), so clients waiting on them can be
    /// told rather than time out.
    pub fn take_dropped(&mut self) -> Vec<(TxHash, &'static str)> {
        std::mem::take(&mut self.dropped)
    }

    fn remove(&mut self, hash: &TxHash) -> Option<SignedTransaction> {
        let entry = self.entries.remove(hash)?;
        self.by_fee.remove(&entry.eviction_key(*hash));
        self.bytes -= entry.encoded_len;
        let sender = entry.stx.tx.sender;
        if let Some(nonces) = self.by_sender.get_mut(&sender) {
            nonces.remove(&entry.stx.tx.nonce);
            if nonces.is_empty() {
                self.by_sender.remove(&sender);
            }
        }
        Some(entry.stx)
    }

    /// Transactions for a block: per sender in nonce order starting at `nonce_of(sender)` with
    /// no gaps, across senders highest fee first, within the block limits.
    pub fn select(
        &self,
        max_txs: usize,
        max_bytes: u64,
        mut nonce_of: impl FnMut(&Address) -> u64,
    ) -> Vec<SignedTransaction> {
        // A heap of each sender's next executable transaction, keyed by fee.
        let mut heads: BTreeSet<(Reverse<u64>, u64, Address)> = BTreeSet::new();
        let mut next_nonce: HashMap<Address, u64> = HashMap::new();
        for (sender, nonces) in &self.by_sender {
            let nonce = nonce_of(sender);
            if let Some(hash) = nonces.get(&nonce) {
                if let Some(entry) = self.entries.get(hash) {
                    heads.insert((Reverse(entry.stx.tx.fee), entry.arrival, *sender));
                    next_nonce.insert(*sender, nonce);
                }
            }
        }
        let mut selected = Vec::new();
        let mut bytes: u64 = 0;
        while let Some(head) = heads.pop_first() {
            if selected.len() >= max_txs {
                break;
            }
            let sender = head.2;
            let Some(nonce) = next_nonce.get(&sender).copied() else {
                continue;
            };
            let Some(entry) = self
                .by_sender
                .get(&sender)
                .and_then(|n| n.get(&nonce))
                .and_then(|h| self.entries.get(h))
            else {
                continue;
            };
            if bytes + entry.encoded_len as u64 > max_bytes {
                continue; // this sender's chain stops here; smaller ones may still fit
            }
            bytes += entry.encoded_len as u64;
            selected.push(entry.stx.clone());
            let following = nonce + 1;
            if let Some(next) = self
                .by_sender
                .get(&sender)
                .and_then(|n| n.get(&following))
                .and_then(|h| self.entries.get(h))
            {
                heads.insert((Reverse(next.stx.tx.fee), next.arrival, sender));
                next_nonce.insert(sender, following);
            }
        }
        selected
    }

    /// After a block is final: drops its transactions, then re-checks everything else against
    /// the new accounts (`account_of`), dropping what can no longer execute.
    /// Transactions pending for at least `after_blocks` committed blocks since they arrived or
    /// were last announced, oldest first, up to `bytes_max` encoded bytes; each is marked as
    /// announced now. Gossip is best-effort (a mesh under load drops messages), so a pending
    /// transaction is announced again rather than trusted to one publish: a proposer that
    /// missed it can still include it. Per sender in nonce order, so a gap-filling nonce goes
    /// out with (or before) the ones that wait on it.
    pub fn take_reannouncements(
        &mut self,
        after_blocks: u64,
        bytes_max: usize,
    ) -> Vec<SignedTransaction> {
        let now = self.blocks;
        let mut due: Vec<(u64, TxHash)> = self
            .entries
            .iter()
            .filter(|(_, entry)| now.saturating_sub(entry.announced_at_block) >= after_blocks)
            .map(|(hash, entry)| (entry.arrival, *hash))
            .collect();
        due.sort_unstable();
        let mut taken = Vec::new();
        let mut bytes = 0usize;
        for (_, hash) in due {
            let Some(entry) = self.entries.get_mut(&hash) else {
                continue;
            };
            if bytes.saturating_add(entry.encoded_len) > bytes_max {
                break;
            }
            bytes += entry.encoded_len;
            entry.announced_at_block = now;
            taken.push(entry.stx.clone());
        }
        taken.sort_by_key(|stx| (stx.tx.sender, stx.tx.nonce));
        taken
    }

    pub fn on_block_committed(
        &mut self,
        included: &[TxHash],
        mut account_of: impl FnMut(&Address) -> Account,
    ) {
        self.blocks = self.blocks.saturating_add(1);
        for hash in included {
            self.remove(hash);
            self.remember(*hash);
        }
        let senders: Vec<Address> = self.by_sender.keys().copied().collect();
        for sender in senders {
            let account = account_of(&sender);
            let stale: Vec<TxHash> = self
                .by_sender
                .get(&sender)
                .map(|nonces| {
                    nonces
                        .iter()
                        .filter(|(nonce, hash)| {
                            let too_low = **nonce < account.nonce;
                            let too_high = **nonce
                                > account
                                    .nonce
                                    .saturating_add(self.config.future_nonce_window);
                            let unaffordable = self
                                .entries
                                .get(*hash)
                                .is_some_and(|e| e.stx.tx.fee > account.balance);
                            too_low || too_high || unaffordable
                        })
                        .map(|(_, hash)| *hash)
                        .collect()
                })
                .unwrap_or_default();
            for hash in stale {
                self.drop_tx(&hash, DROP_STALE);
            }
        }
    }
}

/// Verifies every signature, batching when there are several; returns a verdict per item.
fn verify_all(txs: &[SignedTransaction]) -> Vec<Result<(), TxError>> {
    if txs.len() > 1 && verify_signatures(txs).is_ok() {
        return vec![Ok(()); txs.len()];
    }
    // One bad signature fails the batch: find every culprit one by one.
    txs.iter()
        .map(SignedTransaction::verify_signature)
        .collect()
}
