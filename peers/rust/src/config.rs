//! The node.toml the harness renders (docs/contracts.md section 1), checked key by key.
//!
//! Every section and key of the contract is accepted, so the same rendered file serves
//! both implementations; keys this node has no use for (liveness) are
//! type-checked and ignored. An unknown or invalid key is a `ConfigError` whose message
//! names the dotted key, as the Python node's does; main exits 2 with it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use toml::Value;

#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RelayMode {
    Client,
    Server,
    Both,
}

#[derive(Clone, Debug)]
pub struct RelayConfig {
    pub enabled: bool,
    pub mode: RelayMode,
    pub relay_servers: Vec<Multiaddr>,
    pub max_reservations_held: usize,
    pub max_reservations: usize,
    pub max_circuits_per_peer: usize,
    pub circuit_duration_s: u64,
    pub circuit_bytes: u64,
    pub reservation_ttl_s: u64,
}

impl RelayConfig {
    pub fn is_client(&self) -> bool {
        self.enabled && matches!(self.mode, RelayMode::Client | RelayMode::Both)
    }

    pub fn is_server(&self) -> bool {
        self.enabled && matches!(self.mode, RelayMode::Server | RelayMode::Both)
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub name: String,
    pub role: String,
    pub key_file: PathBuf,
    pub listen_addrs: Vec<Multiaddr>,
    pub persistent_peers: Vec<Multiaddr>,
    /// `p2p.max_connections`: peer exchange dials learnt peers while fewer are connected
    pub max_connections: usize,
    /// `p2p.low_watermark`: when set, learnt peers are dialed only while fewer than this
    /// are connected (0 to max_connections); unset, up to max_connections as before
    pub low_watermark: Option<usize>,
    /// `p2p.discovery`: serve and ask `/sentrynet/px/1.0.0` (src/px.rs)
    pub discovery: bool,
    pub ping_interval_s: f64,
    pub ping_timeout_s: f64,
    pub relay: RelayConfig,
    pub dcutr_enabled: bool,
    pub api_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub chain: ChainConfig,
}

/// [chain]: the validator set (names in order, name -> peer id), block interval, sync.
#[derive(Clone, Debug)]
pub struct ChainConfig {
    pub validators: Vec<String>,
    pub validator_ids: BTreeMap<String, String>,
    pub block_interval_s: f64,
    pub serve_sync: bool,
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    Float,
    StrList,
    AddrList,
    NameTable,
}

/// (key, kind, required) of one key in a section.
type KeySpec = (&'static str, Kind, bool);

/// The contract's schema: section -> its keys. Order is the contract's.
const SCHEMA: &[(&str, &[KeySpec])] = &[
    (
        "node",
        &[
            ("name", Kind::Str, true),
            ("role", Kind::Str, false),
            ("key_file", Kind::Str, false),
            ("data_dir", Kind::Str, false),
        ],
    ),
    (
        "p2p",
        &[
            ("listen_addrs", Kind::AddrList, true),
            ("persistent_peers", Kind::AddrList, false),
            ("max_connections", Kind::Int, false),
            ("low_watermark", Kind::Int, false),
            ("discovery", Kind::Bool, false),
            ("ping_interval_s", Kind::Float, false),
            ("ping_timeout_s", Kind::Float, false),
            ("ping_failures", Kind::Int, false),
        ],
    ),
    (
        "relay",
        &[
            ("enabled", Kind::Bool, false),
            ("mode", Kind::Str, false),
            ("relay_servers", Kind::AddrList, false),
            ("max_reservations_held", Kind::Int, false),
            ("max_reservations", Kind::Int, false),
            ("max_circuits_per_peer", Kind::Int, false),
            ("circuit_duration_s", Kind::Int, false),
            ("circuit_bytes", Kind::Int, false),
            ("reservation_ttl_s", Kind::Int, false),
        ],
    ),
    ("dcutr", &[("enabled", Kind::Bool, false), ("max_attempts", Kind::Int, false)]),
    (
        "chain",
        &[
            ("validators", Kind::StrList, false),
            ("validator_ids", Kind::NameTable, false),
            ("block_interval_s", Kind::Float, false),
            ("serve_sync", Kind::Bool, false),
        ],
    ),
    ("api", &[("listen", Kind::Str, false)]),
];

const REQUIRED_SECTIONS: &[&str] = &["node", "p2p"];
const ROLES: &[&str] = &["validator", "full", "sentry"];

/// Checked values of one document, by dotted key.
#[derive(Default)]
struct Checked {
    strs: BTreeMap<String, String>,
    str_lists: BTreeMap<String, Vec<String>>,
    tables: BTreeMap<String, BTreeMap<String, String>>,
    ints: BTreeMap<String, i64>,
    bools: BTreeMap<String, bool>,
    floats: BTreeMap<String, f64>,
    addrs: BTreeMap<String, Vec<Multiaddr>>,
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Str => "a string",
        Kind::Int => "an integer",
        Kind::Bool => "a boolean",
        Kind::Float => "a number",
        Kind::StrList => "a list of strings",
        Kind::AddrList => "a list of multiaddr strings",
        Kind::NameTable => "a table of name = peer id",
    }
}

fn check_value(key: &str, kind: Kind, value: &Value, out: &mut Checked) -> Result<(), ConfigError> {
    let wrong = || err(format!("{key}: expected {}, got {value}", kind_name(kind)));
    match (kind, value) {
        (Kind::Str, Value::String(s)) => {
            out.strs.insert(key.into(), s.clone());
        }
        (Kind::Int, Value::Integer(i)) => {
            out.ints.insert(key.into(), *i);
        }
        (Kind::Bool, Value::Boolean(b)) => {
            out.bools.insert(key.into(), *b);
        }
        (Kind::Float, Value::Float(f)) => {
            out.floats.insert(key.into(), *f);
        }
        (Kind::Float, Value::Integer(i)) => {
            out.floats.insert(key.into(), *i as f64);
        }
        (Kind::StrList, Value::Array(items)) => {
            let mut list = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let Some(s) = item.as_str() else {
                    return err(format!("{key}[{i}]: expected a string, got {item}"));
                };
                list.push(s.to_string());
            }
            out.str_lists.insert(key.into(), list);
        }
        (Kind::AddrList, Value::Array(items)) => {
            let mut addrs = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let Some(s) = item.as_str() else {
                    return err(format!("{key}[{i}]: expected a multiaddr string, got {item}"));
                };
                match s.parse::<Multiaddr>() {
                    Ok(ma) => addrs.push(ma),
                    Err(e) => {
                        return err(format!("{key}[{i}]: {s:?} is not a valid multiaddr ({e})"))
                    }
                }
            }
            out.addrs.insert(key.into(), addrs);
        }
        (Kind::NameTable, Value::Table(t)) => {
            let mut table = BTreeMap::new();
            for (name, v) in t {
                let Some(s) = v.as_str() else {
                    return err(format!("{key}.{name}: expected a string, got {v}"));
                };
                table.insert(name.clone(), s.to_string());
            }
            out.tables.insert(key.into(), table);
        }
        _ => return wrong(),
    }
    Ok(())
}

fn check_document(doc: &toml::Table) -> Result<Checked, ConfigError> {
    let names: Vec<&str> = SCHEMA.iter().map(|(s, _)| *s).collect();
    for section in doc.keys() {
        if !names.contains(&section.as_str()) {
            return err(format!(
                "{section}: unknown section; valid sections: {}",
                names.join(", ")
            ));
        }
    }
    for section in REQUIRED_SECTIONS {
        if !doc.contains_key(*section) {
            return err(format!("{section}: required section [{section}] is missing"));
        }
    }
    let mut out = Checked::default();
    for (section, keys) in SCHEMA {
        let Some(raw) = doc.get(*section) else { continue };
        let Value::Table(table) = raw else {
            return err(format!("{section}: expected a table [{section}], got {raw}"));
        };
        for key in table.keys() {
            if !keys.iter().any(|(k, _, _)| *k == key.as_str()) {
                let mut valid: Vec<&str> = keys.iter().map(|(k, _, _)| *k).collect();
                valid.sort();
                return err(format!(
                    "{section}.{key}: unknown key; valid keys in [{section}]: {}",
                    valid.join(", ")
                ));
            }
        }
        for (key, kind, required) in *keys {
            let dotted = format!("{section}.{key}");
            match table.get(*key) {
                Some(value) => check_value(&dotted, *kind, value, &mut out)?,
                None if *required => return err(format!("{dotted}: required key is missing")),
                None => {}
            }
        }
    }
    Ok(out)
}

fn positive(key: &str, value: i64) -> Result<u64, ConfigError> {
    if value <= 0 {
        return err(format!("{key}: must be > 0, got {value}"));
    }
    Ok(value as u64)
}

impl Checked {
    fn str_or(&self, key: &str, default: &str) -> String {
        self.strs.get(key).cloned().unwrap_or_else(|| default.to_string())
    }

    fn int_or(&self, key: &str, default: i64) -> Result<u64, ConfigError> {
        positive(key, *self.ints.get(key).unwrap_or(&default))
    }

    fn float_or(&self, key: &str, default: f64) -> Result<f64, ConfigError> {
        let v = *self.floats.get(key).unwrap_or(&default);
        if !v.is_finite() {
            // TOML has nan and inf; `nan <= 0.0` is false, so check it first (as our node)
            return err(format!("{key}: must be a finite number, got {v}"));
        }
        if v <= 0.0 {
            return err(format!("{key}: must be > 0, got {v}"));
        }
        Ok(v)
    }

    fn addrs(&self, key: &str) -> Vec<Multiaddr> {
        self.addrs.get(key).cloned().unwrap_or_default()
    }
}

fn check_listen_addrs(addrs: &[Multiaddr]) -> Result<(), ConfigError> {
    if addrs.is_empty() {
        return err("p2p.listen_addrs: at least one listen address is required");
    }
    for (i, addr) in addrs.iter().enumerate() {
        let mut it = addr.iter();
        let (ip, tcp) = (it.next(), it.next());
        let wildcard = match ip {
            Some(Protocol::Ip4(ip)) => ip.is_unspecified(),
            Some(Protocol::Ip6(ip)) => ip.is_unspecified(),
            _ => {
                return err(format!("p2p.listen_addrs[{i}]: '{addr}' must be /ip4/<ip>/tcp/<port>"))
            }
        };
        if !matches!(tcp, Some(Protocol::Tcp(_))) {
            return err(format!("p2p.listen_addrs[{i}]: '{addr}' must be /ip4/<ip>/tcp/<port>"));
        }
        if wildcard {
            return err(format!(
                "p2p.listen_addrs[{i}]: '{addr}' is a wildcard; listen on a concrete IP \
                 (a wildcard makes reservations carry no addresses)"
            ));
        }
    }
    Ok(())
}

/// Validate a parsed document; relative key_file is relative to `base` (the config's dir).
pub fn parse(doc: &toml::Table, base: &Path) -> Result<Config, ConfigError> {
    let c = check_document(doc)?;
    let name = c.str_or("node.name", "");
    if name.is_empty() {
        return err("node.name: must not be empty");
    }
    let role = c.str_or("node.role", "full");
    if !ROLES.contains(&role.as_str()) {
        return err(format!("node.role: '{role}' is not one of {}", ROLES.join(", ")));
    }
    let mode = match c.str_or("relay.mode", "client").as_str() {
        "client" => RelayMode::Client,
        "server" => RelayMode::Server,
        "both" => RelayMode::Both,
        other => return err(format!("relay.mode: '{other}' is not one of client, server, both")),
    };
    let listen_addrs = c.addrs("p2p.listen_addrs");
    check_listen_addrs(&listen_addrs)?;
    let api = c.str_or("api.listen", "127.0.0.1:9000");
    let Ok(api_listen) = api.parse::<SocketAddr>() else {
        return err(format!("api.listen: '{api}' must be <ip>:<port>"));
    };
    if api_listen.port() == 0 {
        return err(format!("api.listen: '{api}' must be <ip>:<port>"));
    }
    for addr in &listen_addrs {
        let mut it = addr.iter();
        let ip = match it.next() {
            Some(Protocol::Ip4(ip)) => std::net::IpAddr::V4(ip),
            Some(Protocol::Ip6(ip)) => std::net::IpAddr::V6(ip),
            _ => continue,
        };
        if let Some(Protocol::Tcp(port)) = it.next() {
            if ip == api_listen.ip() && port == api_listen.port() {
                return err(format!("api.listen: '{api}' collides with p2p listen {addr}"));
            }
        }
    }
    for key in ["p2p.max_connections", "p2p.ping_failures", "dcutr.max_attempts"] {
        c.int_or(key, 1)?;
    }
    let max_connections = c.int_or("p2p.max_connections", 32)? as usize;
    let low_watermark = match c.ints.get("p2p.low_watermark") {
        None => None,
        Some(&v) if v >= 0 && (v as usize) <= max_connections => Some(v as usize),
        Some(&v) => {
            return err(format!(
                "p2p.low_watermark: must be from 0 to p2p.max_connections ({max_connections}), got {v}"
            ))
        }
    };
    let key_file = PathBuf::from(c.str_or("node.key_file", "node.key"));
    let data_dir = PathBuf::from(c.str_or("node.data_dir", "data"));
    let chain = ChainConfig {
        validators: c.str_lists.get("chain.validators").cloned().unwrap_or_default(),
        validator_ids: c.tables.get("chain.validator_ids").cloned().unwrap_or_default(),
        block_interval_s: c.float_or("chain.block_interval_s", 1.0)?,
        serve_sync: *c.bools.get("chain.serve_sync").unwrap_or(&true),
    };
    let relay = RelayConfig {
        enabled: *c.bools.get("relay.enabled").unwrap_or(&false),
        mode,
        relay_servers: c.addrs("relay.relay_servers"),
        max_reservations_held: c.int_or("relay.max_reservations_held", 2)? as usize,
        max_reservations: c.int_or("relay.max_reservations", 128)? as usize,
        max_circuits_per_peer: c.int_or("relay.max_circuits_per_peer", 16)? as usize,
        circuit_duration_s: c.int_or("relay.circuit_duration_s", 3600)?,
        circuit_bytes: c.int_or("relay.circuit_bytes", 1 << 30)?,
        reservation_ttl_s: c.int_or("relay.reservation_ttl_s", 3600)?,
    };
    Ok(Config {
        name,
        role,
        key_file: if key_file.is_absolute() { key_file } else { base.join(key_file) },
        listen_addrs,
        persistent_peers: c.addrs("p2p.persistent_peers"),
        max_connections,
        low_watermark,
        discovery: *c.bools.get("p2p.discovery").unwrap_or(&true),
        ping_interval_s: c.float_or("p2p.ping_interval_s", 5.0)?,
        ping_timeout_s: c.float_or("p2p.ping_timeout_s", 10.0)?,
        relay,
        dcutr_enabled: *c.bools.get("dcutr.enabled").unwrap_or(&true),
        api_listen,
        data_dir: if data_dir.is_absolute() { data_dir } else { base.join(data_dir) },
        chain,
    })
}

/// Read and validate a node.toml; every problem names its key (or the file).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{}: cannot read config ({e})", path.display())))?;
    let doc: toml::Table = text
        .parse()
        .map_err(|e| ConfigError(format!("{}: not valid TOML ({e})", path.display())))?;
    parse(&doc, path.parent().unwrap_or(Path::new(".")))
}
