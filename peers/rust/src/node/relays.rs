//! Relays: reserving on `[relay] relay_servers` (client) and granting reservations and
//! relaying circuits (server), as state and contract events.
//!
//! An entry with `/p2p/<id>` is reserved on at once with
//! `listen_on(<addr>/p2p/<id>/p2p-circuit)`; an entry without one is dialled, matched to
//! a peer id when identify comes back (the connection's address or the peer's listen
//! addresses), and then reserved on the same way. That `listen_on` is the whole dynamic
//! reservation API of rust-libp2p's relay client.
//!
//! Reserve over a direct connection only. rust-libp2p 0.56's relay client sends the
//! reservation over a direct connection to the relay when it has one; when it has none it
//! asks the swarm to dial the relay with the default dial condition (dial only when
//! disconnected). A peer met first over a *relayed* connection (a relay that dialled us
//! through another relay's circuit, as a sentry does) counts as connected, so that dial is
//! refused, the listener closes ("listener closed") and no RESERVE is ever sent: the
//! seed's NO_RESERVATION symptom, reproduced by the seed-rust scenario. So before
//! `listen_on` the node makes sure it has a direct connection to the relay, dialling the
//! configured address itself (`PeerCondition::NotDialing`: connected or not) when it has none.
//!
//! Reserve once every relay has told us our address. rust-libp2p 0.56's DCUtR takes a
//! relayed connection's hole-punch candidates (the address candidates identify reported
//! so far) when the connection opens (dcutr `Behaviour::handle_established_*_connection`
//! hands `observed_addresses()` to the connection's handler) and never updates them, and
//! it makes its 3 attempts with those. A circuit that arrives through a relay on our own
//! network before a public relay's identify has come back therefore offers only our
//! private address, and the upgrade is lost for the whole connection: seed-rust in CI,
//! where a validator reserved on its network's sentry first and every punch over that
//! sentry's circuits dialled `172.20.0.x`. So no reservation is made while a configured
//! relay's identify is outstanding (`observations_pending`), unless its dial failed or
//! OBSERVE_WAIT_S have passed since the node started: a relay that never answers delays
//! reserving, it does not stop it.

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError};
use libp2p::{identify, relay, Multiaddr, PeerId};
use serde_json::json;

use super::{peer_in, without_peer, Node, RETRY};
use crate::events::{monotonic, round, unix_now};
use crate::state::{is_relayed, Candidate, Grant, RelayedCircuit, Reservation};

/// A `[relay] relay_servers` entry and where reserving on it stands.
pub(super) struct RelayTarget {
    pub(super) addr: Multiaddr,
    pub(super) peer: Option<PeerId>,
    pub(super) listener: Option<ListenerId>,
    pub(super) retry_at: f64,
    /// Identify came back from it over a direct connection: its observation of us is a
    /// DCUtR candidate now.
    pub(super) observed: bool,
    /// Our last dial to it failed: nothing to wait for.
    pub(super) unreachable: bool,
}

impl RelayTarget {
    pub(super) fn new(addr: &Multiaddr) -> Self {
        RelayTarget {
            addr: without_peer(addr),
            peer: peer_in(addr),
            listener: None,
            retry_at: 0.0,
            observed: false,
            unreachable: false,
        }
    }
}

/// Seconds since start after which reservations no longer wait for relays' identify.
pub(super) const OBSERVE_WAIT_S: f64 = 10.0;

/// Whether reserving still waits for a configured relay to tell us our address (module
/// doc): one has neither answered identify nor failed to be dialled, and the wait is
/// not over.
pub(super) fn observations_pending(relays: &[RelayTarget], since_start: f64) -> bool {
    since_start < OBSERVE_WAIT_S && relays.iter().any(|r| !r.observed && !r.unreachable)
}

/// The contract's status names for a reservation failure, else the error chain.
fn denial_reason(err: &dyn std::error::Error) -> String {
    let mut chain = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        chain.push_str(": ");
        chain.push_str(&e.to_string());
        src = e.source();
    }
    let lower = chain.to_lowercase();
    if lower.contains("resource limit") {
        "RESOURCE_LIMIT_EXCEEDED".into()
    } else if lower.contains("reservation refused") {
        "RESERVATION_REFUSED".into()
    } else {
        chain
    }
}

fn status_name(code: relay::StatusCode) -> String {
    let camel = format!("{code:?}");
    let mut out = String::new();
    for (i, ch) in camel.chars().enumerate() {
        if ch.is_uppercase() && i > 0 && camel != "OK" {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

impl Node {
    fn max_held(&self) -> usize {
        self.cfg.relay.max_reservations_held
    }

    /// Start reservations on known relays while fewer than max_reservations_held run.
    pub(super) fn reserve_where_due(&mut self) {
        if !self.cfg.relay.is_client() {
            return;
        }
        let now = monotonic();
        let pending = observations_pending(&self.relays, now - self.started);
        let mut active = self.relays.iter().filter(|r| r.listener.is_some()).count();
        for i in 0..self.relays.len() {
            if active >= self.max_held() {
                break;
            }
            let r = &self.relays[i];
            let Some(peer) = r.peer else { continue };
            if r.listener.is_some() || r.retry_at > now || peer == *self.swarm.local_peer_id() {
                continue;
            }
            let direct = self.state.lock().expect("state lock").connected(&peer, Some(false));
            if !direct {
                // see the module doc: reserving now would fail with "listener closed"
                let addr = without_peer(&r.addr);
                let dial = DialOpts::peer_id(peer)
                    .addresses(vec![addr.clone()])
                    .condition(PeerCondition::NotDialing) // connected (relayed) or not
                    .build();
                self.relays[i].retry_at = now + 1.0; // reserve on the next tick once it is up
                if let Err(e) = self.swarm.dial(dial) {
                    eprintln!("relay {peer}: direct dial to {addr} failed: {e}");
                }
                continue;
            }
            if pending {
                continue; // the next tick tries again (module doc)
            }
            let circuit =
                without_peer(&r.addr).with(Protocol::P2p(peer)).with(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => {
                    self.relays[i].listener = Some(id);
                    active += 1;
                }
                Err(e) => {
                    self.relays[i].retry_at = now + RETRY.as_secs_f64();
                    self.state.lock().expect("state lock").events.emit(
                        "reservation_denied",
                        json!({"relay": peer.to_string(), "reason": denial_reason(&e)}),
                    );
                }
            }
        }
    }

    /// A dial failed: a relay it was for is not waited for (`observations_pending`).
    pub(super) fn on_relay_dial_error(&mut self, peer: Option<PeerId>, error: &DialError) {
        let dialled: Vec<Multiaddr> = match error {
            DialError::Transport(errs) => errs.iter().map(|(a, _)| without_peer(a)).collect(),
            _ => Vec::new(),
        };
        for r in self.relays.iter_mut().filter(|r| !r.observed) {
            if (peer.is_some() && r.peer == peer) || dialled.contains(&r.addr) {
                r.unreachable = true;
            }
        }
    }

    /// Dial relays without a peer id and persistent peers we are not connected to.
    pub(super) fn on_listener_closed(
        &mut self,
        listener: ListenerId,
        reason: Option<&std::io::Error>,
    ) {
        let Some(i) = self.relays.iter().position(|r| r.listener == Some(listener)) else {
            if let Some(e) = reason {
                eprintln!("listener closed: {e}");
            }
            return;
        };
        let target = &mut self.relays[i];
        target.listener = None;
        target.retry_at = monotonic() + RETRY.as_secs_f64();
        let Some(peer) = target.peer else { return };
        let mut st = self.state.lock().expect("state lock");
        let held = st.reservations.remove(&peer).is_some_and(|r| r.accepted_at.is_some());
        let (kind, reason) = match (held, reason) {
            (true, Some(e)) => {
                ("reservation_expired", format!("refresh failed: {}", denial_reason(e)))
            }
            (true, None) => ("reservation_expired", "connection_closed".to_string()),
            (false, Some(e)) => ("reservation_denied", denial_reason(e)),
            (false, None) => ("reservation_denied", "listener closed".to_string()),
        };
        st.events.emit(kind, json!({"relay": peer.to_string(), "reason": reason}));
    }

    pub(super) fn on_identify(&mut self, id: ConnectionId, peer: PeerId, info: identify::Info) {
        let hop = info.protocols.contains(&relay::HOP_PROTOCOL_NAME);
        let mut st = self.state.lock().expect("state lock");
        let remote = st.conns.get(&id).map(|c| c.remote_addr.clone());
        if let Some(c) = st.conns.get_mut(&id) {
            c.observed_addr = Some(info.observed_addr.clone());
        }
        if let Some(direct) = remote.as_ref().filter(|a| !is_relayed(a)) {
            let at = without_peer(direct);
            for r in self.relays.iter_mut() {
                let listens = info.listen_addrs.iter().any(|a| without_peer(a) == r.addr);
                if r.peer == Some(peer) || r.addr == at || listens {
                    r.observed = true;
                    r.unreachable = false;
                }
            }
        }
        if !self.cfg.relay.is_client() || !hop {
            return;
        }
        let mut matched = false;
        for r in self.relays.iter_mut().filter(|r| r.peer.is_none()) {
            let by_conn = remote.as_ref().is_some_and(|a| without_peer(a) == r.addr);
            let by_listen = info.listen_addrs.iter().any(|a| without_peer(a) == r.addr);
            if by_conn || by_listen {
                r.peer = Some(peer);
                matched = true;
                st.candidates.push(Candidate { peer, addr: r.addr.clone(), source: "config" });
                st.events.emit(
                    "relay_discovered",
                    json!({"peer": peer.to_string(), "addr": r.addr.to_string(), "source": "config"}),
                );
            }
        }
        let known = matched || st.candidates.iter().any(|c| c.peer == peer);
        if !known && !is_relayed(remote.as_ref().unwrap_or(&Multiaddr::empty())) {
            if let Some(addr) = remote.map(|a| without_peer(&a)) {
                st.candidates.push(Candidate { peer, addr: addr.clone(), source: "identify" });
                st.events.emit(
                    "relay_discovered",
                    json!({"peer": peer.to_string(), "addr": addr.to_string(), "source": "identify"}),
                );
            }
        }
        drop(st);
        if matched {
            self.reserve_where_due();
        }
    }

    pub(super) fn on_relay_client(&mut self, ev: relay::client::Event) {
        let mut st = self.state.lock().expect("state lock");
        match ev {
            relay::client::Event::ReservationReqAccepted { relay_peer_id, renewal, .. } => {
                let relay_addrs: Vec<Multiaddr> = self
                    .relays
                    .iter()
                    .filter(|r| r.peer == Some(relay_peer_id))
                    .map(|r| without_peer(&r.addr))
                    .collect();
                let r = st.reservations.entry(relay_peer_id).or_insert_with(|| Reservation {
                    relay_addrs: Vec::new(),
                    addrs: Vec::new(),
                    accepted_at: None,
                });
                r.relay_addrs = relay_addrs;
                let first = r.accepted_at.is_none();
                r.accepted_at.get_or_insert_with(monotonic);
                let addrs: Vec<String> = r.addrs.iter().map(|a| a.to_string()).collect();
                if first || !renewal {
                    st.events.emit(
                        "reservation_accepted",
                        json!({"relay": relay_peer_id.to_string(), "addrs": addrs,
                               "expires_at": null}),
                    );
                }
            }
            relay::client::Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
                let me = st.peer_id.to_string();
                st.events.emit(
                    "circuit_opened",
                    json!({"src": me, "dst": null, "side": "dialer",
                           "relay": relay_peer_id.to_string()}),
                );
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                let me = st.peer_id.to_string();
                st.events.emit(
                    "circuit_opened",
                    json!({"src": src_peer_id.to_string(), "dst": me,
                           "side": "target", "relay": null}),
                );
            }
        }
    }

    pub(super) fn on_relay_server(&mut self, ev: relay::Event) {
        let ttl = self.cfg.relay.reservation_ttl_s as f64;
        let mut st = self.state.lock().expect("state lock");
        match ev {
            relay::Event::ReservationReqAccepted { src_peer_id, renewed } => {
                let expires_at = unix_now() + ttl;
                st.grants.insert(src_peer_id, Grant { expires_at, accepted_at: monotonic() });
                let addrs: Vec<String> =
                    self.swarm.external_addresses().map(|a| a.to_string()).collect();
                st.events.emit(
                    "reservation_granted",
                    json!({"peer": src_peer_id.to_string(), "addrs": addrs,
                           "expires_at": round(expires_at, 3), "renewed": renewed}),
                );
            }
            relay::Event::ReservationReqDenied { src_peer_id, status } => {
                st.events.emit(
                    "reservation_refused",
                    json!({"peer": src_peer_id.to_string(), "reason": status_name(status)}),
                );
            }
            relay::Event::ReservationClosed { src_peer_id }
            | relay::Event::ReservationTimedOut { src_peer_id } => {
                st.grants.remove(&src_peer_id);
            }
            relay::Event::CircuitReqAccepted { src_peer_id, dst_peer_id } => {
                let id = st.next_circuit_id;
                st.next_circuit_id += 1;
                st.circuits.push(RelayedCircuit {
                    id,
                    src: src_peer_id,
                    dst: dst_peer_id,
                    opened_at: monotonic(),
                });
                st.events.emit(
                    "circuit_opened",
                    json!({"src": src_peer_id.to_string(), "dst": dst_peer_id.to_string(),
                           "side": "relay", "id": id}),
                );
            }
            relay::Event::CircuitClosed { src_peer_id, dst_peer_id, error } => {
                let pos =
                    st.circuits.iter().position(|c| c.src == src_peer_id && c.dst == dst_peer_id);
                if let Some(i) = pos {
                    st.circuits.remove(i);
                }
                // libp2p-relay 0.21's circuit copy ends at the relay's limits with
                // io::Error::other("Max circuit bytes reached.") and ErrorKind::TimedOut
                // (max_circuit_duration): the contract's data_limit / duration_limit.
                let reason = match error {
                    None => "closed".to_string(),
                    Some(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                        "duration_limit".to_string()
                    }
                    Some(e) if e.to_string().contains("Max circuit bytes") => {
                        "data_limit".to_string()
                    }
                    Some(e) if e.to_string().contains("limit") => format!("limit: {e}"),
                    Some(_) => "reset".to_string(),
                };
                st.events.emit(
                    "circuit_closed",
                    json!({"src": src_peer_id.to_string(), "dst": dst_peer_id.to_string(),
                           "side": "relay", "reason": reason, "bytes": null}),
                );
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(observed: bool, unreachable: bool) -> RelayTarget {
        let mut t = RelayTarget::new(&"/ip4/10.0.0.7/tcp/27000".parse().expect("multiaddr"));
        t.observed = observed;
        t.unreachable = unreachable;
        t
    }

    #[test]
    fn reserving_waits_for_every_relays_identify() {
        // the sentry on our network has answered, the public relay not yet
        let relays = [target(true, false), target(false, false)];
        assert!(observations_pending(&relays, 1.0));
        let relays = [target(true, false), target(true, false)];
        assert!(!observations_pending(&relays, 1.0));
    }

    #[test]
    fn a_relay_that_failed_or_a_long_wait_ends_it() {
        assert!(!observations_pending(&[target(true, false), target(false, true)], 1.0));
        assert!(!observations_pending(&[target(false, false)], OBSERVE_WAIT_S));
        assert!(!observations_pending(&[], 0.0));
    }
}
