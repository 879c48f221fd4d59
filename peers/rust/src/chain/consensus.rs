//! Tendermint-like consensus for one height at a time, as a pure state machine: the rules
//! of node/chain/consensus.py, rule for rule (proposer rotation, locks, polkas, f+1 round
//! skip, timeouts, the round stall timer that re-sends our own messages, proof-of-lock
//! gossip). Inputs are proposals, votes and timeouts; outputs are actions; no I/O and no
//! clock reads.
//!
//! The polka (proof-of-lock) travels with the block it justifies: a proposer re-proposing
//! its valid block from round vr re-broadcasts the prevotes of vr, and so does every node
//! with a valid block when a round times out. Without this (consensus.py's docstring), a
//! validator that locked on a polka nobody else saw (the prevote that completed it came
//! from a validator killed right after sending it to this one only) prevotes nil for every
//! new block, and the others never accept its re-proposal: with one validator of four
//! dead, nothing decides again. Tendermint's reactor does the same by gossiping the POL
//! round's votes.
//! Validators vote; full nodes and sentries run it as observers and decide on the same
//! certificates.

use std::collections::{BTreeMap, HashMap, HashSet};

use libp2p::identity::Keypair;

use super::block::{
    Block, CommitCert, Hash, Proposal, ValidatorSet, Vote, MAX_PAYLOAD, PRECOMMIT, PREVOTE,
};
use super::store::Lock;

pub const PROPOSE: &str = "propose";
pub const STEP_PREVOTE: &str = "prevote";
pub const STEP_PRECOMMIT: &str = "precommit";
/// The stall timer: a round that made no decision in time is abandoned.
pub const ROUND: &str = "round";
const MAX_ROUND_AHEAD: i64 = 64;
const MAX_FUTURE_BUFFER: usize = 4096;

#[derive(Clone, Debug)]
pub enum Msg {
    Proposal(Proposal),
    Vote(Vote),
}

impl Msg {
    fn height(&self) -> i64 {
        match self {
            Msg::Proposal(p) => p.height,
            Msg::Vote(v) => v.height,
        }
    }
}

#[derive(Debug)]
pub enum Action {
    Broadcast(Msg),
    ScheduleTimeout {
        step: &'static str,
        height: i64,
        round: i64,
        delay: f64,
    },
    Decide(Block, CommitCert),
    Rejected {
        reason: &'static str,
        detail: String,
    },
    /// A valid message for a height beyond the next one: we are behind, sync.
    Behind(i64),
}

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub propose: f64,
    pub prevote: f64,
    pub precommit: f64,
    /// added per round so slow networks eventually meet
    pub delta: f64,
}

impl Timeouts {
    /// service.py `_timeouts_for`: scaled by the block interval, never below 1 s.
    pub fn for_interval(block_interval_s: f64) -> Timeouts {
        let base = block_interval_s.max(1.0);
        Timeouts { propose: 2.0 * base, prevote: base, precommit: base, delta: 0.5 * base }
    }

    pub fn of(&self, step: &str, round: i64) -> f64 {
        let base = match step {
            PROPOSE => self.propose,
            STEP_PREVOTE => self.prevote,
            _ => self.precommit,
        };
        base + self.delta * round as f64
    }

    /// Longest a round may take before it is abandoned.
    pub fn round(&self, round: i64) -> f64 {
        2.0 * (self.of(PROPOSE, round) + self.of(STEP_PREVOTE, round))
            + self.of(STEP_PRECOMMIT, round)
    }
}

/// What the service provides: the clock, the filler, the signing record, the lock store.
pub trait Host {
    fn now_ms(&mut self) -> i64;
    fn payload(&mut self, height: i64) -> Vec<u8>;
    /// True when signing (height, round, kind, block) is safe (first time, or the same).
    fn can_sign(&mut self, height: i64, round: i64, kind: &str, block: Option<Hash>) -> bool;
    /// Keep the lock with `polka`, the prevotes that made it (restored by `start_height`).
    fn save_lock(&mut self, height: i64, round: i64, block: Option<&Block>, polka: &[Vote]);
}

pub struct Consensus {
    pub vset: ValidatorSet,
    pub my_id: Option<String>,
    key: Option<Keypair>,
    pub voting: bool,
    pub timeouts: Timeouts,
    pub height: i64,
    pub prev_hash: Hash,
    pub round: i64,
    pub step: &'static str,
    pub decided: bool,
    locked_round: i64,
    locked_block: Option<Block>,
    valid_round: i64,
    valid_block: Option<Block>,
    proposals: BTreeMap<i64, Proposal>,
    blocks: HashMap<Hash, Block>,
    /// (round, type) -> validator -> vote; ordered so the decide rule is deterministic
    votes: BTreeMap<(i64, &'static str), BTreeMap<String, Vote>>,
    once: HashSet<(&'static str, i64)>,
    future: Vec<Msg>,
}

type Out = Vec<Action>;

impl Consensus {
    pub fn new(
        vset: ValidatorSet,
        my_id: Option<String>,
        key: Option<Keypair>,
        timeouts: Timeouts,
    ) -> Self {
        let voting = my_id.as_ref().is_some_and(|id| vset.is_validator(id)) && key.is_some();
        Consensus {
            vset,
            my_id,
            key,
            voting,
            timeouts,
            height: 0,
            prev_hash: [0; 32],
            round: 0,
            step: PROPOSE,
            decided: true,
            locked_round: -1,
            locked_block: None,
            valid_round: -1,
            valid_block: None,
            proposals: BTreeMap::new(),
            blocks: HashMap::new(),
            votes: BTreeMap::new(),
            once: HashSet::new(),
            future: Vec::new(),
        }
    }

    // ------------------------------------------------------------ inputs

    /// Enter `height` on top of `prev_hash` (the committed tip) at round 0, with the lock
    /// (and the polka that made it) a restarted validator saved.
    pub fn start_height(
        &mut self,
        h: &mut dyn Host,
        height: i64,
        prev_hash: Hash,
        locked: Option<Lock>,
    ) -> Out {
        self.height = height;
        self.prev_hash = prev_hash;
        self.round = 0;
        self.step = PROPOSE;
        self.decided = false;
        self.locked_round = -1;
        self.locked_block = None;
        self.valid_round = -1;
        self.valid_block = None;
        self.proposals.clear();
        self.blocks.clear();
        self.votes.clear();
        self.once.clear();
        if let Some(lock) = locked {
            self.locked_round = lock.round;
            self.locked_block = Some(lock.block.clone());
            self.valid_round = lock.round;
            self.valid_block = Some(lock.block);
            self.restore_polka(lock.polka);
        }
        let mut out = self.start_round(h, 0);
        let future = std::mem::take(&mut self.future);
        for msg in future {
            let mh = msg.height();
            if mh == height {
                out.extend(self.dispatch(h, msg));
            } else if mh > height {
                self.future.push(msg);
            }
        }
        out.extend(self.run(h));
        out
    }

    pub fn on_proposal(&mut self, h: &mut dyn Host, p: Proposal) -> Out {
        match self.gate(p.height) {
            Gate::Now => {}
            Gate::Buffer => return self.buffer(Msg::Proposal(p)),
            Gate::Return(out) => return out,
        }
        if let Err(e) = p.verify(&self.vset) {
            return vec![Action::Rejected { reason: e.reason, detail: e.to_string() }];
        }
        if p.round > self.round + MAX_ROUND_AHEAD {
            return vec![rejected("round_too_far", format!("round {}", p.round))];
        }
        if let Some(prior) = self.proposals.get(&p.round) {
            if prior.block.hash() == p.block.hash() && prior.valid_round == p.valid_round {
                return vec![];
            }
            return vec![rejected(
                "equivocation",
                format!("two proposals from {} at round {}", p.proposer, p.round),
            )];
        }
        self.blocks.entry(p.block.hash()).or_insert_with(|| p.block.clone());
        self.proposals.insert(p.round, p);
        self.run(h)
    }

    pub fn on_vote(&mut self, h: &mut dyn Host, v: Vote) -> Out {
        match self.gate(v.height) {
            Gate::Now => {}
            Gate::Buffer => return self.buffer(Msg::Vote(v)),
            Gate::Return(out) => return out,
        }
        if let Err(e) = v.verify(&self.vset) {
            return vec![Action::Rejected { reason: e.reason, detail: e.to_string() }];
        }
        if v.round > self.round + MAX_ROUND_AHEAD {
            return vec![rejected("round_too_far", format!("round {}", v.round))];
        }
        let bx = self.votes.entry((v.round, v.vtype)).or_default();
        if let Some(prior) = bx.get(&v.validator) {
            if prior.block_hash == v.block_hash {
                return vec![];
            }
            return vec![rejected(
                "equivocation",
                format!(
                    "{} sent two {}s at height {} round {}",
                    v.validator, v.vtype, v.height, v.round
                ),
            )];
        }
        bx.insert(v.validator.clone(), v);
        self.run(h)
    }

    pub fn on_timeout(&mut self, h: &mut dyn Host, step: &str, height: i64, round: i64) -> Out {
        if self.decided || height != self.height || round != self.round {
            return vec![];
        }
        let mut out = Vec::new();
        if step == PROPOSE && self.step == PROPOSE {
            out.extend(self.prevote(h, None));
        } else if step == STEP_PREVOTE && self.step == STEP_PREVOTE {
            out.extend(self.precommit(h, None));
        } else if step == STEP_PRECOMMIT {
            out.extend(self.start_round(h, round + 1));
        } else if step == ROUND {
            // gossip does not retransmit: say ours again (fresh gossip ids) and move on
            if let Some(p) = self.proposals.get(&round) {
                if Some(&p.proposer) == self.my_id.as_ref() {
                    out.push(Action::Broadcast(Msg::Proposal(p.clone())));
                }
            }
            let me = self.my_id.clone().unwrap_or_default();
            for vt in [PREVOTE, PRECOMMIT] {
                if let Some(mine) = self.votes.get(&(round, vt)).and_then(|b| b.get(&me)) {
                    out.push(Action::Broadcast(Msg::Vote(mine.clone())));
                }
            }
            // and the polka behind our valid block: the others may never have seen it
            if self.valid_block.is_some() {
                out.extend(self.broadcast_polka(self.valid_round));
            }
            out.extend(self.start_round(h, round + 1));
        } else {
            return vec![];
        }
        out.extend(self.run(h));
        out
    }

    // ------------------------------------------------------------ internals

    fn gate(&self, height: i64) -> Gate {
        if !self.decided && height == self.height {
            return Gate::Now;
        }
        if height == self.height + 1 || (self.decided && height == self.height) {
            return Gate::Buffer;
        }
        if height > self.height + 1 {
            return Gate::Return(vec![Action::Behind(height)]);
        }
        Gate::Return(vec![]) // an old height: late votes are normal
    }

    fn buffer(&mut self, msg: Msg) -> Out {
        if self.future.len() < MAX_FUTURE_BUFFER {
            self.future.push(msg);
        }
        vec![]
    }

    fn dispatch(&mut self, h: &mut dyn Host, msg: Msg) -> Out {
        match msg {
            Msg::Proposal(p) => self.on_proposal(h, p),
            Msg::Vote(v) => self.on_vote(h, v),
        }
    }

    fn valid(&self, block: &Block) -> bool {
        block.height == self.height
            && block.prev_hash == self.prev_hash
            && self.vset.is_validator(&block.proposer)
            && block.payload.len() <= MAX_PAYLOAD
    }

    /// block hash -> count, in first-seen (validator order) order.
    fn tally(&self, round: i64, vt: &'static str) -> Vec<(Option<Hash>, usize)> {
        let mut counts: Vec<(Option<Hash>, usize)> = Vec::new();
        if let Some(bx) = self.votes.get(&(round, vt)) {
            for v in bx.values() {
                match counts.iter_mut().find(|(b, _)| *b == v.block_hash) {
                    Some(c) => c.1 += 1,
                    None => counts.push((v.block_hash, 1)),
                }
            }
        }
        counts
    }

    fn count(&self, round: i64, vt: &'static str) -> usize {
        self.votes.get(&(round, vt)).map_or(0, |b| b.len())
    }

    fn polka(&self, round: i64, block: Option<Hash>) -> bool {
        let n =
            self.tally(round, PREVOTE).into_iter().find(|(b, _)| *b == block).map_or(0, |c| c.1);
        n >= self.vset.quorum()
    }

    /// The prevotes of `round` for our valid block: the proof that justifies proposing (or
    /// having locked on) it, in validator order.
    fn polka_votes(&self, round: i64) -> Vec<Vote> {
        let Some(digest) = self.valid_block.as_ref().map(Block::hash) else { return vec![] };
        let mut votes: Vec<Vote> = self
            .votes
            .get(&(round, PREVOTE))
            .map(|bx| bx.values().filter(|v| v.block_hash == Some(digest)).cloned().collect())
            .unwrap_or_default();
        votes.sort_by_key(|v| self.vset.index[&v.validator]);
        votes
    }

    fn broadcast_polka(&self, round: i64) -> Out {
        self.polka_votes(round).into_iter().map(|v| Action::Broadcast(Msg::Vote(v))).collect()
    }

    /// Put a saved lock's polka back into the vote table: only prevotes of this height and
    /// the locked round that verify (the file is ours, but not trusted further than that).
    fn restore_polka(&mut self, polka: Vec<Vote>) {
        for v in polka {
            if v.height != self.height || v.round != self.locked_round || v.vtype != PREVOTE {
                continue;
            }
            if v.verify(&self.vset).is_err() {
                continue;
            }
            let bx = self.votes.entry((v.round, PREVOTE)).or_default();
            bx.insert(v.validator.clone(), v);
        }
    }

    fn first(&mut self, rule: &'static str, round: i64) -> bool {
        self.once.insert((rule, round))
    }

    fn start_round(&mut self, h: &mut dyn Host, round: i64) -> Out {
        self.round = round;
        self.step = PROPOSE;
        if !self.voting {
            return vec![];
        }
        let me = self.my_id.clone().expect("voting has an id");
        let mut out = Vec::new();
        if self.vset.proposer(self.height, round) == me {
            let (block, vr) = match &self.valid_block {
                Some(b) => (b.clone(), self.valid_round),
                None => (
                    Block {
                        height: self.height,
                        prev_hash: self.prev_hash,
                        proposer: me.clone(),
                        time_ms: h.now_ms(),
                        payload: h.payload(self.height),
                    },
                    -1,
                ),
            };
            let digest = block.hash();
            if h.can_sign(self.height, round, "proposal", Some(digest)) {
                let key = self.key.as_ref().expect("voting has a key");
                let p = Proposal::make(&self.vset, key, &me, round, block.clone(), vr);
                self.proposals.insert(round, p.clone());
                self.blocks.entry(digest).or_insert(block);
                if vr >= 0 {
                    // the polka that justifies a re-proposal goes with it (before it)
                    out.extend(self.broadcast_polka(vr));
                }
                out.push(Action::Broadcast(Msg::Proposal(p)));
            }
        }
        out.push(Action::ScheduleTimeout {
            step: PROPOSE,
            height: self.height,
            round,
            delay: self.timeouts.of(PROPOSE, round),
        });
        out.push(Action::ScheduleTimeout {
            step: ROUND,
            height: self.height,
            round,
            delay: self.timeouts.round(round),
        });
        out
    }

    fn vote(&mut self, h: &mut dyn Host, vt: &'static str, block: Option<Hash>) -> Out {
        if !self.voting {
            return vec![];
        }
        if !h.can_sign(self.height, self.round, vt, block) {
            return vec![]; // we signed something else for this step before a restart
        }
        let me = self.my_id.clone().expect("voting has an id");
        let key = self.key.as_ref().expect("voting has a key");
        let v = Vote::make(&self.vset, key, &me, vt, self.height, self.round, block);
        self.votes.entry((self.round, vt)).or_default().insert(me, v.clone());
        vec![Action::Broadcast(Msg::Vote(v))]
    }

    fn prevote(&mut self, h: &mut dyn Host, block: Option<Hash>) -> Out {
        self.step = STEP_PREVOTE;
        self.vote(h, PREVOTE, block)
    }

    fn precommit(&mut self, h: &mut dyn Host, block: Option<Hash>) -> Out {
        self.step = STEP_PRECOMMIT;
        self.vote(h, PRECOMMIT, block)
    }

    /// Apply every enabled rule until none fires (each firing changes the step, the round,
    /// a once-flag, or decides, so this terminates).
    fn run(&mut self, h: &mut dyn Host) -> Out {
        let mut out = Vec::new();
        while !self.decided {
            let fired = self.rule_decide(&mut out)
                || self.rule_skip_round(h, &mut out)
                || (self.voting
                    && (self.rule_proposal(h, &mut out)
                        || self.rule_polka_block(h, &mut out)
                        || self.rule_polka_nil(h, &mut out)
                        || self.rule_timeouts(&mut out)));
            if !fired {
                break;
            }
        }
        out
    }

    fn rule_decide(&mut self, out: &mut Out) -> bool {
        let q = self.vset.quorum();
        let mut found = None;
        for ((round, vt), bx) in &self.votes {
            if *vt != PRECOMMIT || bx.len() < q {
                continue;
            }
            for (block_hash, count) in self.tally(*round, PRECOMMIT) {
                let Some(digest) = block_hash else { continue };
                if count < q {
                    continue;
                }
                let Some(block) = self.blocks.get(&digest) else { continue };
                if !self.valid(block) {
                    continue; // the body arrives with a proposal or a commit message
                }
                let mut votes: Vec<Vote> =
                    bx.values().filter(|v| v.block_hash == Some(digest)).cloned().collect();
                votes.sort_by_key(|v| self.vset.index[&v.validator]);
                found = Some((
                    block.clone(),
                    CommitCert { height: self.height, round: *round, block_hash: digest, votes },
                ));
                break;
            }
            if found.is_some() {
                break;
            }
        }
        match found {
            Some((block, cert)) => {
                self.decided = true;
                out.push(Action::Decide(block, cert));
                true
            }
            None => false,
        }
    }

    fn rule_skip_round(&mut self, h: &mut dyn Host, out: &mut Out) -> bool {
        let mut later: BTreeMap<i64, HashSet<&str>> = BTreeMap::new();
        for ((round, _), bx) in &self.votes {
            if *round > self.round {
                later.entry(*round).or_default().extend(bx.keys().map(String::as_str));
            }
        }
        for (round, p) in &self.proposals {
            if *round > self.round {
                later.entry(*round).or_default().insert(&p.proposer);
            }
        }
        let target = later
            .iter()
            .rev()
            .find(|(_, who)| self.vset.one_third_plus(who.len()))
            .map(|(r, _)| *r);
        match target {
            Some(r) => {
                out.extend(self.start_round(h, r));
                true
            }
            None => false,
        }
    }

    fn locked_on(&self, digest: &Hash) -> bool {
        self.locked_block.as_ref().is_some_and(|b| b.hash() == *digest)
    }

    fn rule_proposal(&mut self, h: &mut dyn Host, out: &mut Out) -> bool {
        let Some(p) = self.proposals.get(&self.round) else { return false };
        if self.step != PROPOSE {
            return false;
        }
        let digest = p.block.hash();
        let ok = if p.valid_round == -1 {
            self.valid(&p.block) && (self.locked_round == -1 || self.locked_on(&digest))
        } else if self.polka(p.valid_round, Some(digest)) {
            self.valid(&p.block) && (self.locked_round <= p.valid_round || self.locked_on(&digest))
        } else {
            return false; // wait for the claimed polka, or the propose timeout
        };
        out.extend(self.prevote(h, if ok { Some(digest) } else { None }));
        true
    }

    fn rule_polka_block(&mut self, h: &mut dyn Host, out: &mut Out) -> bool {
        let Some(p) = self.proposals.get(&self.round) else { return false };
        let block = p.block.clone();
        let digest = block.hash();
        if self.step == PROPOSE || !self.polka(self.round, Some(digest)) {
            return false;
        }
        if !self.valid(&block) || !self.first("polka_block", self.round) {
            return false;
        }
        // valid before locked: polka_votes() selects by the valid block, so the saved lock
        // carries the polka
        self.valid_round = self.round;
        self.valid_block = Some(block.clone());
        if self.step == STEP_PREVOTE {
            self.locked_round = self.round;
            self.locked_block = Some(block.clone());
            let polka = self.polka_votes(self.round);
            h.save_lock(self.height, self.round, Some(&block), &polka);
            out.extend(self.precommit(h, Some(digest)));
        }
        true
    }

    fn rule_polka_nil(&mut self, h: &mut dyn Host, out: &mut Out) -> bool {
        if self.step != STEP_PREVOTE || !self.polka(self.round, None) {
            return false;
        }
        out.extend(self.precommit(h, None));
        true
    }

    fn rule_timeouts(&mut self, out: &mut Out) -> bool {
        let q = self.vset.quorum();
        if self.step == STEP_PREVOTE
            && self.count(self.round, PREVOTE) >= q
            && self.first("prevote_any", self.round)
        {
            let d = self.timeouts.of(STEP_PREVOTE, self.round);
            out.push(Action::ScheduleTimeout {
                step: STEP_PREVOTE,
                height: self.height,
                round: self.round,
                delay: d,
            });
            return true;
        }
        if self.count(self.round, PRECOMMIT) >= q && self.first("precommit_any", self.round) {
            let d = self.timeouts.of(STEP_PRECOMMIT, self.round);
            out.push(Action::ScheduleTimeout {
                step: STEP_PRECOMMIT,
                height: self.height,
                round: self.round,
                delay: d,
            });
            return true;
        }
        false
    }
}

enum Gate {
    Now,
    Buffer,
    Return(Out),
}

fn rejected(reason: &'static str, detail: String) -> Action {
    Action::Rejected { reason, detail }
}

#[cfg(test)]
mod tests {
    //! Proof-of-lock gossip (tests/unit/test_chain_consensus.py's tests of it): a
    //! deterministic in-memory network of consensus machines with virtual time.

    use super::*;
    use crate::chain::store::Store;

    /// The machines' host in a test: the virtual clock, an empty filler, every signature
    /// allowed; the last lock saved is kept here (the store's side is tested below).
    struct Clock(i64, Option<(i64, Vec<Vote>)>);

    impl Host for Clock {
        fn now_ms(&mut self) -> i64 {
            self.0
        }
        fn payload(&mut self, _height: i64) -> Vec<u8> {
            Vec::new()
        }
        fn can_sign(&mut self, _: i64, _: i64, _: &str, _: Option<Hash>) -> bool {
            true
        }
        fn save_lock(&mut self, _: i64, round: i64, _: Option<&Block>, polka: &[Vote]) {
            self.1 = Some((round, polka.to_vec()));
        }
    }

    /// n validators with fixed keys (seeds 1, 2, ...), so every run is the same run.
    fn make_vals(n: usize) -> (Vec<(Keypair, String)>, ValidatorSet) {
        let vals: Vec<(Keypair, String)> = (0..n)
            .map(|i| {
                let key = Keypair::ed25519_from_bytes([i as u8 + 1; 32]).expect("seed");
                let id = key.public().to_peer_id().to_string();
                (key, id)
            })
            .collect();
        let pairs: Vec<(String, String)> =
            vals.iter().enumerate().map(|(i, (_, id))| (format!("v{i}"), id.clone())).collect();
        let vset = ValidatorSet::new(&pairs).expect("validator set");
        (vals, vset)
    }

    enum Ev {
        Msg(Msg),
        Timeout(&'static str, i64, i64),
        Start,
    }

    /// (now in seconds, from, to, message) -> true to lose the message
    type DropRule = Box<dyn Fn(f64, usize, usize, &Msg) -> bool>;

    /// A deterministic in-memory network of Consensus machines with virtual time (the
    /// Python test's `Net`): gossip takes 10 ms, a decided node starts the next height
    /// 100 ms later. Blocks carry the virtual time (Clock), so a block proposed again in a
    /// later round is a new block, as on real nodes: with a constant clock a fresh block
    /// of the round-0 proposer would hash the same as its round-0 block.
    struct Net {
        vset: ValidatorSet,
        nodes: Vec<Consensus>,
        tip: Vec<(i64, Hash)>,
        decided: Vec<BTreeMap<i64, Hash>>,
        /// (time in µs, sequence) -> (node, event)
        q: BTreeMap<(u64, u64), (usize, Ev)>,
        t_us: u64,
        seq: u64,
        drop: DropRule,
    }

    impl Net {
        fn new(n: usize, drop: DropRule) -> Net {
            let (vals, vset) = make_vals(n);
            let nodes = vals
                .into_iter()
                .map(|(key, id)| {
                    Consensus::new(vset.clone(), Some(id), Some(key), Timeouts::for_interval(1.0))
                })
                .collect();
            Net {
                tip: vec![(0, vset.chain_id); n],
                decided: vec![BTreeMap::new(); n],
                vset,
                nodes,
                q: BTreeMap::new(),
                t_us: 0,
                seq: 0,
                drop,
            }
        }

        fn now(&self) -> f64 {
            self.t_us as f64 / 1e6
        }

        fn push(&mut self, delay: f64, node: usize, ev: Ev) {
            self.seq += 1;
            let at = self.t_us + (delay * 1e6).round() as u64;
            self.q.insert((at, self.seq), (node, ev));
        }

        fn handle(&mut self, i: usize, actions: Out) {
            for a in actions {
                match a {
                    Action::Broadcast(msg) => {
                        for j in 0..self.nodes.len() {
                            if j != i && !(self.drop)(self.now(), i, j, &msg) {
                                self.push(0.01, j, Ev::Msg(msg.clone()));
                            }
                        }
                    }
                    Action::ScheduleTimeout { step, height, round, delay } => {
                        self.push(delay, i, Ev::Timeout(step, height, round))
                    }
                    Action::Decide(block, cert) => {
                        cert.verify(&self.vset, &block).expect("a decided certificate verifies");
                        self.decided[i].insert(block.height, block.hash());
                        self.tip[i] = (block.height, block.hash());
                        self.push(0.1, i, Ev::Start);
                    }
                    Action::Rejected { reason, detail } => panic!("rejected: {reason} {detail}"),
                    Action::Behind(_) => {}
                }
            }
        }

        fn start(&mut self) {
            for i in 0..self.nodes.len() {
                let mut clock = Clock(0, None);
                let out = self.nodes[i].start_height(&mut clock, 1, self.vset.chain_id, None);
                self.handle(i, out);
            }
        }

        /// Deliver events until `until` seconds, or until every node in `watch` has
        /// decided `stop_height`.
        fn run(&mut self, until: f64, stop_height: i64, watch: &[usize]) {
            while self.now() < until {
                let Some(((at, _), (i, ev))) = self.q.pop_first() else { break };
                self.t_us = at;
                let mut clock = Clock((at / 1000) as i64, None);
                let node = &mut self.nodes[i];
                let out = match ev {
                    Ev::Msg(Msg::Proposal(p)) => node.on_proposal(&mut clock, p),
                    Ev::Msg(Msg::Vote(v)) => node.on_vote(&mut clock, v),
                    Ev::Timeout(step, height, round) => {
                        node.on_timeout(&mut clock, step, height, round)
                    }
                    Ev::Start => {
                        let (h, tip) = self.tip[i];
                        if node.height == h {
                            node.start_height(&mut clock, h + 1, tip, None)
                        } else {
                            vec![]
                        }
                    }
                };
                self.handle(i, out);
                if watch.iter().all(|&w| self.tip[w].0 >= stop_height) {
                    return;
                }
            }
        }

        fn assert_agreement(&self) {
            let mut by_height: BTreeMap<i64, HashSet<Hash>> = BTreeMap::new();
            for d in &self.decided {
                for (h, digest) in d {
                    by_height.entry(*h).or_default().insert(*digest);
                }
            }
            assert!(by_height.values().all(|s| s.len() == 1), "two blocks at one height");
        }
    }

    /// Until `t_heal`, height 1 round 0 prevotes reach only the validators in `locked` (so
    /// only they see the polka and lock), and validator `dead` is gone from `t_dead` on.
    /// `t_heal` is past round 0's round timeout, so the re-sends of round 0's own votes are
    /// lost too, as they are in a partition that outlasts a round.
    fn polka_only_at(locked: &'static [usize], dead: usize, t_dead: f64) -> DropRule {
        let t_heal = 20.0;
        Box::new(move |t, src, dst, msg| {
            if t >= t_dead && (src == dead || dst == dead) {
                return true;
            }
            match msg {
                Msg::Vote(v) if v.height == 1 && v.round == 0 && v.vtype == PREVOTE => {
                    !locked.contains(&dst) && t < t_heal
                }
                _ => false,
            }
        })
    }

    #[test]
    fn lock_nobody_else_saw_does_not_stall_after_a_validator_dies() {
        // v0 locks on round 0's block, completed by v3's prevote that reached v0 only; then
        // v3 dies. v0 prevotes nil for every new block, so v1 and v2 must accept v0's
        // re-proposal: they can only if the polka of round 0 travels with it (before the
        // fix: no height 1, ever; the cross_network_sync stall after a validator kill).
        let mut net = Net::new(4, polka_only_at(&[0], 3, 0.05));
        net.start();
        net.run(1.0, 1, &[0, 1, 2]);
        let locks: Vec<i64> = net.nodes.iter().map(|n| n.locked_round).collect();
        assert_eq!(&locks[..3], &[0, -1, -1], "the scenario: v0 alone locked in round 0");
        net.run(300.0, 3, &[0, 1, 2]);
        let tips: Vec<i64> = net.tip.iter().map(|t| t.0).collect();
        assert!(tips[..3].iter().all(|&h| h >= 3), "t={} tips={tips:?}", net.now());
        net.assert_agreement();
    }

    #[test]
    fn two_locked_on_one_side_of_a_split_converge() {
        // A partition mid-round: v0 and v1 saw the polka and locked, v2 and v3 did not.
        // After the heal (all four alive) only a re-proposal of the locked block can gather
        // 3 prevotes, and v2 and v3 can accept it only with the polka (the partition-heal
        // stall).
        let mut net = Net::new(4, polka_only_at(&[0, 1], usize::MAX, 1e9));
        net.start();
        net.run(1.0, 1, &[0, 1, 2, 3]);
        let locks: Vec<i64> = net.nodes.iter().map(|n| n.locked_round).collect();
        assert_eq!(locks, [0, 0, -1, -1], "the scenario: v0 and v1 locked in round 0");
        net.run(300.0, 3, &[0, 1, 2, 3]);
        let tips: Vec<i64> = net.tip.iter().map(|t| t.0).collect();
        assert!(tips.iter().all(|&h| h >= 3), "t={} tips={tips:?}", net.now());
        net.assert_agreement();
    }

    fn sent(out: &Out) -> Vec<Msg> {
        out.iter()
            .filter_map(|a| match a {
                Action::Broadcast(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn lock_and_its_polka_survive_a_restart() {
        // A validator restarted while locked gets the polka back from the store and sends
        // it with its re-proposal, so the others can accept the block it is locked on.
        let (vals, vset) = make_vals(4);
        let block = Block {
            height: 1,
            prev_hash: vset.chain_id,
            proposer: vals[1].1.clone(),
            time_ms: 7,
            payload: Vec::new(),
        };
        let digest = Some(block.hash());
        let polka: Vec<Vote> = vals[..3]
            .iter()
            .map(|(k, id)| Vote::make(&vset, k, id, PREVOTE, 1, 2, digest))
            .collect();
        let dir =
            std::env::temp_dir().join(format!("sentrynet-consensus-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut store = Store::open(&dir, vset.chain_id).unwrap();
            // a lock written before the polka was kept still loads, with an empty polka
            let old = serde_json::json!({"height": 1, "round": 2, "block": block.to_obj()});
            std::fs::write(dir.join("lock.json"), old.to_string()).unwrap();
            assert_eq!(store.load_lock(1).unwrap().polka, Vec::<Vote>::new());
            store.save_lock(1, 2, Some(&block), &polka);
        }
        let lock = Store::open(&dir, vset.chain_id).unwrap().load_lock(1).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(lock, Lock { round: 2, block: block.clone(), polka: polka.clone() });

        // a bad vote in the saved polka is skipped (a forged signature, another round)
        let mut saved = lock.clone();
        let mut forged = Vote::make(&vset, &vals[3].0, &vals[3].1, PREVOTE, 1, 1, digest);
        forged.round = 2;
        saved.polka.push(forged);
        saved.polka.push(Vote::make(&vset, &vals[3].0, &vals[3].1, PREVOTE, 1, 1, digest));

        // height 1 round 3 is v0's turn ((1 + 3) mod 4): it re-proposes the locked block
        let (key, id) = vals[0].clone();
        let mut c = Consensus::new(vset.clone(), Some(id), Some(key), Timeouts::for_interval(1.0));
        let mut clock = Clock(1000, None);
        c.start_height(&mut clock, 1, vset.chain_id, Some(saved));
        assert_eq!(c.votes.get(&(2, PREVOTE)).map(BTreeMap::len), Some(3));
        c.round = 2;
        let out = sent(&c.on_timeout(&mut clock, ROUND, 1, 2));
        let at = out.iter().position(|m| matches!(m, Msg::Proposal(_))).expect("a proposal");
        let Msg::Proposal(p) = &out[at] else { unreachable!() };
        assert_eq!((p.round, p.valid_round, &p.block), (3, 2, &block));
        let before: Vec<&Vote> = out[..at]
            .iter()
            .filter_map(|m| match m {
                Msg::Vote(v) => Some(v),
                _ => None,
            })
            .collect();
        assert!(polka.iter().all(|v| before.contains(&v)), "the polka goes before it");

        // a validator that never saw round 2 accepts it from those messages alone
        let (key, id) = vals[2].clone();
        let mut other =
            Consensus::new(vset.clone(), Some(id), Some(key), Timeouts::for_interval(1.0));
        other.start_height(&mut clock, 1, vset.chain_id, None);
        other.round = 3;
        let mut got = Vec::new();
        for m in out {
            got.extend(other.dispatch(&mut clock, m));
        }
        assert!(
            sent(&got).iter().any(|m| matches!(m, Msg::Vote(v)
                if v.vtype == PREVOTE && v.round == 3 && v.block_hash == digest)),
            "{got:?}"
        );
    }

    #[test]
    fn lock_is_saved_with_the_polka_that_made_it() {
        // rule_polka_block sets the valid block before the lock, so what is saved carries
        // the prevotes (consensus.py saves `_polka_votes(round)` the same way)
        let (vals, vset) = make_vals(4);
        let (key, id) = vals[0].clone();
        let mut c = Consensus::new(vset.clone(), Some(id), Some(key), Timeouts::for_interval(1.0));
        let mut clock = Clock(0, None);
        c.start_height(&mut clock, 1, vset.chain_id, None);
        let (k1, id1) = &vals[1];
        let block = Block {
            height: 1,
            prev_hash: vset.chain_id,
            proposer: id1.clone(),
            time_ms: 1,
            payload: Vec::new(),
        };
        let digest = Some(block.hash());
        c.on_proposal(&mut clock, Proposal::make(&vset, k1, id1, 0, block, -1));
        for (k, id) in &vals[1..3] {
            c.on_vote(&mut clock, Vote::make(&vset, k, id, PREVOTE, 1, 0, digest));
        }
        let (round, polka) = clock.1.expect("a lock was saved");
        let who: Vec<&str> = polka.iter().map(|v| v.validator.as_str()).collect();
        assert_eq!(round, 0);
        assert_eq!(who, [&vals[0].1, &vals[1].1, &vals[2].1], "our prevote and the two others");
        assert!(polka.iter().all(|v| v.vtype == PREVOTE && v.block_hash == digest));
    }
}
