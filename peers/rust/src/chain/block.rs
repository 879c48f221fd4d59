//! Blocks, votes, proposals and commit certificates with their Ed25519 signatures
//! (node/chain/block.py). Every signature covers SIGN_DOMAIN + canonical JSON of
//! (chain id, kind, height, round, block hash[, valid round]); the verifying key comes out
//! of the peer id (Ed25519 peer ids embed the key) and the peer id must be one of the
//! configured validators.

use std::collections::{HashMap, HashSet};

use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::codec::{self, as_object, cerr, get_hex, get_int, get_str, hex, CodecError, INT_MAX};

pub const SIGN_DOMAIN: &[u8] = b"sentrynet-chain/v1:";
pub const HASH_SIZE: usize = 32;
pub const SIG_SIZE: usize = 64;
pub const MAX_PAYLOAD: usize = 64 * 1024;
pub const PREVOTE: &str = "prevote";
pub const PRECOMMIT: &str = "precommit";
const MAX_ROUND: i64 = 1 << 20;

pub type Hash = [u8; 32];

/// A consensus object that fails a check; `reason` is the short label of the counters.
#[derive(Debug, Clone)]
pub struct Invalid {
    pub reason: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.detail.is_empty() {
            f.write_str(self.reason)
        } else {
            write!(f, "{}: {}", self.reason, self.detail)
        }
    }
}

pub fn invalid<T>(reason: &'static str, detail: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid { reason, detail: detail.into() })
}

pub fn sha256(data: &[u8]) -> Hash {
    Sha256::digest(data).into()
}

fn hash_of(v: Vec<u8>) -> Hash {
    v.try_into().expect("length checked by get_hex")
}

/// The fixed, ordered validator set from [chain]; proposer and quorum arithmetic.
#[derive(Clone)]
pub struct ValidatorSet {
    pub ids: Vec<String>,
    pub index: HashMap<String, usize>,
    keys: HashMap<String, PublicKey>,
    pub chain_id: Hash,
}

/// The Ed25519 key an (identity-multihash) peer id embeds.
pub fn key_from_peer_id(peer_id: &str) -> Result<PublicKey, String> {
    let pid: PeerId = peer_id
        .parse()
        .map_err(|e| format!("chain.validator_ids: {peer_id:?} is not a peer id: {e}"))?;
    let mh = pid.as_ref();
    if mh.code() != 0 {
        return Err(format!(
            "chain.validator_ids: {peer_id:?} does not embed its key (use Ed25519 keys)"
        ));
    }
    PublicKey::try_decode_protobuf(mh.digest())
        .map_err(|e| format!("chain.validator_ids: {peer_id:?}: bad embedded key: {e}"))
}

impl ValidatorSet {
    /// (name, peer id) in the configured order.
    pub fn new(validators: &[(String, String)]) -> Result<Self, String> {
        if validators.is_empty() {
            return Err("chain.validators: at least one validator is required".into());
        }
        let ids: Vec<String> = validators.iter().map(|(_, p)| p.clone()).collect();
        let index: HashMap<String, usize> =
            ids.iter().enumerate().map(|(i, p)| (p.clone(), i)).collect();
        if index.len() != ids.len() {
            return Err("chain.validator_ids: two validators share a peer id".into());
        }
        let mut keys = HashMap::new();
        for pid in &ids {
            keys.insert(pid.clone(), key_from_peer_id(pid)?);
        }
        let list: Vec<Value> = validators.iter().map(|(n, p)| json!([n, p])).collect();
        let chain_id = sha256(&codec::encode_ok(&json!({ "validators": list })));
        Ok(ValidatorSet { ids, index, keys, chain_id })
    }

    pub fn n(&self) -> usize {
        self.ids.len()
    }

    /// Smallest count that is more than 2/3 of n.
    pub fn quorum(&self) -> usize {
        2 * self.n() / 3 + 1
    }

    /// More than 1/3 (the round-skip rule).
    pub fn one_third_plus(&self, count: usize) -> bool {
        3 * count > self.n()
    }

    /// validators[(h + r) mod n].
    pub fn proposer(&self, height: i64, round: i64) -> &str {
        &self.ids[((height + round) as u64 % self.n() as u64) as usize]
    }

    pub fn is_validator(&self, peer_id: &str) -> bool {
        self.index.contains_key(peer_id)
    }

    pub fn verify(&self, peer_id: &str, data: &[u8], sig: &[u8]) -> Result<(), Invalid> {
        let Some(key) = self.keys.get(peer_id) else {
            return invalid("not_validator", peer_id);
        };
        if !key.verify(data, sig) {
            return invalid("bad_signature", peer_id);
        }
        Ok(())
    }
}

fn sign_bytes(obj: &Value) -> Vec<u8> {
    let mut out = SIGN_DOMAIN.to_vec();
    out.extend(codec::encode_ok(obj));
    out
}

fn sign(key: &Keypair, data: &[u8]) -> Vec<u8> {
    key.sign(data).expect("ed25519 signing does not fail")
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub height: i64,
    pub prev_hash: Hash,
    pub proposer: String,
    pub time_ms: i64,
    pub payload: Vec<u8>,
}

impl Block {
    pub fn to_obj(&self) -> Value {
        json!({
            "height": self.height,
            "prev": hex(&self.prev_hash),
            "proposer": self.proposer,
            "time_ms": self.time_ms,
            "payload": hex(&self.payload),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        codec::encode_ok(&self.to_obj())
    }

    pub fn hash(&self) -> Hash {
        sha256(&self.encode())
    }

    pub fn from_obj(obj: Option<&Value>) -> Result<Block, CodecError> {
        let o = as_object(obj, "block")?;
        Ok(Block {
            height: get_int(o, "height", 1, INT_MAX)?,
            prev_hash: hash_of(get_hex(o, "prev", Some(HASH_SIZE), 1 << 20)?),
            proposer: get_str(o, "proposer", 128)?.to_string(),
            time_ms: get_int(o, "time_ms", 0, INT_MAX)?,
            payload: get_hex(o, "payload", None, MAX_PAYLOAD)?,
        })
    }
}

fn opt_hex(h: &Option<Hash>) -> Value {
    h.as_ref().map(|h| Value::String(hex(h))).unwrap_or(Value::Null)
}

pub fn vote_sign_bytes(
    chain_id: &Hash,
    vote_type: &str,
    height: i64,
    round: i64,
    block: &Option<Hash>,
) -> Vec<u8> {
    sign_bytes(&json!({
        "chain": hex(chain_id),
        "type": vote_type,
        "height": height,
        "round": round,
        "block": opt_hex(block),
    }))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vote {
    pub vtype: &'static str,
    pub height: i64,
    pub round: i64,
    /// None is a nil vote.
    pub block_hash: Option<Hash>,
    pub validator: String,
    pub signature: Vec<u8>,
}

impl Vote {
    pub fn make(
        vset: &ValidatorSet,
        key: &Keypair,
        my_id: &str,
        vtype: &'static str,
        height: i64,
        round: i64,
        block_hash: Option<Hash>,
    ) -> Vote {
        let data = vote_sign_bytes(&vset.chain_id, vtype, height, round, &block_hash);
        Vote {
            vtype,
            height,
            round,
            block_hash,
            validator: my_id.into(),
            signature: sign(key, &data),
        }
    }

    pub fn verify(&self, vset: &ValidatorSet) -> Result<(), Invalid> {
        if !vset.is_validator(&self.validator) {
            return invalid("not_validator", self.validator.clone());
        }
        let data =
            vote_sign_bytes(&vset.chain_id, self.vtype, self.height, self.round, &self.block_hash);
        vset.verify(&self.validator, &data, &self.signature)
    }

    pub fn to_obj(&self) -> Value {
        json!({
            "type": self.vtype,
            "height": self.height,
            "round": self.round,
            "block": opt_hex(&self.block_hash),
            "validator": self.validator,
            "sig": hex(&self.signature),
        })
    }

    pub fn from_obj(obj: Option<&Value>) -> Result<Vote, CodecError> {
        let o = as_object(obj, "vote")?;
        let vtype = match o.get("type").and_then(Value::as_str) {
            Some(PREVOTE) => PREVOTE,
            Some(PRECOMMIT) => PRECOMMIT,
            _ => return cerr("field 'type' must be one of ('prevote', 'precommit')"),
        };
        let block_hash = match o.get("block") {
            None | Some(Value::Null) => None,
            Some(_) => Some(hash_of(get_hex(o, "block", Some(HASH_SIZE), 1 << 20)?)),
        };
        Ok(Vote {
            vtype,
            height: get_int(o, "height", 1, INT_MAX)?,
            round: get_int(o, "round", 0, MAX_ROUND)?,
            block_hash,
            validator: get_str(o, "validator", 128)?.to_string(),
            signature: get_hex(o, "sig", Some(SIG_SIZE), 1 << 20)?,
        })
    }
}

pub fn proposal_sign_bytes(
    chain_id: &Hash,
    height: i64,
    round: i64,
    block: &Hash,
    valid_round: i64,
) -> Vec<u8> {
    sign_bytes(&json!({
        "chain": hex(chain_id),
        "type": "proposal",
        "height": height,
        "round": round,
        "block": hex(block),
        "valid_round": valid_round,
    }))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub height: i64,
    pub round: i64,
    pub block: Block,
    /// -1, or the round in which a polka for `block` was seen.
    pub valid_round: i64,
    pub proposer: String,
    pub signature: Vec<u8>,
}

impl Proposal {
    pub fn make(
        vset: &ValidatorSet,
        key: &Keypair,
        my_id: &str,
        round: i64,
        block: Block,
        valid_round: i64,
    ) -> Proposal {
        let data =
            proposal_sign_bytes(&vset.chain_id, block.height, round, &block.hash(), valid_round);
        Proposal {
            height: block.height,
            round,
            block,
            valid_round,
            proposer: my_id.into(),
            signature: sign(key, &data),
        }
    }

    pub fn verify(&self, vset: &ValidatorSet) -> Result<(), Invalid> {
        if self.block.height != self.height {
            return invalid("malformed", "proposal height differs from block height");
        }
        if !(-1 <= self.valid_round && self.valid_round < self.round) {
            return invalid("malformed", "valid_round out of range");
        }
        if self.proposer != vset.proposer(self.height, self.round) {
            return invalid("wrong_proposer", self.proposer.clone());
        }
        let data = proposal_sign_bytes(
            &vset.chain_id,
            self.height,
            self.round,
            &self.block.hash(),
            self.valid_round,
        );
        vset.verify(&self.proposer, &data, &self.signature)
    }

    pub fn to_obj(&self) -> Value {
        json!({
            "height": self.height,
            "round": self.round,
            "block": self.block.to_obj(),
            "valid_round": self.valid_round,
            "proposer": self.proposer,
            "sig": hex(&self.signature),
        })
    }

    pub fn from_obj(obj: Option<&Value>) -> Result<Proposal, CodecError> {
        let o = as_object(obj, "proposal")?;
        Ok(Proposal {
            height: get_int(o, "height", 1, INT_MAX)?,
            round: get_int(o, "round", 0, MAX_ROUND)?,
            block: Block::from_obj(o.get("block"))?,
            valid_round: get_int(o, "valid_round", -1, MAX_ROUND)?,
            proposer: get_str(o, "proposer", 128)?.to_string(),
            signature: get_hex(o, "sig", Some(SIG_SIZE), 1 << 20)?,
        })
    }
}

/// More than 2/3 of the validators' precommits for one block at one (height, round).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitCert {
    pub height: i64,
    pub round: i64,
    pub block_hash: Hash,
    pub votes: Vec<Vote>,
}

impl CommitCert {
    /// Ok only if this certifies `block`: a synced block is verified, not trusted.
    pub fn verify(&self, vset: &ValidatorSet, block: &Block) -> Result<(), Invalid> {
        if self.height != block.height || self.block_hash != block.hash() {
            return invalid("bad_commit", "certificate is for another block");
        }
        let mut seen: HashSet<&str> = HashSet::new();
        for v in &self.votes {
            if v.vtype != PRECOMMIT
                || v.height != self.height
                || v.round != self.round
                || v.block_hash != Some(self.block_hash)
            {
                return invalid("bad_commit", "vote does not match certificate");
            }
            if seen.contains(v.validator.as_str()) {
                return invalid("bad_commit", "duplicate validator");
            }
            v.verify(vset)?;
            seen.insert(&v.validator);
        }
        if seen.len() < vset.quorum() {
            return invalid(
                "bad_commit",
                format!("{} precommits < quorum {}", seen.len(), vset.quorum()),
            );
        }
        Ok(())
    }

    pub fn to_obj(&self) -> Value {
        json!({
            "height": self.height,
            "round": self.round,
            "block": hex(&self.block_hash),
            "votes": self.votes.iter().map(Vote::to_obj).collect::<Vec<_>>(),
        })
    }

    pub fn from_obj(obj: Option<&Value>) -> Result<CommitCert, CodecError> {
        let o: &Map<String, Value> = as_object(obj, "commit")?;
        let votes = match o.get("votes") {
            Some(Value::Array(v)) if v.len() <= 1024 => v,
            _ => return cerr("field 'votes' must be a list (at most 1024)"),
        };
        Ok(CommitCert {
            height: get_int(o, "height", 1, INT_MAX)?,
            round: get_int(o, "round", 0, MAX_ROUND)?,
            block_hash: hash_of(get_hex(o, "block", Some(HASH_SIZE), 1 << 20)?),
            votes: votes.iter().map(|v| Vote::from_obj(Some(v))).collect::<Result<_, _>>()?,
        })
    }
}

/// Checks that make `block` the next block after `prev_hash`.
pub fn verify_chain_link(
    vset: &ValidatorSet,
    prev_hash: &Hash,
    block: &Block,
    cert: &CommitCert,
) -> Result<(), Invalid> {
    if block.prev_hash != *prev_hash {
        return invalid("bad_block", format!("height {}: prev hash does not link", block.height));
    }
    if !vset.is_validator(&block.proposer) {
        return invalid("bad_block", format!("height {}: proposer not a validator", block.height));
    }
    cert.verify(vset, block)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::consensus::Msg;
    use crate::chain::gossip::{block_payload, decode_gossip, encode_msg, topic_for, Gossip};

    // Vectors from the Python node (node/chain/block.py, service.py) with the Ed25519 key
    // of seed 00 01 .. 1f (libp2p protobuf private key below).
    const KEY: &str = "08011220000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const PID: &str = "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB";
    const CHAIN_ID: &str = "ed16b27a55e07c2f2ad6abf7cf7dda74197efeb2dcb0dff4afbf56a81fbf071d";
    const BLOCK_HASH: &str = "259e488bd5cdfb3055c8bd1e9ba0e92d3618e88f7a8a83a88f6f2e52cedad2f4";
    const VOTE_SIG: &str = "651638ddd1e98046ef241fd7b45b719ecf1a341f746584ab98a27df28f6af567\
                            af859d77a5ee65c2964806f8aab32b768f55b79044ae39f0393ef78527aaf202";
    const NIL_SIG: &str = "9b6f82a4752ae2105716ddc7bee646de1c043bb728c02acbc6d2a6bbe58f2d3f\
                           a963c07a73ef4d70d476d69275d52343363018c3129ccb0f2c65fc25c4059300";
    const PROP_SIG: &str = "a5179971cc5ba62abbe29aa9bda83f28e1300d1fd5c93bbad736834aa350c6cc\
                            8aa7f00f501cee51ba12cc0da094827f86768540463304dc5303df3ef64d4503";

    fn setup() -> (Keypair, ValidatorSet, Block) {
        let key = crate::keys::from_bytes(&codec::from_hex(KEY).unwrap()).unwrap();
        assert_eq!(key.public().to_peer_id().to_string(), PID);
        let vset = ValidatorSet::new(&[("v0".into(), PID.into())]).unwrap();
        let block = Block {
            height: 1,
            prev_hash: vset.chain_id,
            proposer: PID.into(),
            time_ms: 1_700_000_000_000,
            payload: block_payload("v0", 1),
        };
        (key, vset, block)
    }

    #[test]
    fn chain_id_topic_and_block_hash_match_python() {
        let (_, vset, block) = setup();
        assert_eq!(hex(&vset.chain_id), CHAIN_ID);
        assert_eq!(topic_for(&vset), "/sentrynet/chain/1/ed16b27a55e07c2f");
        assert_eq!(hex(&block.hash()), BLOCK_HASH);
        assert_eq!(vset.quorum(), 1);
    }

    #[test]
    fn signatures_match_python_bytes() {
        let (key, vset, block) = setup();
        let v = Vote::make(&vset, &key, PID, PRECOMMIT, 1, 0, Some(block.hash()));
        assert_eq!(hex(&v.signature), VOTE_SIG);
        let nil = Vote::make(&vset, &key, PID, PREVOTE, 1, 2, None);
        assert_eq!(hex(&nil.signature), NIL_SIG);
        let p = Proposal::make(&vset, &key, PID, 0, block.clone(), -1);
        assert_eq!(hex(&p.signature), PROP_SIG);
        v.verify(&vset).unwrap();
        nil.verify(&vset).unwrap();
        p.verify(&vset).unwrap();
        let cert = CommitCert { height: 1, round: 0, block_hash: block.hash(), votes: vec![v] };
        verify_chain_link(&vset, &vset.chain_id, &block, &cert).unwrap();
    }

    #[test]
    fn gossip_bytes_match_python_and_tampering_fails() {
        let (key, vset, block) = setup();
        let v = Vote::make(&vset, &key, PID, PRECOMMIT, 1, 0, Some(block.hash()));
        let wire = encode_msg(&Msg::Vote(v.clone()));
        let want = format!(
            "{{\"kind\":\"vote\",\"vote\":{{\"block\":\"{BLOCK_HASH}\",\"height\":1,\"round\":0,\
             \"sig\":\"{VOTE_SIG}\",\"type\":\"precommit\",\"validator\":\"{PID}\"}}}}"
        );
        assert_eq!(String::from_utf8(wire.clone()).unwrap(), want);
        let Ok(Gossip::Msg(Msg::Vote(back))) = decode_gossip(&wire) else { panic!("decode") };
        assert_eq!(back, v);
        let mut bad = v.clone();
        bad.round = 1;
        assert_eq!(bad.verify(&vset).unwrap_err().reason, "bad_signature");
        let mut stranger = v;
        stranger.validator = "12D3KooWSoLzampfxc4t3sy9LZgcv3oBvpQsuHvdoRXCZJ6wGSFt".into();
        assert_eq!(stranger.verify(&vset).unwrap_err().reason, "not_validator");
    }
}
