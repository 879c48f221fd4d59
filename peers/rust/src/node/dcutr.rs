//! DCUtR bookkeeping: one row per attempt (started on a relayed connection, settled by
//! the dcutr behaviour's event) and the `dcutr_*` events.

use libp2p::dcutr;
use serde_json::json;

use super::Node;
use crate::events::{monotonic, round};
use crate::state::State;

impl Node {
    pub(super) fn on_dcutr(&mut self, ev: dcutr::Event) {
        let mut st = self.state.lock().expect("state lock");
        let peer = ev.remote_peer_id;
        let now = monotonic();
        let Some(i) = st.dcutr.iter().rposition(|d| d.peer == peer && d.outcome == "started")
        else {
            return;
        };
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

pub(super) fn emit_dcutr_success(st: &mut State, i: usize) {
    let row = &st.dcutr[i];
    let fields = json!({
        "peer": row.peer.to_string(), "role": row.role,
        "duration_s": row.duration_s.map(|d| round(d, 4)),
        "addr": row.addr.as_ref().map(|a| a.to_string()), "attempt": row.attempt,
    });
    st.events.emit("dcutr_succeeded", fields);
}
