//! HTTP API (docs/contracts.md section 2): `GET /status` and `GET /events?since=N`, the
//! part the harness's checks read. One plain thread answers; each answer is a JSON
//! snapshot of the shared state taken under its lock.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Result};
use tiny_http::{Header, Response, Server};

use crate::state::State;

fn since_param(url: &str) -> Result<u64, String> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("since=") {
            return v.parse().map_err(|_| format!("since: {v:?} is not a non-negative integer"));
        }
    }
    Ok(0)
}

/// Bind the API socket now (so a taken port fails start-up) and serve it on a thread.
pub fn serve(listen: SocketAddr, state: Arc<Mutex<State>>) -> Result<()> {
    let server = Server::http(listen).map_err(|e| anyhow!("api.listen {listen}: {e}"))?;
    std::thread::Builder::new().name("api".into()).spawn(move || {
        let json = Header::from_bytes("Content-Type", "application/json").expect("static header");
        for req in server.incoming_requests() {
            let url = req.url().to_string();
            let path = url.split('?').next().unwrap_or("");
            let (code, body) = match path {
                "/status" => (200, state.lock().expect("state lock").status().to_string()),
                "/events" => match since_param(&url) {
                    Ok(n) => (200, state.lock().expect("state lock").events.since(n).to_string()),
                    Err(e) => (400, serde_json::json!({"error": e}).to_string()),
                },
                _ => (404, serde_json::json!({"error": "not found", "path": path}).to_string()),
            };
            let resp = Response::from_string(body).with_status_code(code).with_header(json.clone());
            let _ = req.respond(resp);
        }
    })?;
    Ok(())
}
