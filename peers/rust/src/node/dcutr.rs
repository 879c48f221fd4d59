//! DCUtR bookkeeping: one row per attempt and the `dcutr_*` events.
//!
//! An attempt starts with a relayed connection to a peer we have no direct connection to
//! (the side that received it initiates, as the spec says). It succeeds when rust-libp2p
//! reports its direct connection, or when a direct connection to the peer opens while it
//! runs (the peer's dial of the same exchange won: our node then closes the relayed
//! connection, and rust-libp2p's attempt dies with it without an event). It fails when
//! rust-libp2p gives up. An attempt whose relayed connection closes with no direct
//! connection is no outcome: its row leaves `dcutr`, as in our node.
//!
//! After a success the relayed connection only costs the relay (a circuit slot, its data
//! limit), yet rust-libp2p keeps it until idle, which with gossipsub and ping is never.
//! Like our node, this one closes it RELAY_CLOSE_GRACE after the upgrade (long enough for
//! the peer's own attempt over it to finish), while a direct connection to the peer is up.

use libp2p::swarm::ConnectionId;
use libp2p::{dcutr, Multiaddr, PeerId};
use serde_json::json;

use super::Node;
use crate::events::{monotonic, round};

const RELAY_CLOSE_GRACE: f64 = 10.0; // seconds, as node/dcutr/service.py RELAY_CLOSE_GRACE_S
use crate::state::{DcutrRow, State};

fn started(st: &State, peer: PeerId) -> Option<usize> {
    st.dcutr.iter().rposition(|d| d.peer == peer && d.outcome == "started")
}

/// A connection opened: a relayed one may start an attempt, a direct one may settle one.
pub(super) fn on_connection(
    st: &mut State,
    id: ConnectionId,
    peer: PeerId,
    relayed: bool,
    outbound: bool,
    remote: &Multiaddr,
) {
    if let Some(i) = st.dcutr.iter().position(|d| d.direct == Some(id)) {
        st.dcutr[i].direct = None;
        st.dcutr[i].addr = Some(remote.clone());
        emit_dcutr_success(st, i);
        return;
    }
    if !relayed {
        if let Some(i) = started(st, peer) {
            let now = monotonic();
            let row = &mut st.dcutr[i];
            row.outcome = "succeeded";
            row.duration_s = Some(now - row.started);
            row.at = now;
            row.addr = Some(remote.clone());
            row.detail = Some("direct connection opened during the attempt".into());
            emit_dcutr_success(st, i);
        }
        return;
    }
    if st.connected(&peer, Some(false)) || started(st, peer).is_some() {
        return;
    }
    let role = if outbound { "responder" } else { "initiator" };
    let attempt = 1 + st.dcutr.iter().filter(|d| d.peer == peer).count() as u32;
    let now = monotonic();
    st.dcutr.push(DcutrRow {
        peer,
        role,
        attempt,
        started: now,
        outcome: "started",
        reason: None,
        detail: None,
        duration_s: None,
        at: now,
        addr: None,
        direct: None,
    });
    st.events.emit(
        "dcutr_started",
        json!({"peer": peer.to_string(), "role": role,
                                           "attempt": attempt}),
    );
}

/// The relayed connection closed: an unsettled attempt without a direct connection is
/// no outcome.
pub(super) fn on_relayed_closed(st: &mut State, peer: PeerId) {
    if !st.connected(&peer, Some(false)) {
        st.dcutr.retain(|d| !(d.peer == peer && d.outcome == "started"));
    }
}

impl Node {
    /// Close relayed connections to peers upgraded RELAY_CLOSE_GRACE ago (module doc).
    pub(super) fn close_relayed_where_due(&mut self) {
        let now = monotonic();
        let due: Vec<ConnectionId> = {
            let st = self.state.lock().expect("state lock");
            let upgraded: Vec<PeerId> = st
                .dcutr
                .iter()
                .filter(|r| r.outcome == "succeeded" && r.at + RELAY_CLOSE_GRACE <= now)
                .map(|r| r.peer)
                .filter(|p| st.connected(p, Some(false)))
                .collect();
            st.conns
                .iter()
                .filter(|(_, c)| c.relayed && upgraded.contains(&c.peer))
                .map(|(id, _)| *id)
                .collect()
        };
        for id in due {
            self.swarm.close_connection(id);
        }
    }

    pub(super) fn on_dcutr(&mut self, ev: dcutr::Event) {
        let mut st = self.state.lock().expect("state lock");
        let peer = ev.remote_peer_id;
        let now = monotonic();
        let Some(i) = started(&st, peer) else { return };
        let row = &mut st.dcutr[i];
        row.duration_s = Some(now - row.started);
        row.at = now;
        match ev.result {
            Ok(conn) => {
                row.outcome = "succeeded";
                let addr = st.conns.get(&conn).map(|c| c.remote_addr.clone());
                match addr {
                    Some(a) => {
                        st.dcutr[i].addr = Some(a);
                        emit_dcutr_success(&mut st, i);
                    }
                    None => st.dcutr[i].direct = Some(conn),
                }
            }
            Err(e) => {
                let detail = e.to_string();
                let reason =
                    if detail.contains("dial attempts") { "timeout" } else { "stream_failed" };
                row.outcome = "failed";
                row.reason = Some(reason.into());
                row.detail = Some(detail.clone());
                let (role, attempt, duration) = (row.role, row.attempt, row.duration_s);
                st.events.emit(
                    "dcutr_failed",
                    json!({"peer": peer.to_string(), "role": role, "reason": reason,
                           "duration_s": duration.map(|d| round(d, 4)), "attempt": attempt,
                           "final": true, "detail": detail}),
                );
            }
        }
    }
}

fn emit_dcutr_success(st: &mut State, i: usize) {
    let row = &st.dcutr[i];
    let fields = json!({
        "peer": row.peer.to_string(), "role": row.role,
        "duration_s": row.duration_s.map(|d| round(d, 4)),
        "addr": row.addr.as_ref().map(|a| a.to_string()), "attempt": row.attempt,
    });
    st.events.emit("dcutr_succeeded", fields);
}
