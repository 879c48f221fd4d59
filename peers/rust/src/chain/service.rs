//! The chain service (node/chain/service.py): wires consensus, store, gossip and sync into
//! the swarm task. Gossip carries proposals, votes and commits; a message is validated
//! (decoded, signature and validator checked) before gossipsub forwards it, and counted in
//! rejected.consensus when bad. Validators vote; full nodes and sentries follow the same
//! certificates. The poller (catchup.rs) asks peers for their tips; when we are behind, a
//! session fetches the missing heights. Synced blocks are not announced one by one; a
//! session ends with one `sync_completed`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::identity::Keypair;
use libp2p::PeerId;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;

use super::block::{verify_chain_link, Block, CommitCert, Hash, ValidatorSet, Vote};
use super::catchup::{self, Ctx, Outcome, PeerStats};
use super::codec::hex;
use super::consensus::{Action, Consensus, Host, Msg, Timeouts};
use super::gossip::{self, Gossip};
use super::store::Store;
use super::sync;
use crate::config::Config;
use crate::events::round;
use crate::state::State;

const INITIAL_SYNC_WAIT: Duration = Duration::from_secs(5);
const STALL: Duration = Duration::from_secs(3);

/// What tasks and timers tell the service.
pub enum Input {
    Timeout { step: &'static str, height: i64, round: i64 },
    StartNext { gen: u64 },
    InitialWait,
    Poll { heights: Vec<(PeerId, i64)>, connected: Vec<PeerId> },
    SyncDone(Outcome),
}

struct Running {
    vset: ValidatorSet,
    cons: Consensus,
    store: Arc<Mutex<Store>>,
    topic: IdentTopic,
    name: String,
    my_id: String,
    block_interval_s: f64,
    control: libp2p_stream::Control,
    wake: Arc<Notify>,
    sync_state: &'static str,
    sync_stats: BTreeMap<(PeerId, &'static str), PeerStats>,
    peer_heights: BTreeMap<String, i64>,
    last_commit_at: Instant,
    commits: u64,
    behind_hint: i64,
    syncing: bool,
    /// consensus timeouts that fired while a sync session ran, delivered after it
    held_timeouts: Vec<Input>,
    started: bool,
    start_gen: u64,
}

pub struct Chain {
    state: Arc<Mutex<State>>,
    tx: UnboundedSender<Input>,
    serve_sync: bool,
    error: Option<String>,
    run: Option<Running>,
}

/// The consensus machine's view of the store and the clock.
struct HostCtx<'a> {
    store: &'a mut Store,
    name: &'a str,
}

impl Host for HostCtx<'_> {
    fn now_ms(&mut self) -> i64 {
        (crate::events::unix_now() * 1000.0) as i64
    }
    fn payload(&mut self, height: i64) -> Vec<u8> {
        gossip::block_payload(self.name, height)
    }
    fn can_sign(&mut self, height: i64, round: i64, kind: &str, block: Option<Hash>) -> bool {
        self.store.check_and_record_signature(height, round, kind, block)
    }
    fn save_lock(&mut self, height: i64, round: i64, block: Option<&Block>, polka: &[Vote]) {
        self.store.save_lock(height, round, block, polka)
    }
}

fn after(tx: &UnboundedSender<Input>, delay: f64, input: Input) {
    let tx = tx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs_f64(delay.max(0.0))).await;
        let _ = tx.send(input);
    });
}

impl Chain {
    /// Set up from [chain]: opens the store, subscribes the topic, registers the sync
    /// protocol (when serve_sync) and starts the poller. A config that cannot run a chain
    /// leaves the node up with `chain.error` saying why, as the Python node does.
    pub fn start(
        cfg: &Config,
        key: &Keypair,
        gs: &mut gossipsub::Behaviour,
        mut control: libp2p_stream::Control,
        state: Arc<Mutex<State>>,
    ) -> (Chain, UnboundedReceiver<Input>) {
        let (tx, rx) = unbounded_channel();
        let mut chain =
            Chain { state, tx, serve_sync: cfg.chain.serve_sync, error: None, run: None };
        let c = &cfg.chain;
        if c.validators.is_empty() {
            chain.error = Some("no [chain] validators configured: chain disabled".into());
            chain.refresh();
            return (chain, rx);
        }
        let missing: Vec<&str> = c
            .validators
            .iter()
            .filter(|n| !c.validator_ids.contains_key(*n))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            chain.error =
                Some(format!("chain.validator_ids: no peer id for {}", missing.join(", ")));
            chain.refresh();
            return (chain, rx);
        }
        let pairs: Vec<(String, String)> =
            c.validators.iter().map(|n| (n.clone(), c.validator_ids[n].clone())).collect();
        let started = ValidatorSet::new(&pairs).and_then(|vset| {
            let store = Store::open(&cfg.data_dir, vset.chain_id)?;
            Ok((vset, store))
        });
        let (vset, store) = match started {
            Ok(v) => v,
            Err(e) => {
                eprintln!("chain disabled: {e}");
                chain.error = Some(e);
                chain.refresh();
                return (chain, rx);
            }
        };
        let my_id = key.public().to_peer_id().to_string();
        let votes = cfg.role == "validator";
        if votes && !vset.is_validator(&my_id) {
            eprintln!(
                "role validator but peer id {my_id} is not in chain.validator_ids: observing"
            );
        }
        let cons = Consensus::new(
            vset.clone(),
            votes.then(|| my_id.clone()),
            votes.then(|| key.clone()),
            Timeouts::for_interval(c.block_interval_s),
        );
        let topic = IdentTopic::new(gossip::topic_for(&vset));
        if let Err(e) = gs.subscribe(&topic) {
            eprintln!("chain: subscribe {topic}: {e}");
        }
        let store = Arc::new(Mutex::new(store));
        if c.serve_sync {
            match control.accept(libp2p::StreamProtocol::new(sync::PROTOCOL)) {
                Ok(incoming) => {
                    tokio::spawn(serve(incoming, store.clone(), chain.state.clone()));
                }
                Err(e) => eprintln!("chain: sync protocol: {e:?}"),
            }
        }
        let wake = Arc::new(Notify::new());
        tokio::spawn(catchup::poller(
            control.clone(),
            chain.state.clone(),
            wake.clone(),
            chain.tx.clone(),
            cfg.relay.is_client() && !cfg.relay.relay_servers.is_empty(),
        ));
        after(&chain.tx, INITIAL_SYNC_WAIT.as_secs_f64(), Input::InitialWait);
        {
            let st = store.lock().expect("store lock");
            println!(
                "chain: {} at height {} ({:.12}), {} validators, topic {}, serve_sync={}",
                if cons.voting { "validator" } else { "observer" },
                st.height(),
                hex(&st.tip_hash()),
                vset.n(),
                topic,
                c.serve_sync
            );
        }
        chain.run = Some(Running {
            vset,
            cons,
            store,
            topic,
            name: cfg.name.clone(),
            my_id,
            block_interval_s: c.block_interval_s,
            control,
            wake,
            sync_state: "idle",
            sync_stats: BTreeMap::new(),
            peer_heights: BTreeMap::new(),
            last_commit_at: Instant::now(),
            commits: 0,
            behind_hint: 0,
            syncing: false,
            held_timeouts: Vec::new(),
            started: false,
            start_gen: 0,
        });
        chain.refresh();
        (chain, rx)
    }

    /// Copy the /status `chain` snapshot into the shared state.
    fn refresh(&self) {
        let v = self.status();
        self.state.lock().expect("state lock").chain = v;
    }

    fn status(&self) -> Value {
        let Some(r) = &self.run else {
            return json!({"height": 0, "tip_hash": "", "sync_state": "idle", "sync_peers": [],
                          "voting": false, "round": 0, "step": "", "validators": 0,
                          "best_peer_height": null, "peer_heights": {},
                          "serve_sync": self.serve_sync, "commits": 0, "error": self.error});
        };
        let (height, tip) = {
            let st = r.store.lock().expect("store lock");
            (st.height(), hex(&st.tip_hash()))
        };
        let peers: Vec<Value> = r
            .sync_stats
            .iter()
            .map(|((p, kind), s)| {
                json!({"peer": p.to_string(), "kind": kind, "blocks": s.blocks, "bytes": s.bytes,
                       "from_height": s.from_height, "to_height": s.to_height})
            })
            .collect();
        json!({
            "height": height,
            "tip_hash": tip,
            "sync_state": r.sync_state,
            "sync_peers": peers,
            "voting": r.cons.voting,
            "round": r.cons.round,
            "step": r.cons.step,
            "validators": r.vset.n(),
            "best_peer_height": r.peer_heights.values().max(),
            "peer_heights": r.peer_heights,
            "serve_sync": self.serve_sync,
            "commits": r.commits,
            "error": self.error,
        })
    }

    fn reject(&self, protocol: &'static str, reason: &str) {
        self.state.lock().expect("state lock").reject(protocol, reason);
    }

    // ------------------------------------------------------------ gossip

    /// A gossipsub message: validate (the topic validator), report, then use it.
    pub fn on_gossip(&mut self, gs: &mut gossipsub::Behaviour, ev: gossipsub::Event) {
        let gossipsub::Event::Message { propagation_source, message_id, message } = ev else {
            return;
        };
        let Some(r) = &self.run else { return };
        if message.topic != r.topic.hash() {
            return;
        }
        let checked = gossip::decode_gossip(&message.data)
            .map_err(|e| ("malformed", e.to_string()))
            .and_then(|g| {
                match &g {
                    Gossip::Msg(Msg::Proposal(p)) => p.verify(&r.vset),
                    Gossip::Msg(Msg::Vote(v)) => v.verify(&r.vset),
                    Gossip::Commit(b, c) => c.verify(&r.vset, b),
                }
                .map_err(|e| (e.reason, e.to_string()))?;
                Ok(g)
            });
        let decoded = match checked {
            Ok(g) => {
                let _ = gs.report_message_validation_result(
                    &message_id,
                    &propagation_source,
                    MessageAcceptance::Accept,
                );
                g
            }
            Err((reason, detail)) => {
                println!("gossip from {propagation_source} rejected: {detail}");
                let _ = gs.report_message_validation_result(
                    &message_id,
                    &propagation_source,
                    MessageAcceptance::Reject,
                );
                self.reject("consensus", reason);
                return;
            }
        };
        match decoded {
            Gossip::Msg(Msg::Proposal(p)) => self.consensus(gs, |c, h| c.on_proposal(h, p)),
            Gossip::Msg(Msg::Vote(v)) => self.consensus(gs, |c, h| c.on_vote(h, v)),
            Gossip::Commit(b, c) => self.on_commit_msg(gs, b, c),
        }
        self.refresh();
    }

    /// Run one consensus input with the store as its host, then act on the outcome.
    fn consensus(
        &mut self,
        gs: &mut gossipsub::Behaviour,
        f: impl FnOnce(&mut Consensus, &mut dyn Host) -> Vec<Action>,
    ) {
        let Some(r) = &mut self.run else { return };
        let actions = {
            let mut store = r.store.lock().expect("store lock");
            let mut host = HostCtx { store: &mut store, name: &r.name };
            f(&mut r.cons, &mut host)
        };
        self.act(gs, actions);
    }

    fn publish(&self, gs: &mut gossipsub::Behaviour, data: Vec<u8>) {
        let Some(r) = &self.run else { return };
        if let Err(e) = gs.publish(r.topic.clone(), data) {
            if !matches!(e, gossipsub::PublishError::NoPeersSubscribedToTopic) {
                println!("chain: publish failed: {e}");
            }
        }
    }

    fn act(&mut self, gs: &mut gossipsub::Behaviour, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Broadcast(msg) => self.publish(gs, gossip::encode_msg(&msg)),
                Action::ScheduleTimeout { step, height, round, delay } => {
                    after(&self.tx, delay, Input::Timeout { step, height, round })
                }
                Action::Decide(block, cert) => self.commit(gs, block, cert, "consensus"),
                Action::Rejected { reason, detail } => {
                    println!("consensus message rejected: {reason} {detail}");
                    self.reject("consensus", reason);
                }
                Action::Behind(height) => {
                    if let Some(r) = &mut self.run {
                        if height > r.behind_hint {
                            println!("chain: a valid message for height {height}: behind");
                            r.behind_hint = height;
                        }
                        r.wake.notify_one();
                    }
                }
            }
        }
    }

    fn on_commit_msg(&mut self, gs: &mut gossipsub::Behaviour, block: Block, cert: CommitCert) {
        let Some(r) = &self.run else { return };
        let (height, tip) = {
            let st = r.store.lock().expect("store lock");
            (st.height(), st.tip_hash())
        };
        if block.height <= height {
            return;
        }
        if block.height > height + 1 {
            r.wake.notify_one();
            return;
        }
        if let Err(e) = verify_chain_link(&r.vset, &tip, &block, &cert) {
            self.reject("consensus", e.reason);
            return;
        }
        self.commit(gs, block, cert, "gossip");
    }

    /// Store a decided block, announce it, and start the next height.
    fn commit(&mut self, gs: &mut gossipsub::Behaviour, block: Block, cert: CommitCert, via: &str) {
        let Some(r) = &mut self.run else { return };
        {
            let mut st = r.store.lock().expect("store lock");
            if block.height != st.height() + 1 {
                return;
            }
            if let Err(e) = st.append(block.clone(), cert.clone()) {
                eprintln!("chain: {e}");
                return;
            }
            st.prune_signatures(block.height - 16);
        }
        r.commits += 1;
        r.last_commit_at = Instant::now();
        self.state.lock().expect("state lock").events.emit(
            "block_committed",
            json!({"height": block.height, "hash": hex(&block.hash()), "proposer": block.proposer,
                   "round": cert.round, "via": via}),
        );
        let mine = r.cons.voting && via == "consensus" && block.proposer == r.my_id;
        r.cons.decided = true;
        let delay = if r.cons.voting { r.block_interval_s } else { 0.0 };
        r.start_gen += 1;
        let gen = r.start_gen;
        if mine {
            // lets followers that missed votes learn the decision; only the proposer sends it
            self.publish(gs, gossip::encode_commit(&block, &cert));
        }
        after(&self.tx, delay, Input::StartNext { gen });
    }

    /// Enter the height after the store's tip (with the lock and its polka saved for it,
    /// if any).
    fn start_next_height(&mut self, gs: &mut gossipsub::Behaviour) {
        let Some(r) = &self.run else { return };
        let (next, tip, lock) = {
            let st = r.store.lock().expect("store lock");
            (st.height() + 1, st.tip_hash(), st.load_lock(st.height() + 1))
        };
        self.consensus(gs, |c, h| c.start_height(h, next, tip, lock));
    }

    fn begin(&mut self, gs: &mut gossipsub::Behaviour) {
        let Some(r) = &mut self.run else { return };
        if r.started || r.syncing {
            return;
        }
        r.started = true;
        if r.cons.decided {
            self.start_next_height(gs);
        }
    }

    // ------------------------------------------------------------ inputs

    pub fn on_input(&mut self, gs: &mut gossipsub::Behaviour, input: Input) {
        if self.run.is_none() {
            return;
        }
        match input {
            Input::Timeout { step, height, round } => {
                let r = self.run.as_mut().expect("running");
                if r.syncing {
                    r.held_timeouts.push(Input::Timeout { step, height, round });
                } else {
                    self.consensus(gs, |c, h| c.on_timeout(h, step, height, round));
                }
            }
            Input::StartNext { gen } => {
                let r = self.run.as_ref().expect("running");
                let next = r.store.lock().expect("store lock").height() + 1;
                if gen == r.start_gen && !r.syncing && (r.cons.decided || r.cons.height != next) {
                    self.start_next_height(gs);
                }
            }
            Input::InitialWait => self.begin(gs),
            Input::Poll { heights, connected } => self.on_poll(gs, heights, connected),
            Input::SyncDone(outcome) => self.on_sync_done(gs, outcome),
        }
        self.refresh();
    }

    fn on_poll(
        &mut self,
        gs: &mut gossipsub::Behaviour,
        heights: Vec<(PeerId, i64)>,
        connected: Vec<PeerId>,
    ) {
        let r = self.run.as_mut().expect("running");
        let live: Vec<String> = connected.iter().map(|p| p.to_string()).collect();
        r.peer_heights.retain(|p, _| live.contains(p));
        for (p, h) in &heights {
            r.peer_heights.insert(p.to_string(), *h);
        }
        let Some(best) = heights.iter().map(|(_, h)| *h).max() else {
            if !r.syncing {
                r.sync_state = "idle";
            }
            if !connected.is_empty() {
                self.begin(gs); // connected, but nobody serves sync
            }
            return;
        };
        if r.syncing {
            return;
        }
        let height = r.store.lock().expect("store lock").height();
        let stalled = r.last_commit_at.elapsed() > STALL;
        let behind = best > height + 1 || (best > height && stalled);
        if !behind {
            r.sync_state = if best <= height + 1 { "synced" } else { "syncing" };
            self.begin(gs);
            return;
        }
        let peers: Vec<(PeerId, i64)> = heights.into_iter().filter(|(_, h)| *h > height).collect();
        println!("sync: heights {}..{best} from {} peer(s)", height + 1, peers.len());
        r.syncing = true;
        r.sync_state = "syncing";
        let ctx = Ctx {
            control: r.control.clone(),
            store: r.store.clone(),
            vset: r.vset.clone(),
            state: self.state.clone(),
        };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let outcome = catchup::session(ctx, peers, height + 1, best).await;
            let _ = tx.send(Input::SyncDone(outcome));
        });
    }

    fn on_sync_done(&mut self, gs: &mut gossipsub::Behaviour, o: Outcome) {
        let r = self.run.as_mut().expect("running");
        r.syncing = false;
        for (key, s) in o.stats {
            let e = r.sync_stats.entry(key).or_default();
            e.blocks += s.blocks;
            e.bytes += s.bytes;
            e.from_height = match (e.from_height, s.from_height) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            e.to_height = match (e.to_height, s.to_height) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        let best = r.peer_heights.values().max().copied().unwrap_or(0);
        r.sync_state = if best <= o.end + 1 { "synced" } else { "syncing" };
        if o.end >= o.start {
            r.last_commit_at = Instant::now();
            println!(
                "sync: applied {}..{} ({} blocks) in {:.2}s",
                o.start,
                o.end,
                o.end - o.start + 1,
                o.duration_s
            );
            self.state.lock().expect("state lock").events.emit(
                "sync_completed",
                json!({"from_height": o.start, "to_height": o.end, "peers": o.peers,
                       "duration_s": round(o.duration_s, 3)}),
            );
        }
        // back to following gossip from the new tip
        let r = self.run.as_mut().expect("running");
        r.started = true;
        r.start_gen += 1;
        if o.end >= r.cons.height || r.cons.decided {
            self.start_next_height(gs);
        }
        self.release_held_timeouts();
        if let Some(r) = &self.run {
            r.wake.notify_one(); // look again at once: the others moved on meanwhile
        }
    }

    /// A timeout that falls inside a sync session is delivered after it, not dropped
    /// (service.py `_timer`): a session that applies nothing leaves consensus where it was,
    /// and a dropped round timer left it there for good (every validator at one round and
    /// step, no timer armed: the partition-heal stall under CPU load). They go back through
    /// the input channel, after the new height (if any) has started; a stale one is ignored
    /// by on_timeout, which checks height and round, and one that meets the next session is
    /// held again.
    fn release_held_timeouts(&mut self) {
        let Some(r) = &mut self.run else { return };
        for input in std::mem::take(&mut r.held_timeouts) {
            let _ = self.tx.send(input);
        }
    }
}

/// Answer inbound /sentrynet/sync/1.0.0 streams, each on its own task.
async fn serve(
    mut incoming: libp2p_stream::IncomingStreams,
    store: Arc<Mutex<Store>>,
    state: Arc<Mutex<State>>,
) {
    use futures::StreamExt;
    while let Some((peer, stream)) = incoming.next().await {
        let store = store.clone();
        let state = state.clone();
        tokio::spawn(async move {
            sync::serve_stream(stream, store, move |reason, detail| {
                println!("sync request from {peer} rejected: {reason}: {detail}");
                state.lock().expect("state lock").reject("sync", reason);
            })
            .await;
        });
    }
}
