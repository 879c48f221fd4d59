//! The libp2p side: the swarm (TCP + Noise + Yamux, relay client transport), its
//! behaviours, and the loop that turns swarm events into state and events (and gossip
//! and chain timers into the chain service, src/chain/service.rs). Connections,
//! listen addresses and dialling live here; relays in node/relays.rs, DCUtR in
//! node/dcutr.rs; dialling what peer exchange (src/px.rs) taught us in node/discovery.rs.

mod dcutr;
mod discovery;
mod relays;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::core::ConnectedPoint;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{gossipsub, identify, noise, ping, relay, tcp, yamux, Multiaddr, PeerId, Swarm};
use serde_json::json;

use crate::chain::service::Chain;
use crate::config::Config;
use crate::events::monotonic;
use crate::state::{is_relayed, relay_of, Candidate, Conn, Reservation, State};
use relays::RelayTarget;

const RETRY: Duration = Duration::from_secs(5);
const AGENT: &str =
    concat!("sentrynet-rust-node/", env!("CARGO_PKG_VERSION"), " (rust-libp2p 0.56)");

#[derive(NetworkBehaviour)]
struct Behaviour {
    relay_client: relay::client::Behaviour,
    relay_server: Toggle<relay::Behaviour>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    dcutr: Toggle<libp2p::dcutr::Behaviour>,
    gossipsub: gossipsub::Behaviour,
    stream: libp2p_stream::Behaviour,
}

struct Node {
    swarm: Swarm<Behaviour>,
    state: Arc<Mutex<State>>,
    cfg: Config,
    relays: Vec<RelayTarget>,
    /// Persistent peers: address, and the peer id once known.
    peers: Vec<(Multiaddr, Option<PeerId>)>,
    dial_at: f64,
    /// monotonic() at start: reservations wait at most relays::OBSERVE_WAIT_S from here
    started: f64,
    chain: Chain,
    px_dials: discovery::Dials,
}

fn build_swarm(cfg: &Config, key: Keypair) -> Result<Swarm<Behaviour>> {
    let server = cfg.relay.is_server().then(|| relay::Config {
        max_reservations: cfg.relay.max_reservations,
        reservation_duration: Duration::from_secs(cfg.relay.reservation_ttl_s),
        max_circuits: cfg.relay.max_reservations * cfg.relay.max_circuits_per_peer,
        max_circuits_per_peer: cfg.relay.max_circuits_per_peer,
        max_circuit_duration: Duration::from_secs(cfg.relay.circuit_duration_s),
        max_circuit_bytes: cfg.relay.circuit_bytes,
        ..Default::default()
    });
    let ping_cfg = ping::Config::new()
        .with_interval(Duration::from_secs_f64(cfg.ping_interval_s))
        .with_timeout(Duration::from_secs_f64(cfg.ping_timeout_s));
    let dcutr_on = cfg.dcutr_enabled;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(tcp::Config::new().nodelay(true), noise::Config::new, yamux::Config::default)?
        .with_relay_client(noise::Config::new, yamux::Config::default)?
        .with_behaviour(|key, relay_client| {
            let id = key.public().to_peer_id();
            Behaviour {
                relay_client,
                relay_server: Toggle::from(server.map(|c| relay::Behaviour::new(id, c))),
                identify: identify::Behaviour::new(
                    identify::Config::new("/ipfs/id/1.0.0".into(), key.public())
                        .with_agent_version(AGENT.into()),
                ),
                ping: ping::Behaviour::new(ping_cfg),
                dcutr: Toggle::from(dcutr_on.then(|| libp2p::dcutr::Behaviour::new(id))),
                gossipsub: gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(key.clone()),
                    crate::chain::gossip::config(),
                )
                .expect("valid gossipsub behaviour"),
                stream: libp2p_stream::Behaviour::new(),
            }
        })?
        // our node keeps a connection while the peer does; don't drop idle ones early
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    Ok(swarm)
}

/// The peer an address leads to: its last `/p2p/<id>` (the target of a circuit address).
fn peer_in(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter()
        .filter_map(|p| match p {
            Protocol::P2p(id) => Some(id),
            _ => None,
        })
        .last()
}

/// The address without a trailing `/p2p/<id>`.
fn without_peer(addr: &Multiaddr) -> Multiaddr {
    addr.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect()
}

impl Node {
    fn dial_where_due(&mut self) {
        let now = monotonic();
        if now < self.dial_at {
            return;
        }
        self.dial_at = now + RETRY.as_secs_f64();
        let mut addrs = Vec::new();
        if self.cfg.relay.is_client() {
            for r in &self.relays {
                if r.peer.is_none() {
                    addrs.push((r.addr.clone(), None));
                }
            }
        }
        for (addr, peer) in &self.peers {
            addrs.push((addr.clone(), *peer));
        }
        for (addr, peer) in addrs {
            let connected = {
                let st = self.state.lock().expect("state lock");
                match peer {
                    Some(p) => st.connected(&p, None),
                    None => st.conns.values().any(|c| c.remote_addr == addr),
                }
            };
            if !connected {
                let _ = self.swarm.dial(addr);
            }
        }
    }

    fn on_listen_addr(&mut self, listener: ListenerId, address: Multiaddr) {
        let relay = self.relays.iter().find(|r| r.listener == Some(listener)).and_then(|r| r.peer);
        let mut st = self.state.lock().expect("state lock");
        match relay {
            Some(peer) => {
                let addr =
                    if address.iter().any(|p| matches!(p, Protocol::P2p(id) if id == st.peer_id)) {
                        address
                    } else {
                        address.with(Protocol::P2p(st.peer_id))
                    };
                let r = st.reservations.entry(peer).or_insert_with(|| Reservation {
                    relay_addrs: Vec::new(),
                    addrs: Vec::new(),
                    accepted_at: None,
                });
                if !r.addrs.contains(&addr) {
                    r.addrs.push(addr);
                }
            }
            None => {
                if !st.listen_addrs.contains(&address) {
                    st.listen_addrs.push(address.clone());
                }
                st.ready = st.listen_addrs.len() >= self.cfg.listen_addrs.len();
                drop(st);
                if self.cfg.relay.is_server() {
                    // a relay's reservations carry its external addresses: its listen ones
                    self.swarm.add_external_address(address);
                }
            }
        }
    }

    fn on_established(&mut self, id: ConnectionId, peer: PeerId, endpoint: &ConnectedPoint) {
        let (remote, outbound) = match endpoint {
            // a direct dial's address is /ip4/../tcp/.. as our node reports it, no /p2p/<id>
            ConnectedPoint::Dialer { address, .. } if !is_relayed(address) => {
                (without_peer(address), true)
            }
            ConnectedPoint::Dialer { address, .. } => (address.clone(), true),
            ConnectedPoint::Listener { local_addr, send_back_addr } if is_relayed(local_addr) => {
                let mut a = local_addr.clone();
                for p in send_back_addr.iter() {
                    a.push(p);
                }
                (a, false)
            }
            ConnectedPoint::Listener { send_back_addr, .. } => (send_back_addr.clone(), false),
        };
        let relayed = is_relayed(&remote);
        let relay =
            if relayed { relay_of(&remote).or_else(|| self.relay_by_hop(&remote)) } else { None };
        let conn = Conn {
            peer,
            remote_addr: remote.clone(),
            relayed,
            outbound,
            opened_at: monotonic(),
            relay,
            rtts: Vec::new(),
            pings_ok: 0,
            ping_failures: 0,
            observed_addr: None,
        };
        for (addr, known) in &mut self.peers {
            if known.is_none() && without_peer(addr) == without_peer(&remote) {
                *known = Some(peer);
            }
        }
        self.px_on_established(peer, (outbound && !relayed).then_some(&remote));
        let dcutr_on = self.cfg.dcutr_enabled;
        let mut st = self.state.lock().expect("state lock");
        let kind = conn.kind();
        st.events.emit(
            "connection_opened",
            json!({"peer": peer.to_string(), "remote_addr": remote.to_string(), "kind": kind,
                   "direction": if outbound { "outbound" } else { "inbound" }}),
        );
        st.conns.insert(id, conn);
        if dcutr_on {
            dcutr::on_connection(&mut st, id, peer, relayed, outbound, &remote);
        }
    }

    /// The relay of an inbound circuit whose address names none: rust-libp2p gives it as
    /// `<relay's connection address>/p2p-circuit/p2p/<peer>`, so it is the peer of our
    /// direct connection with that address.
    fn relay_by_hop(&self, remote: &Multiaddr) -> Option<PeerId> {
        let hop: Multiaddr =
            remote.iter().take_while(|p| !matches!(p, Protocol::P2pCircuit)).collect();
        let st = self.state.lock().expect("state lock");
        st.conns
            .values()
            .find(|c| !c.relayed && without_peer(&c.remote_addr) == hop)
            .map(|c| c.peer)
    }

    fn on_closed(&mut self, id: ConnectionId) {
        let mut st = self.state.lock().expect("state lock");
        if let Some(c) = st.conns.remove(&id) {
            drop(st);
            self.px_on_closed(&c);
            let mut st = self.state.lock().expect("state lock");
            if c.relayed {
                dcutr::on_relayed_closed(&mut st, c.peer);
            }
            st.events.emit(
                "connection_closed",
                json!({"peer": c.peer.to_string(), "remote_addr": c.remote_addr.to_string(),
                       "kind": c.kind(), "reason": "closed"}),
            );
            if c.relayed {
                // a relayed connection is one circuit end: close it as our node does
                let me = st.peer_id;
                let (src, dst, side) =
                    if c.outbound { (me, c.peer, "dialer") } else { (c.peer, me, "target") };
                st.events.emit(
                    "circuit_closed",
                    json!({"src": src.to_string(), "dst": dst.to_string(), "side": side,
                           "reason": "closed", "bytes": null,
                           "relay": c.relay.map(|r| r.to_string())}),
                );
            }
        }
    }

    fn on_ping(&mut self, ev: ping::Event) {
        let mut st = self.state.lock().expect("state lock");
        if let Some(c) = st.conns.get_mut(&ev.connection) {
            match ev.result {
                Ok(rtt) => {
                    c.pings_ok += 1;
                    c.ping_failures = 0;
                    c.rtts.push(rtt.as_secs_f64());
                    if c.rtts.len() > 32 {
                        c.rtts.remove(0);
                    }
                }
                Err(_) => c.ping_failures += 1,
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { listener_id, address } => {
                self.on_listen_addr(listener_id, address)
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let mut st = self.state.lock().expect("state lock");
                st.listen_addrs.retain(|a| *a != address);
                for r in st.reservations.values_mut() {
                    r.addrs.retain(|a| without_peer(a) != without_peer(&address));
                }
            }
            SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                self.on_listener_closed(listener_id, reason.as_ref().err())
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                eprintln!("listener {listener_id:?} error: {error}");
            }
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                self.on_established(connection_id, peer_id, &endpoint)
            }
            SwarmEvent::ConnectionClosed { connection_id, .. } => self.on_closed(connection_id),
            SwarmEvent::OutgoingConnectionError { connection_id, peer_id, error } => {
                self.on_relay_dial_error(peer_id, &error);
                self.px_on_dial_error(connection_id, &error)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                connection_id,
                peer_id,
                info,
            })) => {
                self.px_on_identify(peer_id, &info);
                self.on_identify(connection_id, peer_id, info)
            }
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(ev)) => self.on_relay_client(ev),
            SwarmEvent::Behaviour(BehaviourEvent::RelayServer(ev)) => self.on_relay_server(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(ev)) => self.on_dcutr(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ev)) => self.on_ping(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(ev)) => {
                self.chain.on_gossip(&mut self.swarm.behaviour_mut().gossipsub, ev)
            }
            _ => {}
        }
    }
}

/// Listen, start the API, dial and reserve, then run the swarm until SIGTERM/SIGINT.
pub async fn run(cfg: Config, key: Keypair) -> Result<()> {
    let peer_id = key.public().to_peer_id();
    let mut swarm = build_swarm(&cfg, key.clone())?;
    for (i, addr) in cfg.listen_addrs.iter().enumerate() {
        if let Err(e) = swarm.listen_on(addr.clone()) {
            let mut cause: &dyn std::error::Error = &e;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            bail!("p2p.listen_addrs[{i}]: cannot listen on {addr}: {cause}");
        }
    }
    let state =
        Arc::new(Mutex::new(State::new(peer_id, &cfg.name, &cfg.role, cfg.relay.is_server())));
    crate::api::serve(cfg.api_listen, state.clone())?;
    println!("{} peer_id={peer_id} api=http://{}", cfg.name, cfg.api_listen);
    let relays: Vec<RelayTarget> = cfg.relay.relay_servers.iter().map(RelayTarget::new).collect();
    if cfg.relay.is_client() {
        let mut st = state.lock().expect("state lock");
        for r in relays.iter().filter(|r: &&RelayTarget| r.peer.is_some()) {
            let peer = r.peer.expect("filtered");
            st.candidates.push(Candidate { peer, addr: r.addr.clone(), source: "config" });
            st.events.emit(
                "relay_discovered",
                json!({"peer": peer.to_string(), "addr": r.addr.to_string(), "source": "config"}),
            );
        }
    }
    let peers: Vec<(Multiaddr, Option<PeerId>)> =
        cfg.persistent_peers.iter().map(|a| (a.clone(), peer_in(a))).collect();
    {
        let mut st = state.lock().expect("state lock");
        for (addr, peer) in &peers {
            if let Some(p) = peer {
                st.px.insert(*p, "persistent".into());
                st.px.add_addrs(*p, [addr]);
            }
        }
    }
    if cfg.discovery {
        let control = swarm.behaviour().stream.new_control();
        tokio::spawn(crate::px::serve(control.clone(), state.clone()));
        tokio::spawn(crate::px::ask_loop(control, state.clone()));
    }
    let control = swarm.behaviour().stream.new_control();
    let (chain, mut chain_rx) =
        Chain::start(&cfg, &key, &mut swarm.behaviour_mut().gossipsub, control, state.clone());
    let mut node = Node {
        swarm,
        state,
        cfg,
        relays,
        peers,
        dial_at: 0.0,
        started: monotonic(),
        chain,
        px_dials: discovery::Dials::default(),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            ev = node.swarm.select_next_some() => node.on_event(ev),
            Some(input) = chain_rx.recv() => {
                node.chain.on_input(&mut node.swarm.behaviour_mut().gossipsub, input)
            }
            _ = tick.tick() => {
                if node.state.lock().expect("state lock").ready {
                    node.reserve_where_due();
                    node.dial_where_due();
                    node.px_dial_where_due();
                    node.close_relayed_where_due();
                }
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(())
}
