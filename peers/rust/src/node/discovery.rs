//! Dialling the peers peer exchange taught us (src/px.rs), as node/discovery.py does:
//! while fewer than `p2p.max_connections` peers are connected or being dialled, known
//! peers (fewest failures first, each after its backoff: 0.5 s doubling to 30 s) are
//! dialled at their direct addresses first; when that fails, or has not answered in 3 s
//! (node/dialing.py DIRECT_TIMEOUT_S), at their `/p2p-circuit` addresses, which
//! rust-libp2p dials through its relay client transport. A connection that a peer closes
//! within 10 s counts as a failure too (it may be over its own max_connections).
//! Persistent peers are kept by `dial_where_due` (node.rs), not here.
//! Not done (ours does): closing the newest inbound peers when over max_connections.

use std::collections::{HashMap, HashSet};

use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::ConnectionId;
use libp2p::{identify, Multiaddr, PeerId};

use super::Node;
use crate::events::monotonic;
use crate::px::{BACKOFF_MAX_S, BACKOFF_MIN_S};
use crate::state::{is_relayed, Conn};

const DIRECT_TIMEOUT_S: f64 = 3.0;
const HUNG_UP_S: f64 = 10.0;
const ERROR_CHARS: usize = 300;

/// One px dial in flight.
pub(super) struct Dial {
    peer: PeerId,
    circuit: bool,
    started: f64,
    /// why the direct dial failed, for a circuit dial that followed it
    prior: Option<String>,
}

#[derive(Default)]
pub(super) struct Dials(HashMap<ConnectionId, Dial>);

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        out.push_str(": ");
        out.push_str(&e.to_string());
        src = e.source();
    }
    out
}

impl Node {
    fn px_addrs(&self, peer: &PeerId) -> (Vec<Multiaddr>, Vec<Multiaddr>) {
        let st = self.state.lock().expect("state lock");
        st.px.addrs_of(peer).iter().cloned().partition(|a| !is_relayed(a))
    }

    fn px_failed(&mut self, peer: PeerId, error: String) {
        let mut st = self.state.lock().expect("state lock");
        if let Some(k) = st.px.get_mut(&peer) {
            k.failures += 1;
            k.last_error = error.chars().take(ERROR_CHARS).collect();
            println!("peer {peer} (from {}) unreachable: {}", k.source, k.last_error);
        }
    }

    fn px_dial(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        circuit: bool,
        prior: Option<String>,
    ) {
        if addrs.is_empty() {
            let why = if circuit { "no circuit addresses" } else { "no addresses" };
            let msg = prior.map_or(why.to_string(), |p| format!("{p}; {why}"));
            return self.px_failed(peer, format!("cannot reach {peer}: {msg}"));
        }
        let opts =
            DialOpts::peer_id(peer).addresses(addrs).condition(PeerCondition::Disconnected).build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.px_dials.0.insert(id, Dial { peer, circuit, started: monotonic(), prior });
            }
            Err(e) => self.px_failed(peer, format!("cannot reach {peer}: {}", error_chain(&e))),
        }
    }

    /// Dial known peers while there is room (every tick, when p2p.discovery).
    pub(super) fn px_dial_where_due(&mut self) {
        if !self.cfg.discovery {
            return;
        }
        let now = monotonic();
        self.px_escalate(now);
        let me = *self.swarm.local_peer_id();
        let due: Vec<PeerId> = {
            let mut st = self.state.lock().expect("state lock");
            let connected: HashSet<PeerId> = st.conns.values().map(|c| c.peer).collect();
            let dialing: HashSet<PeerId> = self.px_dials.0.values().map(|d| d.peer).collect();
            let busy = connected.union(&dialing).count();
            let target = self.cfg.low_watermark.unwrap_or(self.cfg.max_connections);
            let mut room = target.saturating_sub(busy);
            let mut order: Vec<usize> = (0..st.px.known.len()).collect();
            order.sort_by_key(|&i| st.px.known[i].failures);
            let mut due = Vec::new();
            for i in order {
                if room == 0 {
                    break;
                }
                let k = &mut st.px.known[i];
                if k.source == "persistent"
                    || k.peer == me
                    || connected.contains(&k.peer)
                    || dialing.contains(&k.peer)
                    || now < k.next_dial
                {
                    continue;
                }
                room -= 1;
                k.next_dial = now + k.backoff;
                k.backoff = (k.backoff * 2.0).min(BACKOFF_MAX_S * 3.0);
                due.push(k.peer);
            }
            due
        };
        for peer in due {
            let (direct, circuit) = self.px_addrs(&peer);
            if direct.is_empty() {
                self.px_dial(peer, circuit, true, Some("no direct addresses".into()));
            } else {
                self.px_dial(peer, direct, false, None);
            }
        }
    }

    /// Direct dials unanswered for 3 s: try the circuit beside them.
    fn px_escalate(&mut self, now: f64) {
        let slow: Vec<(ConnectionId, PeerId)> = self
            .px_dials
            .0
            .iter()
            .filter(|(_, d)| !d.circuit && now - d.started >= DIRECT_TIMEOUT_S)
            .map(|(id, d)| (*id, d.peer))
            .collect();
        for (id, peer) in slow {
            let (_, circuit) = self.px_addrs(&peer);
            if circuit.is_empty() {
                continue; // let the direct dial run to its end
            }
            self.px_dials.0.remove(&id); // its late result no longer counts
            println!(
                "peer {peer}: no direct answer in {DIRECT_TIMEOUT_S} s; dialling its circuits"
            );
            let prior = format!("direct: no answer in {DIRECT_TIMEOUT_S} s");
            self.px_dial(peer, circuit, true, Some(prior));
        }
    }

    pub(super) fn px_on_dial_error(&mut self, id: ConnectionId, error: &dyn std::error::Error) {
        let Some(d) = self.px_dials.0.remove(&id) else { return };
        let err = error_chain(error);
        if self.state.lock().expect("state lock").connected(&d.peer, None) {
            return;
        }
        if d.circuit {
            let msg = d.prior.map_or(err.clone(), |p| format!("{p}; circuit: {err}"));
            self.px_failed(d.peer, format!("cannot reach {}: {msg}", d.peer));
        } else {
            let (_, circuit) = self.px_addrs(&d.peer);
            println!("peer {}: direct dial failed ({err}); dialling its circuits", d.peer);
            self.px_dial(d.peer, circuit, true, Some(format!("direct: {err}")));
        }
    }

    /// A connection is up: its peer's dials are done; an address we dialled is kept.
    pub(super) fn px_on_established(&mut self, peer: PeerId, dialled: Option<&Multiaddr>) {
        let ours = self.px_dials.0.values().any(|d| d.peer == peer);
        self.px_dials.0.retain(|_, d| d.peer != peer);
        let persistent = self.peers.iter().any(|(_, p)| *p == Some(peer));
        let mut st = self.state.lock().expect("state lock");
        if let Some(addr) = dialled {
            st.px.add_addrs(peer, [addr]);
        }
        if persistent {
            st.px.insert(peer, "persistent".into());
        }
        if let Some(k) = st.px.get_mut(&peer).filter(|_| ours) {
            k.failures = 0;
            k.backoff = BACKOFF_MIN_S;
            k.last_error.clear();
        }
    }

    /// The peer hung up at once: back off as after a failed dial (node/discovery.py).
    pub(super) fn px_on_closed(&mut self, c: &Conn) {
        let now = monotonic();
        let mut st = self.state.lock().expect("state lock");
        if now - c.opened_at >= HUNG_UP_S || st.connected(&c.peer, None) {
            return;
        }
        if let Some(k) = st.px.get_mut(&c.peer) {
            k.failures += 1;
            k.next_dial = now + k.backoff;
            k.backoff = (k.backoff * 2.0).min(BACKOFF_MAX_S * 6.0);
        }
    }

    pub(super) fn px_on_identify(&mut self, peer: PeerId, info: &identify::Info) {
        self.state.lock().expect("state lock").px.add_addrs(peer, &info.listen_addrs);
    }
}
