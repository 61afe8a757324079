//! Fault injection on a running testnet: `pause`/`resume` (SIGSTOP/SIGCONT) and
//! `partition`/`heal` through the admin endpoint the nodes serve on their metrics listener when
//! the testnet tool started them (`meshd run --admin`).
//!
//! The admin interface: `POST /admin/partition` with a body of libp2p peer ids (base58, one per
//! line) makes the node drop and refuse those peers; `POST /admin/heal` (empty body) lifts every
//! block set that way. Both answer 200 with a short text body; a node started without `--admin`
//! answers 404.
//!
//! In a `--netns` testnet (`DIR/netns.json` exists), `partition`/`heal` instead install and
//! delete `unreachable` routes in each node's network namespace (see `netns`): a cut in the
//! network itself, with no help from the nodes. The admin endpoint remains the way on loopback.
//!
//! The current partition is recorded in `DIR/partition.json` (`{"groups": [[0, 1], [2, 3]]}`)
//! so `status` can show it; `heal` and `up` remove it, `restart --node I` re-applies it to the
//! restarted node.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::netns::{self, NetnsFile};
use crate::process;
use crate::state::{NodeEntry, TestnetFile};
use crate::TestnetError;

/// Name of the partition record inside the testnet directory.
pub const PARTITION_FILE: &str = "partition.json";
/// Connect / read / write timeout of one admin request (a paused node never answers).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest admin answer read.
const ANSWER_BYTES_MAX: u64 = 64 << 10;

/// The contents of `DIR/partition.json`: the groups of the current partition, node indexes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// Each group's node indexes (into testnet.json's `nodes`).
    pub groups: Vec<Vec<usize>>,
}

impl Partition {
    /// Path of the record inside `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(PARTITION_FILE)
    }

    /// The recorded partition, if any (a malformed record counts as none).
    pub fn load(dir: &Path) -> Option<Partition> {
        let text = std::fs::read_to_string(Partition::path(dir)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn save(&self, dir: &Path) -> Result<(), TestnetError> {
        let path = Partition::path(dir);
        let json = serde_json::to_string(self).map_err(|err| TestnetError::Malformed {
            path: path.display().to_string(),
            reason: err.to_string(),
        })?;
        std::fs::write(&path, format!("{json}\n")).map_err(|source| TestnetError::io(&path, source))
    }

    /// Removes the record (absent is fine).
    pub(crate) fn clear(dir: &Path) -> Result<(), TestnetError> {
        let path = Partition::path(dir);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(TestnetError::io(&path, source)),
        }
    }

    /// `0,1 / 2,3`.
    pub fn describe(&self) -> String {
        self.groups
            .iter()
            .map(|group| {
                group
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect::<Vec<_>>()
            .join(" / ")
    }

    /// The node indexes outside `index`'s group, when `index` is in a group.
    fn outside(&self, index: usize, count: usize) -> Option<Vec<usize>> {
        let group = self.groups.iter().find(|group| group.contains(&index))?;
        Some((0..count).filter(|i| !group.contains(i)).collect())
    }
}

/// Parses `--groups 0,1/2,3`: groups separated by `/`, node indexes by `,`; every index below
/// `count`, none twice, no empty group.
pub fn parse_groups(text: &str, count: usize) -> Result<Partition, TestnetError> {
    let usage = |reason: String| {
        TestnetError::Usage(format!(
            "--groups {text:?}: {reason} (expected node indexes like 0,1/2,3)"
        ))
    };
    let mut groups = Vec::new();
    let mut seen = vec![false; count];
    for part in text.split('/') {
        let mut group = Vec::new();
        for item in part.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(usage("empty group or node index".into()));
            }
            let index: usize = item
                .parse()
                .map_err(|_| usage(format!("{item:?} is not a node index")))?;
            let Some(slot) = seen.get_mut(index) else {
                return Err(usage(format!(
                    "there is no node {index}: the testnet has {count} nodes (0..{count})"
                )));
            };
            if *slot {
                return Err(usage(format!("node {index} is named twice")));
            }
            *slot = true;
            group.push(index);
        }
        groups.push(group);
    }
    if groups.len() < 2 && seen.iter().all(|named| *named) {
        return Err(usage("a single group of every node cuts nothing".into()));
    }
    Ok(Partition { groups })
}

/// The libp2p peer id at the end of a node's `p2p` address (`…/p2p/<peer id>`).
pub fn peer_id_of(node: &NodeEntry) -> Result<&str, TestnetError> {
    node.p2p
        .rsplit_once("/p2p/")
        .map(|(_, id)| id)
        .filter(|id| !id.is_empty() && !id.contains('/'))
        .ok_or_else(|| TestnetError::Malformed {
            path: crate::state::TESTNET_FILE.into(),
            reason: format!(
                "{}'s p2p address {:?} has no /p2p/<peer id>",
                node.name, node.p2p
            ),
        })
}

/// `pause --node I`: SIGSTOP.
pub(crate) fn pause(dir: &Path, index: usize) -> Result<(), TestnetError> {
    let file = TestnetFile::load(dir)?;
    let node = file.node(index)?;
    running(node)?;
    if !process::signal(node.pid, "STOP") {
        return Err(TestnetError::NotRunning {
            name: node.name.clone(),
        });
    }
    println!(
        "paused {} (pid {}, SIGSTOP); `meshd testnet resume --node {index}` continues it",
        node.name, node.pid
    );
    Ok(())
}

/// `resume --node I`: SIGCONT.
pub(crate) fn resume(dir: &Path, index: usize) -> Result<(), TestnetError> {
    let file = TestnetFile::load(dir)?;
    let node = file.node(index)?;
    running(node)?;
    if !process::signal(node.pid, "CONT") {
        return Err(TestnetError::NotRunning {
            name: node.name.clone(),
        });
    }
    println!("resumed {} (pid {}, SIGCONT)", node.name, node.pid);
    Ok(())
}

fn running(node: &NodeEntry) -> Result<(), TestnetError> {
    if process::node_alive(node) {
        Ok(())
    } else {
        Err(TestnetError::NotRunning {
            name: node.name.clone(),
        })
    }
}

/// `partition --groups …`: heals every running node first (so a new partition replaces the
/// old), then sends each node in a group the peer ids of every node outside its group, and
/// records the partition.
pub(crate) fn partition(dir: &Path, groups: &str) -> Result<(), TestnetError> {
    let file = TestnetFile::load(dir)?;
    let partition = parse_groups(groups, file.nodes.len())?;
    if let Some(namespaces) = NetnsFile::load(dir)? {
        return partition_routes(dir, &namespaces, &partition);
    }
    let ids: Vec<&str> = file
        .nodes
        .iter()
        .map(peer_id_of)
        .collect::<Result<_, _>>()?;
    let mut failures = Vec::new();
    for node in file.nodes.iter().filter(|node| process::node_alive(node)) {
        if let Err(err) = admin_post(node, "/admin/heal", "") {
            failures.push(err);
        }
    }
    for (index, node) in file.nodes.iter().enumerate() {
        let Some(outside) = partition.outside(index, file.nodes.len()) else {
            continue;
        };
        if !process::node_alive(node) {
            failures.push(format!("{} is not running", node.name));
            continue;
        }
        let body: String = outside.iter().map(|&i| format!("{}\n", ids[i])).collect();
        if let Err(err) = admin_post(node, "/admin/partition", &body) {
            failures.push(err);
        }
    }
    partition.save(dir)?;
    if !failures.is_empty() {
        return Err(TestnetError::Admin(failures.join("; ")));
    }
    println!(
        "partitioned {}: {}; `meshd testnet heal` reconnects",
        dir.display(),
        partition.describe()
    );
    Ok(())
}

/// `partition` in a `--netns` testnet: lifts the routes of any earlier partition, then cuts
/// each node off from the nodes outside its group with routes in its namespace (stopped nodes
/// included: the namespace is there, and the cut holds when they start).
fn partition_routes(
    dir: &Path,
    namespaces: &NetnsFile,
    partition: &Partition,
) -> Result<(), TestnetError> {
    let mut routes = 0usize;
    for index in 0..namespaces.nodes.len() {
        netns::heal_node(namespaces, index)?;
        routes += netns::cut_node(namespaces, partition, index)?;
    }
    partition.save(dir)?;
    println!(
        "partitioned {}: {} ({routes} unreachable routes in the nodes' network namespaces); \
         `meshd testnet heal` reconnects",
        dir.display(),
        partition.describe()
    );
    Ok(())
}

/// `heal`: `POST /admin/heal` to every running node; forgets the recorded partition.
pub(crate) fn heal(dir: &Path) -> Result<(), TestnetError> {
    let file = TestnetFile::load(dir)?;
    if let Some(namespaces) = NetnsFile::load(dir)? {
        for index in 0..namespaces.nodes.len() {
            netns::heal_node(&namespaces, index)?;
        }
        Partition::clear(dir)?;
        println!(
            "healed {}: every partition route is deleted; the nodes reconnect by themselves",
            dir.display()
        );
        return Ok(());
    }
    let mut failures = Vec::new();
    let mut healed = 0usize;
    for node in file.nodes.iter().filter(|node| process::node_alive(node)) {
        match admin_post(node, "/admin/heal", "") {
            Ok(_) => healed += 1,
            Err(err) => failures.push(err),
        }
    }
    if !failures.is_empty() {
        return Err(TestnetError::Admin(failures.join("; ")));
    }
    Partition::clear(dir)?;
    println!("healed {healed} node(s): every admin block is lifted");
    Ok(())
}

/// After `restart --node I`: the recorded partition again on that node (a restarted node
/// forgets it).
pub(crate) fn reapply(dir: &Path, file: &TestnetFile, index: usize) -> Result<(), TestnetError> {
    let Some(partition) = Partition::load(dir) else {
        return Ok(());
    };
    let node = file.node(index)?;
    if let Some(namespaces) = NetnsFile::load(dir)? {
        // The namespace outlives the node, but may have been re-created empty.
        netns::cut_node(&namespaces, &partition, index)?;
        println!(
            "partition {} still holds for {} (routes in {})",
            partition.describe(),
            node.name,
            namespaces.namespace(index)?
        );
        return Ok(());
    }
    let Some(outside) = partition.outside(index, file.nodes.len()) else {
        return Ok(());
    };
    let mut body = String::new();
    for i in outside {
        body.push_str(peer_id_of(file.node(i)?)?);
        body.push('\n');
    }
    admin_post(node, "/admin/partition", &body).map_err(TestnetError::Admin)?;
    println!(
        "re-applied the partition {} to {}",
        partition.describe(),
        node.name
    );
    Ok(())
}

/// One `POST <path>` to the node's metrics listener; the answer's body on 200, else a message.
fn admin_post(node: &NodeEntry, path: &str, body: &str) -> Result<String, String> {
    let (status, answer) = http_post(&node.metrics, path, body)
        .map_err(|err| format!("{}: POST http://{}{path}: {err}", node.name, node.metrics))?;
    match status {
        200 => Ok(answer),
        404 => Err(format!(
            "{}: POST http://{}{path} answered 404: the node has no admin endpoint (it must run \
             `meshd run --admin`, as `meshd testnet up` starts it; restart it with \
             `meshd testnet restart --node I`)",
            node.name, node.metrics
        )),
        other => Err(format!(
            "{}: POST http://{}{path} answered {other}: {}",
            node.name,
            node.metrics,
            answer.trim()
        )),
    }
}

/// A plain HTTP/1.0 POST (so the answer is never chunked); the status code and body.
pub(crate) fn http_post(addr: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let socket: SocketAddr = addr.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to connect to")
    })?;
    let mut stream = TcpStream::connect_timeout(&socket, ADMIN_TIMEOUT)?;
    stream.set_read_timeout(Some(ADMIN_TIMEOUT))?;
    stream.set_write_timeout(Some(ADMIN_TIMEOUT))?;
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.take(ANSWER_BYTES_MAX).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let malformed = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let (head, answer) = text.split_once("\r\n\r\n").ok_or_else(malformed)?;
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(malformed)?;
    Ok((status, answer.to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn groups_parse_and_are_checked() {
        let p = parse_groups("0,1/2,3", 4).unwrap();
        assert_eq!(p.groups, vec![vec![0, 1], vec![2, 3]]);
        assert_eq!(p.describe(), "0,1 / 2,3");
        assert_eq!(p.outside(0, 4), Some(vec![2, 3]));
        assert_eq!(p.outside(3, 5), Some(vec![0, 1, 4]));
        assert_eq!(p.outside(4, 5), None, "unnamed nodes are left alone");
        assert_eq!(
            parse_groups("0/1", 3).unwrap().groups,
            vec![vec![0], vec![1]]
        );
        assert_eq!(parse_groups("2", 3).unwrap().groups, vec![vec![2]]);
        for bad in ["0,1/1,2", "0,,1/2", "0,1/", "0/4", "a/1", "0,1,2"] {
            assert!(parse_groups(bad, 3).is_err(), "{bad}");
        }
    }

    #[test]
    fn peer_ids_come_from_the_p2p_address() {
        let mut node = NodeEntry {
            name: "node-0".into(),
            pid: 0,
            home: PathBuf::new(),
            rpc: String::new(),
            p2p: "/ip4/127.0.0.1/tcp/2/p2p/12D3KooWabc".into(),
            metrics: String::new(),
            validator: true,
        };
        assert_eq!(peer_id_of(&node).unwrap(), "12D3KooWabc");
        node.p2p = "/ip4/127.0.0.1/tcp/2".into();
        assert!(peer_id_of(&node).is_err());
    }

    #[test]
    fn partition_record_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Partition::load(dir.path()), None);
        let p = parse_groups("0,1/2,3", 4).unwrap();
        p.save(dir.path()).unwrap();
        assert_eq!(Partition::load(dir.path()), Some(p));
        Partition::clear(dir.path()).unwrap();
        Partition::clear(dir.path()).unwrap();
        assert_eq!(Partition::load(dir.path()), None);
    }

    #[test]
    fn admin_posts_send_the_body_and_read_the_status() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for reply in [
                "HTTP/1.1 200 OK\r\n\r\nblocked 2 peers\n",
                "HTTP/1.1 404 Not Found\r\n\r\n",
            ] {
                let (mut stream, _) = listener.accept().unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let mut request = Vec::new();
                let mut chunk = [0u8; 1024];
                // Read until the declared body has arrived.
                loop {
                    let n = stream.read(&mut chunk).unwrap_or(0);
                    request.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if n == 0 || text.ends_with("B\n") || text.ends_with("\r\n\r\n") {
                        break;
                    }
                }
                seen.push(String::from_utf8(request).unwrap());
                stream.write_all(reply.as_bytes()).unwrap();
            }
            seen
        });
        let node = NodeEntry {
            name: "node-0".into(),
            pid: 0,
            home: PathBuf::new(),
            rpc: String::new(),
            p2p: String::new(),
            metrics: addr,
            validator: true,
        };
        assert_eq!(
            admin_post(&node, "/admin/partition", "A\nB\n").unwrap(),
            "blocked 2 peers\n"
        );
        let err = admin_post(&node, "/admin/heal", "").unwrap_err();
        assert!(err.contains("404") && err.contains("--admin"), "{err}");
        let seen = server.join().unwrap();
        assert!(seen[0].starts_with("POST /admin/partition HTTP/1.0\r\n"));
        assert!(seen[0].contains("Content-Length: 4\r\n"));
        assert!(seen[0].ends_with("\r\n\r\nA\nB\n"));
        assert!(seen[1].starts_with("POST /admin/heal HTTP/1.0\r\n"));
    }
}
