//! The sync client: the status poller (every connected peer's tip, every SYNC_POLL or when
//! woken) and a catch-up session that fetches the missing heights in chunks from every
//! peer that has them, verifies each block against its certificate and our tip, and
//! appends it. Both run as tasks and report to the chain service over its input channel.
//! Simpler than node/chain/sync.py's: no hedged duplicate requests; the wire is the same.
//!
//! Before its first poll the poller waits for the peer set to settle, as our node does
//! (node/chain/service.py `_settle_peers`): a node that restarts behind NAT first has only
//! the peers of its own network, and a catch-up started at once takes all history from
//! them, never from the peers behind the other NAT that discovery and circuits bring a
//! few seconds later. It waits until a reservation is held (relay clients) and the count
//! of connected peers has not grown for SETTLE_QUIET, at most SETTLE_MAX.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use futures::io::BufReader;
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, OpenStreamError};
use serde_json::json;
use tokio::sync::{mpsc::UnboundedSender, Notify};

use super::block::{verify_chain_link, Block, CommitCert, ValidatorSet};
use super::service::Input;
use super::store::Store;
use super::sync::{self, parse_blocks, request, SyncError, CHUNK, PROTOCOL};
use crate::state::State;

const SYNC_POLL: Duration = Duration::from_secs(2);
const NO_SYNC_BACKOFF: Duration = Duration::from_secs(30);
const MAX_STRIKES: u32 = 2;
const SESSION_LIMIT: Duration = Duration::from_secs(120);
const SETTLE_QUIET: Duration = Duration::from_secs(6); // longer than a peer-exchange round
const SETTLE_MAX: Duration = Duration::from_secs(30);
const FIRST_ROUND: Duration = Duration::from_secs(2); // how long a chunk waits for its peer

/// What one peer served over one connection kind (/status chain.sync_peers).
#[derive(Clone, Debug, Default)]
pub struct PeerStats {
    pub blocks: u64,
    pub bytes: u64,
    pub from_height: Option<i64>,
    pub to_height: Option<i64>,
}

impl PeerStats {
    pub fn add(&mut self, a: i64, b: i64, size: usize) {
        self.blocks += (b - a + 1) as u64;
        self.bytes += size as u64;
        self.from_height = Some(self.from_height.map_or(a, |f| f.min(a)));
        self.to_height = Some(self.to_height.map_or(b, |t| t.max(b)));
    }
}

fn protocol() -> StreamProtocol {
    StreamProtocol::new(PROTOCOL)
}

/// "direct" when any direct connection to `peer` exists, else "relayed".
pub fn kind_of(state: &Arc<Mutex<State>>, peer: &PeerId) -> &'static str {
    let st = state.lock().expect("state lock");
    if st.connected(peer, Some(false)) {
        "direct"
    } else {
        "relayed"
    }
}

fn connected_peers(state: &Arc<Mutex<State>>) -> Vec<PeerId> {
    let st = state.lock().expect("state lock");
    let set: HashSet<PeerId> = st.conns.values().map(|c| c.peer).collect();
    let mut v: Vec<PeerId> = set.into_iter().collect();
    v.sort();
    v
}

async fn open(control: &mut Control, peer: PeerId) -> Result<BufReader<Stream>, OpenStreamError> {
    let s = tokio::time::timeout(sync::STATUS_TIMEOUT, control.open_stream(peer, protocol()))
        .await
        .map_err(|_| OpenStreamError::Io(std::io::ErrorKind::TimedOut.into()))??;
    Ok(BufReader::new(s))
}

/// One peer's tip height, None if it does not answer; Err(()) if it lacks the protocol.
async fn status_of(mut control: Control, peer: PeerId) -> Result<Option<i64>, ()> {
    let mut io = match open(&mut control, peer).await {
        Ok(io) => io,
        Err(OpenStreamError::UnsupportedProtocol(_)) => return Err(()),
        Err(_) => return Ok(None),
    };
    let answer = request(&mut io, &json!({"type": "status"}), sync::STATUS_TIMEOUT).await;
    let _ = futures::AsyncWriteExt::close(io.get_mut()).await;
    match answer {
        Ok((resp, _)) => Ok(resp.get("height").and_then(|h| h.as_i64()).filter(|h| *h >= 0)),
        Err(_) => Ok(None),
    }
}

/// Wait until the peer set stops growing (see the module doc); says why it stopped.
async fn settle(state: &Arc<Mutex<State>>, wants_reservation: bool) {
    let t0 = Instant::now();
    let mut count = connected_peers(state).len();
    let mut quiet_from = t0;
    let mut reserved = !wants_reservation;
    let why = loop {
        let n = connected_peers(state).len();
        if n > count {
            quiet_from = Instant::now();
        }
        count = n;
        if !reserved {
            let st = state.lock().expect("state lock");
            if st.reservations.values().any(|r| r.accepted_at.is_some()) {
                reserved = true;
                quiet_from = quiet_from.max(Instant::now());
            }
        }
        if reserved && quiet_from.elapsed() >= SETTLE_QUIET {
            break "peer set settled";
        }
        if t0.elapsed() >= SETTLE_MAX {
            break if reserved { "settle limit reached" } else { "settle limit, no reservation" };
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!("sync: {why} after {:.1}s: {count} peer(s) connected", t0.elapsed().as_secs_f64());
}

/// Poll connected peers' tips forever (after the peer set settled); each round ends with
/// Input::Poll.
pub async fn poller(
    control: Control,
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
    tx: UnboundedSender<Input>,
    wants_reservation: bool,
) {
    settle(&state, wants_reservation).await;
    let mut no_sync: HashMap<PeerId, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SYNC_POLL) => {}
            _ = wake.notified() => {}
        }
        let peers = connected_peers(&state);
        let asked: Vec<PeerId> = peers
            .iter()
            .filter(|p| no_sync.get(p).is_none_or(|t| t.elapsed() > NO_SYNC_BACKOFF))
            .copied()
            .collect();
        let answers = join_all(asked.iter().map(|p| status_of(control.clone(), *p))).await;
        let mut heights = Vec::new();
        for (peer, a) in asked.iter().zip(answers) {
            match a {
                Ok(Some(h)) => heights.push((*peer, h)),
                Ok(None) => {}
                Err(()) => {
                    no_sync.insert(*peer, Instant::now());
                }
            }
        }
        if tx.send(Input::Poll { heights, connected: peers }).is_err() {
            return;
        }
    }
}

struct Chunk {
    start: i64,
    end: i64,
    /// First round: kept for this peer for FIRST_ROUND, so every peer of the session
    /// serves a chunk (see `session`).
    reserved: Option<PeerId>,
    inflight: bool,
    failed_on: HashSet<PeerId>,
    done: Option<(PeerId, Vec<(Block, CommitCert)>, usize)>,
}

struct Session {
    chunks: Vec<Chunk>,
    next: usize,
    alive: HashSet<PeerId>,
    used: BTreeMap<PeerId, &'static str>,
    stats: BTreeMap<(PeerId, &'static str), PeerStats>,
}

/// What a finished session reports back.
pub struct Outcome {
    pub start: i64,
    pub end: i64,
    pub peers: Vec<String>,
    pub duration_s: f64,
    pub stats: Vec<((PeerId, &'static str), PeerStats)>,
}

pub struct Ctx {
    pub control: Control,
    pub store: Arc<Mutex<Store>>,
    pub vset: ValidatorSet,
    pub state: Arc<Mutex<State>>,
}

/// Fetch heights start..=target from `peers` (peer, its height) and apply them in order.
///
/// Every peer gets one chunk of the first round, kept for it for FIRST_ROUND, as our node
/// spreads its chunks (node/chain/sync.py `spread_chunk`): a rust node applies blocks so
/// fast that the two own-network peers, whose streams open first, would otherwise take
/// every chunk, and history would never cross the NAT although peers behind it are there.
pub async fn session(ctx: Ctx, peers: Vec<(PeerId, i64)>, start: i64, target: i64) -> Outcome {
    let t0 = Instant::now();
    let n = peers.len().max(1) as i64;
    let span = target - start + 1;
    let size = CHUNK.min(((span + n - 1) / n).max(1));
    let chunks = (0..)
        .map(|i| start + i * size)
        .take_while(|a| *a <= target)
        .enumerate()
        .map(|(i, a)| Chunk {
            start: a,
            end: (a + size - 1).min(target),
            reserved: peers
                .get(i)
                .filter(|(_, h)| *h >= (a + size - 1).min(target))
                .map(|(p, _)| *p),
            inflight: false,
            failed_on: HashSet::new(),
            done: None,
        })
        .collect();
    let sess = Mutex::new(Session {
        chunks,
        next: 0,
        alive: peers.iter().map(|(p, _)| *p).collect(),
        used: BTreeMap::new(),
        stats: BTreeMap::new(),
    });
    let work = join_all(peers.iter().map(|(p, h)| worker(&ctx, &sess, *p, *h, t0)));
    let _ = tokio::time::timeout(SESSION_LIMIT, work).await;
    let s = sess.into_inner().expect("session lock");
    let end = ctx.store.lock().expect("store lock").height();
    Outcome {
        start,
        end,
        peers: s.used.keys().map(|p| p.to_string()).collect(),
        duration_s: t0.elapsed().as_secs_f64(),
        stats: s.stats.into_iter().collect(),
    }
}

async fn worker(ctx: &Ctx, sess: &Mutex<Session>, peer: PeerId, height: i64, t0: Instant) {
    let mut control = ctx.control.clone();
    let Ok(mut io) = open(&mut control, peer).await else {
        sess.lock().expect("session lock").alive.remove(&peer);
        return;
    };
    let kind = kind_of(&ctx.state, &peer);
    let mut strikes = 0;
    loop {
        let pick = {
            let mut s = sess.lock().expect("session lock");
            if !s.alive.contains(&peer) || s.chunks.iter().all(|c| c.done.is_some()) {
                return;
            }
            let first_round = t0.elapsed() < FIRST_ROUND;
            let free = s.chunks.iter_mut().find(|c| {
                c.done.is_none()
                    && !c.inflight
                    && c.end <= height
                    && !c.failed_on.contains(&peer)
                    && !(first_round && c.reserved.is_some_and(|r| r != peer))
            });
            match free {
                Some(c) => {
                    c.inflight = true;
                    Some((c.start, c.end))
                }
                None => {
                    let waiting = s.chunks.iter().any(|c| {
                        c.done.is_none() && c.end <= height && !c.failed_on.contains(&peer)
                    });
                    if !waiting {
                        return; // nothing left that we could serve
                    }
                    None
                }
            }
        };
        let Some((a, b)) = pick else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let req = json!({"type": "blocks", "from": a, "to": b});
        let got = request(&mut io, &req, sync::REQUEST_TIMEOUT)
            .await
            .and_then(|(resp, size)| Ok((parse_blocks(&resp, a, b)?, size)));
        let mut s = sess.lock().expect("session lock");
        let idx = s.chunks.iter().position(|c| c.start == a).expect("chunk");
        s.chunks[idx].inflight = false;
        match got {
            Ok((pairs, size)) => {
                s.chunks[idx].done = Some((peer, pairs, size));
                apply_ready(ctx, &mut s, kind);
            }
            Err(e) => {
                if let SyncError::Bad(detail) = &e {
                    let mut st = ctx.state.lock().expect("state lock");
                    eprintln!("sync: chunk {a}-{b} from {peer} rejected: {detail}");
                    st.reject("sync", "bad_response");
                }
                s.chunks[idx].failed_on.insert(peer);
                strikes += 1;
                let lost = matches!(e, SyncError::Lost(_) | SyncError::Timeout);
                if strikes >= MAX_STRIKES || lost {
                    s.alive.remove(&peer);
                    return;
                }
            }
        }
    }
}

/// Apply finished chunks in height order; a block that fails verification bans its peer
/// and puts the rest of its chunk back.
fn apply_ready(ctx: &Ctx, s: &mut Session, kind: &'static str) {
    while s.next < s.chunks.len() {
        let i = s.next;
        let Some((peer, pairs, size)) = s.chunks[i].done.take() else { return };
        let (a, b) = (s.chunks[i].start, s.chunks[i].end);
        let mut store = ctx.store.lock().expect("store lock");
        let mut bad = None;
        for (block, cert) in pairs {
            if block.height != store.height() + 1 {
                continue; // already have it (gossip meanwhile)
            }
            if let Err(e) = verify_chain_link(&ctx.vset, &store.tip_hash(), &block, &cert) {
                bad = Some(e);
                break;
            }
            if let Err(e) = store.append(block, cert) {
                eprintln!("sync: store: {e}");
                return;
            }
        }
        let applied = store.height();
        drop(store);
        if let Some(e) = bad {
            eprintln!("sync: from {peer}: {e}");
            ctx.state.lock().expect("state lock").reject("sync", e.reason);
            let c = &mut s.chunks[i];
            c.start = applied + 1;
            c.failed_on.insert(peer);
            s.alive.remove(&peer);
            return;
        }
        s.chunks[i].done = Some((peer, Vec::new(), 0));
        s.next += 1;
        s.used.insert(peer, kind);
        s.stats.entry((peer, kind)).or_default().add(a, b, size);
    }
}
