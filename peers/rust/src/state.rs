//! What the node knows about itself, rendered as `/status` with the field names of
//! docs/contracts.md section 2. The swarm task writes it, the HTTP thread reads it.
//!
//! Fields the contract has but this node cannot know are null rather than invented:
//! `reservations[].expires_at` (rust-libp2p's relay client does not expose the expiry it
//! was granted; it renews on its own), circuit `bytes` on a relay (not counted by
//! rust-libp2p). `chain` is the chain service's snapshot (chain/service.rs).

use std::collections::{BTreeMap, HashMap};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};
use serde_json::{json, Value};

use crate::events::{monotonic, round, EventLog};

pub struct Conn {
    pub peer: PeerId,
    pub remote_addr: Multiaddr,
    pub relayed: bool,
    pub outbound: bool,
    pub opened_at: f64,
    pub relay: Option<PeerId>,
    pub rtts: Vec<f64>,
    pub pings_ok: u64,
    pub ping_failures: u64,
    /// What the peer's identify said it sees us as, on this connection.
    pub observed_addr: Option<Multiaddr>,
}

impl Conn {
    pub fn kind(&self) -> &'static str {
        if self.relayed {
            "relayed"
        } else {
            "direct"
        }
    }

    fn to_json(&self) -> Value {
        let median = if self.rtts.is_empty() {
            None
        } else {
            let mut v = self.rtts.clone();
            v.sort_by(|a, b| a.total_cmp(b));
            Some(round(v[v.len() / 2], 6))
        };
        json!({
            "peer": self.peer.to_string(),
            "remote_addr": self.remote_addr.to_string(),
            "kind": self.kind(),
            "direction": if self.outbound { "outbound" } else { "inbound" },
            "opened_at": round(self.opened_at, 4),
            "relay": self.relay.map(|p| p.to_string()),
            "rtt_s": self.rtts.last().map(|r| round(*r, 6)),
            "rtt_median_s": median,
            "pings_ok": self.pings_ok,
            "ping_failures": self.ping_failures,
            "observed_addr": self.observed_addr.as_ref().map(|a| a.to_string()),
        })
    }
}

pub struct Reservation {
    pub relay_addrs: Vec<Multiaddr>,
    pub addrs: Vec<Multiaddr>,
    pub accepted_at: Option<f64>,
}

pub struct Candidate {
    pub peer: PeerId,
    pub addr: Multiaddr,
    pub source: &'static str,
}

pub struct Grant {
    pub expires_at: f64,
    pub accepted_at: f64,
}

pub struct RelayedCircuit {
    pub id: u64,
    pub src: PeerId,
    pub dst: PeerId,
    pub opened_at: f64,
}

pub struct DcutrRow {
    pub peer: PeerId,
    pub role: &'static str,
    pub attempt: u32,
    pub started: f64,
    pub outcome: &'static str,
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub duration_s: Option<f64>,
    pub at: f64,
    pub addr: Option<Multiaddr>,
    /// The direct connection a success reported, until its address is known.
    pub direct: Option<ConnectionId>,
}

impl DcutrRow {
    fn to_json(&self) -> Value {
        json!({
            "peer": self.peer.to_string(),
            "outcome": self.outcome,
            "reason": self.reason,
            "duration_s": self.duration_s.map(|d| round(d, 4)),
            "at": round(self.at, 4),
            "role": self.role,
            "attempt": self.attempt,
            "final": self.outcome == "failed",
            "rtt_s": Value::Null,
            "addr": self.addr.as_ref().map(|a| a.to_string()),
            "detail": self.detail,
        })
    }
}

pub struct State {
    pub peer_id: PeerId,
    pub name: String,
    pub role: String,
    pub started_at: f64,
    pub ready: bool,
    pub relay_server: bool,
    pub listen_addrs: Vec<Multiaddr>,
    pub reservations: HashMap<PeerId, Reservation>,
    pub candidates: Vec<Candidate>,
    pub conns: HashMap<ConnectionId, Conn>,
    pub grants: HashMap<PeerId, Grant>,
    pub circuits: Vec<RelayedCircuit>,
    pub next_circuit_id: u64,
    pub dcutr: Vec<DcutrRow>,
    pub events: EventLog,
    /// `chain` of /status, kept current by the chain service
    pub chain: Value,
    /// protocol -> rejected messages (`rejected` of /status)
    pub rejected: BTreeMap<&'static str, u64>,
    /// known peers and the addresses held for each (`peers_known` of /status, src/px.rs)
    pub px: crate::px::Book,
}

/// The relay's peer id in a relayed address (`.../p2p/<relay>/p2p-circuit/...`).
pub fn relay_of(addr: &Multiaddr) -> Option<PeerId> {
    let mut last = None;
    for p in addr.iter() {
        match p {
            Protocol::P2p(id) => last = Some(id),
            Protocol::P2pCircuit => return last,
            _ => {}
        }
    }
    None
}

pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

fn strs(addrs: &[Multiaddr]) -> Vec<String> {
    addrs.iter().map(|a| a.to_string()).collect()
}

impl State {
    pub fn new(peer_id: PeerId, name: &str, role: &str, relay_server: bool) -> Self {
        State {
            peer_id,
            name: name.into(),
            role: role.into(),
            started_at: monotonic(),
            ready: false,
            relay_server,
            listen_addrs: Vec::new(),
            reservations: HashMap::new(),
            candidates: Vec::new(),
            conns: HashMap::new(),
            grants: HashMap::new(),
            circuits: Vec::new(),
            next_circuit_id: 0,
            dcutr: Vec::new(),
            events: EventLog::new(name),
            chain: Value::Null,
            rejected: ["hop", "stop", "dcutr", "sync", "consensus"]
                .into_iter()
                .map(|p| (p, 0))
                .collect(),
            px: crate::px::Book::default(),
        }
    }

    /// Count and announce one rejected protocol message (runtime.py `reject`).
    pub fn reject(&mut self, protocol: &'static str, reason: &str) {
        *self.rejected.entry(protocol).or_insert(0) += 1;
        self.events.emit("message_rejected", json!({"protocol": protocol, "reason": reason}));
    }

    pub fn connected(&self, peer: &PeerId, relayed: Option<bool>) -> bool {
        self.conns.values().any(|c| c.peer == *peer && relayed.is_none_or(|r| c.relayed == r))
    }

    fn advertised(&self) -> Vec<String> {
        let mut out = strs(&self.listen_addrs);
        for r in self.reservations.values().filter(|r| r.accepted_at.is_some()) {
            out.extend(strs(&r.addrs));
        }
        out
    }

    fn circuits_json(&self) -> Vec<Value> {
        self.circuits
            .iter()
            .map(|c| {
                json!({"id": c.id, "src": c.src.to_string(), "dst": c.dst.to_string(),
                       "bytes": Value::Null, "opened_at": round(c.opened_at, 4)})
            })
            .collect()
    }

    pub fn status(&self) -> Value {
        let now = monotonic();
        let mut reservations: Vec<Value> = self
            .reservations
            .iter()
            .filter_map(|(relay, r)| {
                let at = r.accepted_at?;
                Some(json!({"relay": relay.to_string(), "relay_addrs": strs(&r.relay_addrs),
                            "addrs": strs(&r.addrs), "expires_at": Value::Null,
                            "accepted_at": round(at, 4)}))
            })
            .collect();
        reservations.sort_by_key(|r| r["accepted_at"].as_f64().map(|f| (f * 1e4) as i64));
        let mut conns: Vec<&Conn> = self.conns.values().collect();
        conns.sort_by(|a, b| a.opened_at.total_cmp(&b.opened_at));
        let candidates: Vec<Value> = self
            .candidates
            .iter()
            .map(|c| {
                json!({"peer": c.peer.to_string(), "addr": c.addr.to_string(),
                            "source": c.source})
            })
            .collect();
        let mut status = json!({
            "implementation": "rust-libp2p 0.56 (peers/rust)",
            "peer_id": self.peer_id.to_string(),
            "name": self.name,
            "role": self.role,
            "started_at": round(self.started_at, 4),
            "uptime_s": round(now - self.started_at, 3),
            "ready": self.ready,
            "listen_addrs": strs(&self.listen_addrs),
            "advertised_addrs": self.advertised(),
            "reservations": reservations,
            "relay_candidates": candidates,
            "connections": conns.iter().map(|c| c.to_json()).collect::<Vec<_>>(),
            "circuits": self.circuits_json(),
            "dcutr": self.dcutr.iter().map(|d| d.to_json()).collect::<Vec<_>>(),
            "chain": self.chain.clone(),
            "rejected": self.rejected,
            "peers_known": self.px.known_json(),
        });
        if self.relay_server {
            let mut granted: Vec<Value> = self
                .grants
                .iter()
                .map(|(peer, g)| {
                    json!({"peer": peer.to_string(), "expires_at": round(g.expires_at, 3),
                           "accepted_at": round(g.accepted_at, 4)})
                })
                .collect();
            granted.sort_by_key(|g| g["accepted_at"].as_f64().map(|f| (f * 1e4) as i64));
            status["relay_server"] = json!({"granted": granted, "circuits": self.circuits_json()});
        }
        status
    }
}
