//! Gossip on the chain topic (node/chain/service.py topic_for / encode_gossip /
//! decode_gossip) and the gossipsub settings that matter for interop with py-libp2p
//! (node/host.py build_pubsub, py-libp2p's Pubsub defaults): signed messages validated
//! strictly, message id = from (peer id bytes) + seqno (py-libp2p's
//! get_peer_and_seqno_msg_id: IHAVE/IWANT/IDONTWANT name messages by it), 1 s heartbeat,
//! mesh 6 (4..12), /meshsub/1.2.0 and 1.1.0.

use std::time::Duration;

use libp2p::gossipsub::{self, ConfigBuilder, Message, MessageId, ValidationMode};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::block::{Block, CommitCert, Proposal, ValidatorSet, Vote};
use super::codec::{self, cerr, hex, CodecError};
use super::consensus::Msg;

pub const MAX_GOSSIP: usize = 256 * 1024;
pub const PAYLOAD_SIZE: usize = 256;

pub enum Gossip {
    Msg(Msg),
    Commit(Block, CommitCert),
}

pub fn topic_for(vset: &ValidatorSet) -> String {
    format!("/sentrynet/chain/1/{}", &hex(&vset.chain_id)[..16])
}

/// Deterministic filler (service.py block_payload): repeatable, incompressible-looking.
pub fn block_payload(name: &str, height: i64) -> Vec<u8> {
    let mut seed: [u8; 32] = Sha256::digest(format!("{name}/{height}").as_bytes()).into();
    let mut out = Vec::with_capacity(PAYLOAD_SIZE + 32);
    while out.len() < PAYLOAD_SIZE {
        seed = Sha256::digest(seed).into();
        out.extend_from_slice(&seed);
    }
    out.truncate(PAYLOAD_SIZE);
    out
}

pub fn decode_gossip(data: &[u8]) -> Result<Gossip, CodecError> {
    if data.len() > MAX_GOSSIP {
        return cerr("message too large");
    }
    let obj = codec::decode_object(data)?;
    match obj.get("kind").and_then(|k| k.as_str()) {
        Some("proposal") => {
            Ok(Gossip::Msg(Msg::Proposal(Proposal::from_obj(obj.get("proposal"))?)))
        }
        Some("vote") => Ok(Gossip::Msg(Msg::Vote(Vote::from_obj(obj.get("vote"))?))),
        Some("commit") => Ok(Gossip::Commit(
            Block::from_obj(obj.get("block"))?,
            CommitCert::from_obj(obj.get("commit"))?,
        )),
        _ => cerr(format!(
            "field 'kind'={} is not one of proposal, vote, commit",
            obj.get("kind").map_or("None".to_string(), |k| k.to_string())
        )),
    }
}

pub fn encode_msg(msg: &Msg) -> Vec<u8> {
    codec::encode_ok(&match msg {
        Msg::Proposal(p) => json!({"kind": "proposal", "proposal": p.to_obj()}),
        Msg::Vote(v) => json!({"kind": "vote", "vote": v.to_obj()}),
    })
}

pub fn encode_commit(block: &Block, cert: &CommitCert) -> Vec<u8> {
    codec::encode_ok(&json!({"kind": "commit", "block": block.to_obj(), "commit": cert.to_obj()}))
}

// Protocols: the defaults, /meshsub/1.2.0, 1.1.0 and 1.0.0 (py-libp2p offers 1.2.0 and
// 1.1.0); `protocol_id_prefix` would drop 1.2.0, so it is not called.

/// py-libp2p's default message id: from_id + seqno (raw bytes).
pub fn message_id(msg: &Message) -> MessageId {
    let mut id = msg.source.map(|p| p.to_bytes()).unwrap_or_default();
    id.extend_from_slice(&msg.sequence_number.map(u64::to_be_bytes).unwrap_or_default());
    MessageId::from(id)
}

pub fn config() -> gossipsub::Config {
    ConfigBuilder::default()
        .heartbeat_interval(Duration::from_secs(1))
        .mesh_n(6)
        .mesh_n_low(4)
        .mesh_n_high(12)
        .validation_mode(ValidationMode::Strict)
        .validate_messages()
        .message_id_fn(message_id)
        .max_transmit_size(1 << 20)
        .build()
        .expect("valid gossipsub config")
}
