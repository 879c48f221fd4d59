//! Peer exchange, `/sentrynet/px/1.0.0`, wire-compatible with node/discovery.py.
//!
//! The asker opens a stream and writes nothing; the responder writes one JSON document
//! `{"peers": [{"peer": "<id>", "addrs": ["<multiaddr>", ...]}]}` and closes: its
//! connected peers (the asker and peers on relayed connections included, as ours does),
//! at most 64, each with the addresses this node holds for it (identify's listen
//! addresses, circuit addresses included; what px taught it; the address it dialled),
//! in the order it learnt them. Peers it holds no address for are left out.
//!
//! The asker (every 5 s, first 0.5 s after start, every connected peer) reads at most
//! 256 KiB; a reply that does not parse (an oversized one is cut at 256 KiB, as ours
//! does) counts as `rejected.px` "malformed". Entries with a bad peer id or address are
//! skipped; at most 64 entries and 16 addresses each are taken. Learnt peers go into the
//! known-peers table (`peers_known` of /status), which node/discovery.rs dials from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use libp2p_stream::Control;
use serde_json::{json, Value};

use crate::state::{is_relayed, State};

pub const PROTOCOL: &str = "/sentrynet/px/1.0.0";
pub const MAX_BYTES: usize = 256 * 1024;
pub const MAX_PEERS: usize = 64;
/// Addresses taken from one entry of a reply.
pub const MAX_ENTRY_ADDRS: usize = 16;
/// Addresses kept per peer (ours keeps a TTL instead; the oldest go first here).
const MAX_BOOK_ADDRS: usize = 32;
pub const INTERVAL: Duration = Duration::from_secs(5);
const FIRST: Duration = Duration::from_millis(500);
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
pub const BACKOFF_MIN_S: f64 = 0.5;
pub const BACKOFF_MAX_S: f64 = 10.0;

fn protocol() -> StreamProtocol {
    StreamProtocol::new(PROTOCOL)
}

/// A peer learnt from persistent_peers or peer exchange (`peers_known[]`).
pub struct Known {
    pub peer: PeerId,
    /// `persistent` or `px:<peer>`
    pub source: String,
    pub next_dial: f64,
    pub backoff: f64,
    pub failures: u64,
    pub last_error: String,
}

impl Known {
    pub fn new(peer: PeerId, source: String) -> Self {
        Known {
            peer,
            source,
            next_dial: 0.0,
            backoff: BACKOFF_MIN_S,
            failures: 0,
            last_error: "".into(),
        }
    }
}

/// Known peers and the addresses held for every peer (our node's peer store).
#[derive(Default)]
pub struct Book {
    pub known: Vec<Known>,
    pub addrs: HashMap<PeerId, Vec<Multiaddr>>,
}

/// As kept: a direct address without its trailing `/p2p/<peer>` (ours strips it too), a
/// circuit address ending in `/p2p/<peer>` (rust-libp2p's own circuit listen addresses
/// come without it).
fn normalize(peer: PeerId, addr: &Multiaddr) -> Multiaddr {
    let ends_with_peer = matches!(addr.iter().last(), Some(Protocol::P2p(id)) if id == peer);
    if is_relayed(addr) {
        if ends_with_peer {
            addr.clone()
        } else {
            addr.clone().with(Protocol::P2p(peer))
        }
    } else if ends_with_peer {
        let mut a = addr.clone();
        a.pop();
        a
    } else {
        addr.clone()
    }
}

impl Book {
    pub fn get(&self, peer: &PeerId) -> Option<&Known> {
        self.known.iter().find(|k| k.peer == *peer)
    }

    pub fn get_mut(&mut self, peer: &PeerId) -> Option<&mut Known> {
        self.known.iter_mut().find(|k| k.peer == *peer)
    }

    /// Add a known peer unless it is known already; true when it is new.
    pub fn insert(&mut self, peer: PeerId, source: String) -> bool {
        if self.get(&peer).is_some() {
            return false;
        }
        self.known.push(Known::new(peer, source));
        true
    }

    pub fn add_addrs<'a>(&mut self, peer: PeerId, addrs: impl IntoIterator<Item = &'a Multiaddr>) {
        let held = self.addrs.entry(peer).or_default();
        for a in addrs {
            let a = normalize(peer, a);
            if !held.contains(&a) {
                held.push(a);
            }
        }
        if held.len() > MAX_BOOK_ADDRS {
            held.drain(..held.len() - MAX_BOOK_ADDRS);
        }
    }

    pub fn addrs_of(&self, peer: &PeerId) -> &[Multiaddr] {
        self.addrs.get(peer).map_or(&[], Vec::as_slice)
    }

    pub fn known_json(&self) -> Vec<Value> {
        self.known
            .iter()
            .map(|k| {
                let addrs: Vec<String> =
                    self.addrs_of(&k.peer).iter().map(|a| a.to_string()).collect();
                json!({"peer": k.peer.to_string(), "source": k.source, "addrs": addrs,
                       "failures": k.failures, "last_error": k.last_error})
            })
            .collect()
    }

    /// Take in one reply from `from`; Err when it is malformed (not a JSON object with a
    /// `peers` list). Returns the peers new to the table.
    pub fn learn(&mut self, me: PeerId, from: PeerId, reply: &[u8]) -> Result<Vec<PeerId>, String> {
        let reply = &reply[..reply.len().min(MAX_BYTES)];
        let doc: Value = serde_json::from_slice(reply).map_err(|e| e.to_string())?;
        let Some(entries) = doc.get("peers").and_then(Value::as_array) else {
            return Err("no 'peers' list".into());
        };
        let mut new = Vec::new();
        for e in entries.iter().take(MAX_PEERS) {
            let Some((peer, addrs)) = entry(e) else { continue };
            if peer == me {
                continue;
            }
            self.add_addrs(peer, &addrs);
            if self.insert(peer, format!("px:{from}")) {
                new.push(peer);
            }
        }
        Ok(new)
    }
}

/// One reply entry; None (skipped) when its peer id or any address does not parse.
fn entry(e: &Value) -> Option<(PeerId, Vec<Multiaddr>)> {
    let peer: PeerId = e.get("peer")?.as_str()?.parse().ok()?;
    let mut addrs = Vec::new();
    for a in e.get("addrs")?.as_array()? {
        addrs.push(a.as_str()?.parse::<Multiaddr>().ok()?);
    }
    addrs.truncate(MAX_ENTRY_ADDRS);
    Some((peer, addrs))
}

/// Connected peers, first connected first (each once).
pub fn connected_peers(st: &State) -> Vec<PeerId> {
    let mut conns: Vec<_> = st.conns.values().collect();
    conns.sort_by(|a, b| a.opened_at.total_cmp(&b.opened_at));
    let mut out: Vec<PeerId> = Vec::new();
    for c in conns {
        if !out.contains(&c.peer) {
            out.push(c.peer);
        }
    }
    out
}

/// The reply: connected peers with their addresses, at most 64 and 256 KiB.
pub fn reply(st: &State) -> Vec<u8> {
    let mut peers: Vec<Value> = connected_peers(st)
        .into_iter()
        .take(MAX_PEERS)
        .filter_map(|p| {
            let addrs: Vec<String> = st.px.addrs_of(&p).iter().map(|a| a.to_string()).collect();
            (!addrs.is_empty()).then(|| json!({"peer": p.to_string(), "addrs": addrs}))
        })
        .collect();
    loop {
        let body = serde_json::to_vec(&json!({ "peers": peers })).expect("json");
        if body.len() <= MAX_BYTES || peers.is_empty() {
            return body;
        }
        peers.pop();
    }
}

/// Answer every inbound px stream (when p2p.discovery).
pub async fn serve(mut control: Control, state: Arc<Mutex<State>>) {
    let Ok(mut incoming) = control.accept(protocol()) else { return };
    while let Some((_peer, mut stream)) = incoming.next().await {
        let body = reply(&state.lock().expect("state lock"));
        tokio::spawn(async move {
            let write = async {
                stream.write_all(&body).await?;
                stream.close().await
            };
            let _ = tokio::time::timeout(ASK_TIMEOUT, write).await;
        });
    }
}

/// One peer's reply, None when it cannot be had (no px, reset, timeout): not counted.
async fn ask(mut control: Control, peer: PeerId) -> Option<Vec<u8>> {
    let read = async {
        let stream = control.open_stream(peer, protocol()).await.ok()?;
        let mut buf = Vec::new();
        stream.take(MAX_BYTES as u64 + 1).read_to_end(&mut buf).await.ok()?;
        Some(buf)
    };
    tokio::time::timeout(ASK_TIMEOUT, read).await.ok().flatten()
}

/// Ask every connected peer, then again every 5 s (when p2p.discovery).
pub async fn ask_loop(control: Control, state: Arc<Mutex<State>>) {
    tokio::time::sleep(FIRST).await;
    loop {
        let peers = connected_peers(&state.lock().expect("state lock"));
        let replies = join_all(peers.iter().map(|p| ask(control.clone(), *p))).await;
        {
            let mut st = state.lock().expect("state lock");
            let me = st.peer_id;
            for (from, reply) in peers.into_iter().zip(replies) {
                let Some(reply) = reply else { continue };
                match st.px.learn(me, from, &reply) {
                    Err(_) => st.reject("px", "malformed"),
                    Ok(new) => {
                        for p in new {
                            let addrs: Vec<String> =
                                st.px.addrs_of(&p).iter().map(|a| a.to_string()).collect();
                            println!("learnt peer {p} from {from}: {}", addrs.join(", "));
                        }
                    }
                }
            }
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid() -> PeerId {
        PeerId::random()
    }

    #[test]
    fn learn_takes_entries_strips_direct_suffix_and_keeps_circuits() {
        let (me, from, a, relay) = (pid(), pid(), pid(), pid());
        let reply = json!({"peers": [
            {"peer": a.to_string(), "addrs": [
                format!("/ip4/10.0.0.2/tcp/4001/p2p/{a}"),
                format!("/ip4/1.2.3.4/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{a}")]},
            {"peer": me.to_string(), "addrs": ["/ip4/10.0.0.9/tcp/1"]},
            {"peer": "not-a-peer", "addrs": []},
            {"peer": pid().to_string(), "addrs": ["nonsense"]},
        ]});
        let mut book = Book::default();
        let new = book.learn(me, from, reply.to_string().as_bytes()).unwrap();
        assert_eq!(new, vec![a]);
        assert_eq!(book.known[0].source, format!("px:{from}"));
        let held: Vec<String> = book.addrs_of(&a).iter().map(|x| x.to_string()).collect();
        assert_eq!(
            held,
            vec![
                "/ip4/10.0.0.2/tcp/4001".to_string(),
                format!("/ip4/1.2.3.4/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{a}")
            ]
        );
        assert!(book.get(&me).is_none());
    }

    #[test]
    fn malformed_replies_are_errors() {
        let mut book = Book::default();
        for bad in [&b"not json"[..], b"[]", b"{\"peers\": 3}", b"{}", b""] {
            assert!(book.learn(pid(), pid(), bad).is_err(), "{bad:?}");
        }
        let mut big = br#"{"peers": ["#.to_vec();
        big.resize(MAX_BYTES + 10, b' ');
        big.extend(b"]}");
        assert!(book.learn(pid(), pid(), &big).is_err(), "cut at 256 KiB");
    }

    #[test]
    fn circuit_addresses_get_the_peer_appended() {
        let (a, relay) = (pid(), pid());
        let c: Multiaddr = format!("/ip4/1.2.3.4/tcp/1/p2p/{relay}/p2p-circuit").parse().unwrap();
        assert_eq!(normalize(a, &c).to_string(), format!("{c}/p2p/{a}"));
    }
}
