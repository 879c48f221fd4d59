//! Tendermint-like consensus for one height at a time, as a pure state machine: the rules
//! of node/chain/consensus.py, rule for rule (proposer rotation, locks, polkas, f+1 round
//! skip, timeouts, the round stall timer that re-sends our own messages). Inputs are
//! proposals, votes and timeouts; outputs are actions; no I/O and no clock reads.
//! Validators vote; full nodes and sentries run it as observers and decide on the same
//! certificates.

use std::collections::{BTreeMap, HashMap, HashSet};

use libp2p::identity::Keypair;

use super::block::{
    Block, CommitCert, Hash, Proposal, ValidatorSet, Vote, MAX_PAYLOAD, PRECOMMIT, PREVOTE,
};

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
    fn save_lock(&mut self, height: i64, round: i64, block: Option<&Block>);
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

    /// Enter `height` on top of `prev_hash` (the committed tip) at round 0.
    pub fn start_height(
        &mut self,
        h: &mut dyn Host,
        height: i64,
        prev_hash: Hash,
        locked: Option<(i64, Block)>,
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
        if let Some((r, b)) = locked {
            self.locked_round = r;
            self.locked_block = Some(b.clone());
            self.valid_round = r;
            self.valid_block = Some(b);
        }
        self.proposals.clear();
        self.blocks.clear();
        self.votes.clear();
        self.once.clear();
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
        if self.step == STEP_PREVOTE {
            self.locked_round = self.round;
            self.locked_block = Some(block.clone());
            h.save_lock(self.height, self.round, Some(&block));
            out.extend(self.precommit(h, Some(digest)));
        }
        self.valid_round = self.round;
        self.valid_block = Some(block);
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
