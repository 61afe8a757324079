//! An in-memory node behind the `Backend` trait: real blocks built and executed by the ledger,
//! real proofs from its Jellyfish tree, real finality certificates signed by four test
//! validators. Tests drive it (`finalize`) and talk to it through the real server.

// Test heights and indices are tiny: casts between u64, u32 and usize cannot truncate here.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_consensus::{
    BlockId, Epoch, FinalityCertificate, Header as ConsensusHeader, Height, ValidatorSignature,
    View, Vote,
};
use mesh_ledger::execution::ExecutedBlock;
use mesh_ledger::memory::MemoryState;
use mesh_ledger::state::{self, StateKey, StateProof, StateReader};
use mesh_ledger::{
    build_block, genesis_block, Account, Address, Block, BlockHeader, ChainContext, Genesis,
    GenesisAccount, Op, Params, Receipt, SecretKey, SignedTransaction, Transaction, TxHash,
    Validator, ValidatorSet,
};
use mesh_rpc::types::{MempoolStats, NodeRole, NodeStatus, PeerInfo, TxStatus};
use mesh_rpc::{
    ApiError, Backend, BlockRef, DroppedTx, EpochValidators, FinalityRecord, FinalizedEvent,
    RpcServerConfig, RpcServerHandle, StateRead, TrustAnchor, TxLookup,
};
use tokio::sync::broadcast;

pub const CHAIN: &str = "mesh-test";
pub const GENESIS_TIME_MS: u64 = 1_700_000_000_000;

pub fn key(seed: u8) -> SecretKey {
    SecretKey::from_seed([seed; 32])
}

pub fn alice() -> SecretKey {
    key(101)
}

pub fn bob() -> SecretKey {
    key(102)
}

pub fn validator_keys() -> Vec<SecretKey> {
    (1..=4).map(key).collect()
}

pub fn genesis() -> Genesis {
    Genesis {
        chain_id: CHAIN.into(),
        genesis_time_ms: GENESIS_TIME_MS,
        validators: validator_keys()
            .iter()
            .map(|k| Validator {
                address: k.address(),
                power: 10,
            })
            .collect(),
        balances: vec![
            GenesisAccount {
                address: alice().address(),
                balance: 1_000_000,
            },
            GenesisAccount {
                address: bob().address(),
                balance: 500,
            },
        ],
        params: Params::default(),
    }
}

pub fn anchor() -> TrustAnchor {
    TrustAnchor::from_genesis(&genesis()).unwrap()
}

/// A transaction signed by `from`.
pub fn tx(from: &SecretKey, nonce: u64, fee: u64, op: Op) -> SignedTransaction {
    Transaction {
        chain_id: CHAIN.into(),
        sender: from.address(),
        nonce,
        fee,
        op,
    }
    .sign(from)
}

pub fn transfer(from: &SecretKey, nonce: u64, to: &SecretKey, amount: u64) -> SignedTransaction {
    tx(
        from,
        nonce,
        1,
        Op::Transfer {
            to: to.address(),
            amount,
        },
    )
}

pub fn put(from: &SecretKey, nonce: u64, key: &[u8], value: &[u8]) -> SignedTransaction {
    tx(
        from,
        nonce,
        1,
        Op::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        },
    )
}

/// A finality certificate for `header` in `view`, signed by the first `signers` validators.
pub fn certificate(header: &BlockHeader, view: u64, signers: usize) -> FinalityCertificate {
    let id = BlockId {
        epoch: Epoch(0),
        view: View(view),
        height: Height(header.height),
        hash: header.hash(),
    };
    let mut signatures: Vec<ValidatorSignature> = validator_keys()
        .iter()
        .take(signers)
        .map(|k| {
            let vote = Vote::Finalize(id).sign(k, CHAIN);
            ValidatorSignature {
                signer: vote.signer,
                signature: vote.signature,
            }
        })
        .collect();
    signatures.sort_by_key(|s| s.signer);
    FinalityCertificate {
        subject: id,
        signatures,
    }
}

pub struct Chain {
    pub ctx: ChainContext,
    pub validators: ValidatorSet,
    pub state: MemoryState,
    pub blocks: Vec<Block>,
    pub receipts: Vec<Vec<Receipt>>,
    pub records: Vec<Option<FinalityRecord>>,
    pub tx_index: HashMap<TxHash, (u64, u32)>,
    pub mempool: BTreeMap<TxHash, SignedTransaction>,
    pub mempool_max: usize,
    pub peers: u32,
    pub syncing: bool,
    /// Blocks finalized together, whose lower members carry the top block's certificate.
    pub pending_unrecorded: Vec<u64>,
    /// When set, every backend call fails with this.
    pub fail_with: Option<ApiError>,
    /// When set, account reads add 1 to the balance (a lying node with an honest proof).
    pub lie: bool,
}

pub struct MockNode {
    pub chain: Mutex<Chain>,
    pub finalized: broadcast::Sender<Arc<FinalizedEvent>>,
    pub dropped: broadcast::Sender<Arc<DroppedTx>>,
}

impl MockNode {
    pub fn new() -> Arc<MockNode> {
        MockNode::with_capacity(256)
    }

    pub fn with_capacity(stream_capacity: usize) -> Arc<MockNode> {
        let genesis = genesis();
        let mut state = MemoryState::new();
        let executed = genesis_block(&state, &genesis).unwrap();
        state.commit(&executed);
        let chain = Chain {
            ctx: ChainContext::from_genesis(&genesis).unwrap(),
            validators: genesis.validator_set().unwrap(),
            state,
            blocks: vec![executed.block.clone()],
            receipts: vec![Vec::new()],
            records: vec![None],
            tx_index: HashMap::new(),
            mempool: BTreeMap::new(),
            mempool_max: 1000,
            peers: 3,
            syncing: false,
            pending_unrecorded: Vec::new(),
            fail_with: None,
            lie: false,
        };
        Arc::new(MockNode {
            chain: Mutex::new(chain),
            finalized: broadcast::channel(stream_capacity).0,
            dropped: broadcast::channel(64).0,
        })
    }

    pub fn height(&self) -> u64 {
        self.chain.lock().unwrap().blocks.len() as u64 - 1
    }

    /// Builds, executes and finalizes the next block from the mempool; returns its height.
    pub fn finalize(&self) -> u64 {
        self.finalize_with(1)
    }

    /// Finalizes `count` blocks at once: only the top one carries its own certificate, the
    /// lower ones carry the top's (as Simplex finalizes ancestors implicitly).
    pub fn finalize_with(&self, count: u64) -> u64 {
        let mut events = Vec::new();
        let top = {
            let mut chain = self.chain.lock().unwrap();
            let first = chain.blocks.len() as u64;
            for _ in 0..count {
                let executed = chain.build_next();
                chain.commit(&executed);
                events.push(FinalizedEvent::from_executed(&executed));
            }
            let top = first + count - 1;
            let top_cert = chain.record_for(top, top);
            for height in first..=top {
                let record = FinalityRecord {
                    header: chain.consensus_header(height),
                    certificate: top_cert.clone(),
                };
                chain.records.push(Some(record));
            }
            top
        };
        for event in events {
            let _ = self.finalized.send(Arc::new(event));
        }
        top
    }

    pub fn drop_tx(&self, hash: TxHash, detail: &str) {
        self.chain.lock().unwrap().mempool.remove(&hash);
        let _ = self.dropped.send(Arc::new(DroppedTx {
            hash,
            detail: detail.into(),
        }));
    }

    fn check(&self) -> Result<std::sync::MutexGuard<'_, Chain>, ApiError> {
        let chain = self.chain.lock().unwrap();
        match &chain.fail_with {
            Some(err) => Err(err.clone()),
            None => Ok(chain),
        }
    }
}

impl Chain {
    fn tip(&self) -> &Block {
        self.blocks.last().unwrap()
    }

    fn build_next(&mut self) -> ExecutedBlock {
        let parent = self.tip().header.clone();
        let candidates: Vec<SignedTransaction> = {
            // Sender order, then nonce order, so sequential nonces all fit.
            let mut txs: Vec<SignedTransaction> = self.mempool.values().cloned().collect();
            txs.sort_by_key(|t| (t.tx.sender, t.tx.nonce));
            txs
        };
        let proposer = validator_keys()[(parent.height as usize + 1) % 4].address();
        let (executed, _excluded) = build_block(
            &self.state,
            &parent,
            proposer,
            parent.timestamp_ms + 1000,
            candidates,
            &self.ctx,
        )
        .unwrap();
        executed
    }

    fn commit(&mut self, executed: &ExecutedBlock) {
        self.state.commit(executed);
        let height = executed.height();
        for (index, hash) in executed.tx_hashes.iter().enumerate() {
            self.mempool.remove(hash);
            self.tx_index.insert(*hash, (height, index as u32));
        }
        self.blocks.push(executed.block.clone());
        self.receipts.push(executed.receipts.clone());
    }

    fn consensus_header(&self, height: u64) -> ConsensusHeader {
        let block = &self.blocks[height as usize];
        ConsensusHeader {
            epoch: Epoch(0),
            view: View(height),
            height: Height(height),
            parent_view: View(height - 1),
            parent: block.header.parent_hash,
            hash: block.hash(),
        }
    }

    fn record_for(&self, _height: u64, certified: u64) -> FinalityCertificate {
        certificate(&self.blocks[certified as usize].header, certified, 3)
    }

    fn account_now(&self, address: &Address) -> Account {
        self.state.account(address).unwrap().unwrap_or_default()
    }

    fn status(&self) -> NodeStatus {
        let tip = &self.tip().header;
        NodeStatus {
            chain_id: CHAIN.into(),
            node_id: "12D3KooWMockNode".into(),
            version: "0.1.0-test".into(),
            role: NodeRole::Validator,
            validator_address: Some(validator_keys()[0].address()),
            finalized_height: tip.height,
            finalized_hash: tip.hash(),
            finalized_time_ms: tip.timestamp_ms,
            retained_from_height: 0,
            syncing: self.syncing,
            peer_count: self.peers,
        }
    }

    fn check_height(&self, height: u64) -> Result<(), ApiError> {
        let newest = self.blocks.len() as u64 - 1;
        if height > newest {
            return Err(ApiError::HeightNotRetained {
                height,
                oldest: 0,
                newest,
            });
        }
        Ok(())
    }
}

impl Backend for MockNode {
    async fn status(&self) -> Result<NodeStatus, ApiError> {
        Ok(self.check()?.status())
    }

    async fn submit(&self, stx: SignedTransaction) -> Result<TxHash, ApiError> {
        let mut chain = self.check()?;
        let hash = stx.hash();
        if chain.tx_index.contains_key(&hash) || chain.mempool.contains_key(&hash) {
            return Ok(hash);
        }
        stx.check_stateless(CHAIN, &chain.ctx.params)?;
        stx.verify_signature()?;
        let account = chain.account_now(&stx.tx.sender);
        let pending = chain
            .mempool
            .values()
            .filter(|t| t.tx.sender == stx.tx.sender)
            .count() as u64;
        let expected = account.nonce;
        if stx.tx.nonce < expected {
            return Err(ApiError::NonceTooLow {
                expected_nonce: expected,
                got: stx.tx.nonce,
            });
        }
        if stx.tx.nonce > expected + pending + 16 {
            return Err(ApiError::NonceTooHigh {
                expected_nonce: expected,
                got: stx.tx.nonce,
                max_nonce: expected + pending + 16,
            });
        }
        if let Some(other) = chain
            .mempool
            .values()
            .find(|t| t.tx.sender == stx.tx.sender && t.tx.nonce == stx.tx.nonce)
        {
            return Err(ApiError::NonceAlreadyPending {
                nonce: stx.tx.nonce,
                pending_fee: other.tx.fee,
            });
        }
        if account.balance < stx.tx.fee {
            return Err(ApiError::InsufficientBalance {
                balance: account.balance,
                fee: stx.tx.fee,
            });
        }
        if chain.mempool.len() >= chain.mempool_max {
            let lowest = chain.mempool.values().map(|t| t.tx.fee).min().unwrap_or(0);
            return Err(ApiError::MempoolFull {
                fee: stx.tx.fee,
                lowest_fee: lowest,
            });
        }
        chain.mempool.insert(hash, stx);
        Ok(hash)
    }

    async fn transaction(&self, hash: TxHash) -> Result<Option<TxLookup>, ApiError> {
        let chain = self.check()?;
        if let Some(stx) = chain.mempool.get(&hash) {
            return Ok(Some(TxLookup {
                transaction: stx.clone(),
                status: TxStatus::Pending,
            }));
        }
        Ok(chain.tx_index.get(&hash).map(|&(height, index)| TxLookup {
            transaction: chain.blocks[height as usize].txs[index as usize].clone(),
            status: TxStatus::Final { height, index },
        }))
    }

    async fn receipt(&self, hash: TxHash) -> Result<Option<Receipt>, ApiError> {
        let chain = self.check()?;
        Ok(chain
            .tx_index
            .get(&hash)
            .map(|&(height, index)| chain.receipts[height as usize][index as usize].clone()))
    }

    async fn block(&self, at: BlockRef) -> Result<Option<Block>, ApiError> {
        let chain = self.check()?;
        Ok(match at {
            BlockRef::Latest => Some(chain.tip().clone()),
            BlockRef::Height(height) => chain.blocks.get(height as usize).cloned(),
            BlockRef::Hash(hash) => chain.blocks.iter().find(|b| b.hash() == hash).cloned(),
        })
    }

    async fn headers(&self, from: u64, to: u64) -> Result<Vec<BlockHeader>, ApiError> {
        let chain = self.check()?;
        assert!(to - from < 256, "server asked for too many headers at once");
        Ok((from..=to)
            .filter_map(|h| chain.blocks.get(h as usize).map(|b| b.header.clone()))
            .collect())
    }

    async fn finality(&self, height: u64) -> Result<Option<FinalityRecord>, ApiError> {
        let chain = self.check()?;
        Ok(chain.records.get(height as usize).cloned().flatten())
    }

    async fn account(
        &self,
        address: Address,
        height: u64,
        prove: bool,
    ) -> Result<StateRead<Account>, ApiError> {
        let chain = self.check()?;
        chain.check_height(height)?;
        let (bytes, proof) =
            state::prove(&chain.state, height, &StateKey::Account(address).encode())
                .map_err(ApiError::internal)?;
        let value = bytes.map(|b| {
            let mut account = Account::decode(&b).unwrap();
            account.balance += u64::from(chain.lie);
            account
        });
        Ok(StateRead {
            value,
            proof: prove.then_some(proof),
        })
    }

    async fn value(
        &self,
        owner: Address,
        key: Vec<u8>,
        height: u64,
        prove: bool,
    ) -> Result<StateRead<Vec<u8>>, ApiError> {
        let chain = self.check()?;
        chain.check_height(height)?;
        let encoded = StateKey::Value { owner, key }.encode();
        let (value, proof): (Option<Vec<u8>>, StateProof) =
            state::prove(&chain.state, height, &encoded).map_err(ApiError::internal)?;
        Ok(StateRead {
            value,
            proof: prove.then_some(proof),
        })
    }

    async fn keys(
        &self,
        owner: Address,
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ApiError> {
        let chain = self.check()?;
        // Brute force over every key ever written (tests write few).
        let mut keys: Vec<Vec<u8>> = chain
            .blocks
            .iter()
            .flat_map(|b| b.txs.iter())
            .filter(|t| t.tx.sender == owner)
            .filter_map(|t| match &t.tx.op {
                Op::Put { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect();
        keys.sort();
        keys.dedup();
        Ok(keys
            .into_iter()
            .filter(|k| k.starts_with(&prefix))
            .filter(|k| start_after.as_ref().is_none_or(|after| k > after))
            .filter_map(|k| {
                let v = chain.state.value(&owner, &k).unwrap()?;
                Some((k, v))
            })
            .take(limit)
            .collect())
    }

    async fn epoch_status(&self) -> Result<mesh_rpc::types::EpochStatus, ApiError> {
        let chain = self.check()?;
        let validators = chain.validators.validators().to_vec();
        Ok(mesh_rpc::types::EpochStatus {
            epoch: 0,
            first_height: 1,
            last_height: u64::MAX,
            finalized_height: chain.tip().header.height,
            next_validators: validators.clone(),
            projected_validators: validators.clone(),
            candidates: Vec::new(),
            unbonding: Vec::new(),
            validators,
        })
    }

    fn epoch_blocks(&self) -> u64 {
        genesis().params.epoch_blocks
    }

    async fn validators(&self, height: u64) -> Result<EpochValidators, ApiError> {
        let chain = self.check()?;
        chain.check_height(height)?;
        // The mock chain is one epoch long.
        Ok(EpochValidators {
            epoch: 0,
            first_height: 0,
            last_height: u64::MAX,
            set: chain.validators.clone(),
        })
    }

    async fn peers(&self) -> Result<Vec<PeerInfo>, ApiError> {
        let chain = self.check()?;
        Ok((0..chain.peers)
            .map(|i| PeerInfo {
                peer_id: format!("12D3KooWPeer{i}"),
                address: format!("/ip4/127.0.0.1/tcp/{}", 30500 + i),
                inbound: i % 2 == 0,
            })
            .collect())
    }

    async fn mempool(&self) -> Result<MempoolStats, ApiError> {
        let chain = self.check()?;
        Ok(MempoolStats {
            count: chain.mempool.len() as u64,
            bytes: chain.mempool.values().map(|t| t.encoded_len() as u64).sum(),
            max_count: chain.mempool_max as u64,
            max_bytes: 64 << 20,
        })
    }

    fn subscribe_finalized(&self) -> broadcast::Receiver<Arc<FinalizedEvent>> {
        self.finalized.subscribe()
    }

    fn subscribe_dropped(&self) -> Option<broadcast::Receiver<Arc<DroppedTx>>> {
        Some(self.dropped.subscribe())
    }
}

/// A server on a free loopback port over `node`.
pub async fn serve(node: &Arc<MockNode>, config: RpcServerConfig) -> (RpcServerHandle, SocketAddr) {
    let config = RpcServerConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        ..config
    };
    let handle = mesh_rpc::start(config, node.clone()).await.unwrap();
    let local = handle.local_addr();
    (handle, local)
}

pub fn test_config() -> RpcServerConfig {
    RpcServerConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        ready_block_age_max_ms: u64::MAX,
        subscription_send_timeout_ms: 2_000,
        ..RpcServerConfig::default()
    }
}

/// A raw HTTP/1.1 exchange: returns (status, body). For inputs a typed client cannot send.
pub async fn http_raw(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (413) before reading an oversized body; a failed write is fine.
    let _ = stream.write_all(body).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// A JSON-RPC call over raw HTTP; returns the parsed response object.
pub async fn rpc_raw(addr: SocketAddr, body: &str) -> serde_json::Value {
    let (status, text) = http_raw(addr, "POST", "/", body.as_bytes()).await;
    // jsonrpsee answers a body that is not JSON with status 400 and a JSON-RPC error.
    assert!(
        status == 200 || status == 400,
        "status {status}, body {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Calls `method` with `params` (a JSON array text) and returns the response object.
pub async fn call(addr: SocketAddr, method: &str, params: &str) -> serde_json::Value {
    rpc_raw(
        addr,
        &format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{params}}}"#),
    )
    .await
}

/// The error object of a response, asserting there is one with `code`.
pub fn expect_error(response: &serde_json::Value, code: i64) -> serde_json::Value {
    let error = response
        .get("error")
        .unwrap_or_else(|| panic!("expected error {code}, got {response}"));
    assert_eq!(error["code"].as_i64(), Some(code), "{response}");
    error.clone()
}

pub fn hex_of(stx: &SignedTransaction) -> String {
    mesh_ledger::bytes::to_hex(&stx.encode())
}

/// Upgrades `stream` to a WebSocket and checks the server's `101`.
pub async fn websocket_handshake(stream: &mut tokio::net::TcpStream, addr: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let handshake = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
        assert!(head.len() < 4096, "handshake answer too long");
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
}

/// A masked WebSocket text frame (a zero mask key leaves the payload as is).
/// One client frame of any opcode, `fin` or not, masked with a non-zero key.
pub fn ws_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let key = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
    if payload.len() < 126 {
        frame.push(0x80 | payload.len() as u8);
    } else if payload.len() <= usize::from(u16::MAX) {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

pub fn ws_text_frame(payload: &str) -> Vec<u8> {
    let payload = payload.as_bytes();
    let mut frame = vec![0x81u8];
    if payload.len() < 126 {
        frame.push(0x80 | payload.len() as u8);
    } else if payload.len() <= usize::from(u16::MAX) {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// A WebSocket client that sends one request and then reads nothing until told: a subscriber
/// as slow as can be. Its receive buffer is made small so the server's sends back up quickly.
pub struct StalledWs {
    stream: tokio::net::TcpStream,
}

impl StalledWs {
    pub async fn connect(addr: SocketAddr, request: &str) -> StalledWs {
        use tokio::io::AsyncWriteExt;
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        websocket_handshake(&mut stream, addr).await;
        stream.write_all(&ws_text_frame(request)).await.unwrap();
        StalledWs { stream }
    }

    /// Reads whatever arrives until `done` matches the text read so far, or `timeout`.
    pub async fn read_until(&mut self, done: impl Fn(&str) -> bool, timeout: Duration) -> String {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await;
            match read {
                Ok(Ok(n)) if n > 0 => {
                    out.extend_from_slice(&buf[..n]);
                    if done(&String::from_utf8_lossy(&out)) {
                        break;
                    }
                }
                _ => break,
            }
        }
        String::from_utf8_lossy(&out).to_string()
    }
}
