//! The event log behind `/events?since=N` (docs/contracts.md section 2), with the same
//! type names and fields as the Python node, and one readable log line per event:
//! `<t> <name> <type> k=v ...`. `t` is CLOCK_MONOTONIC seconds, like Python's
//! `time.monotonic()`, so timelines of both implementations on one host line up.

use serde_json::{Map, Value};

/// Seconds on CLOCK_MONOTONIC.
pub fn monotonic() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Seconds since the Unix epoch (for `expires_at`).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

pub struct EventLog {
    name: String,
    events: Vec<Value>,
    first_seq: u64,
    next: u64,
    max: usize,
}

fn fmt_value(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => format!("{:.3}", n.as_f64().unwrap_or(0.0)),
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Array(items) => items.iter().map(fmt_value).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

impl EventLog {
    pub fn new(name: &str) -> Self {
        EventLog { name: name.into(), events: Vec::new(), first_seq: 0, next: 0, max: 20000 }
    }

    /// Record an event; `fields` must be a JSON object (use `serde_json::json!`).
    pub fn emit(&mut self, kind: &str, fields: Value) {
        let t = monotonic();
        let mut line = format!("{t:.3} {} {kind}", self.name);
        let mut ev = Map::new();
        ev.insert("seq".into(), self.next.into());
        ev.insert("t".into(), round(t, 4).into());
        ev.insert("type".into(), kind.into());
        if let Value::Object(map) = fields {
            for (k, v) in map {
                line.push_str(&format!(" {k}={}", fmt_value(&v)));
                ev.insert(k, v);
            }
        }
        println!("{line}");
        self.next += 1;
        self.events.push(Value::Object(ev));
        if self.events.len() > self.max {
            let excess = self.events.len() - self.max;
            self.events.drain(..excess);
            self.first_seq += excess as u64;
        }
    }

    /// `{"next": M, "events": [...]}` for events with seq >= since.
    pub fn since(&self, since: u64) -> Value {
        let start = since.saturating_sub(self.first_seq) as usize;
        let events = self.events.get(start..).unwrap_or(&[]).to_vec();
        serde_json::json!({"next": self.next, "events": events})
    }
}
