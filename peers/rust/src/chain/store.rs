//! The block store: certified blocks in memory, appended to `<data_dir>/chain.jsonl` so a
//! restart keeps the chain (node/chain/store.py keeps the same in sqlite).
//!
//! File format, one canonical JSON object per line: first `{"chain_id": hex}`, then
//! `{"block": {...}, "commit": {...}}` per height in order, as the sync protocol carries
//! them. A torn last line (crash mid-write) is dropped on load. What a validator signed
//! (height, round, kind -> block) is appended to `signed.jsonl` before the signature leaves
//! the node, so a restarted validator never signs two things for one step; its lock is
//! `lock.json` (rewritten via rename), with the polka (the prevotes) that made it.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::block::{Block, CommitCert, Hash, Vote};
use super::codec::{self, from_hex, hex};

pub struct Entry {
    pub hash: Hash,
    /// {"block": .., "commit": ..} as served over sync
    pub obj: Value,
}

/// A validator's lock for one height: the round, the block and the polka behind it
/// (store.py `Lock`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    pub round: i64,
    pub block: Block,
    /// the prevotes of `round` for `block`; empty in a lock saved before they were kept
    pub polka: Vec<Vote>,
}

pub struct Store {
    dir: PathBuf,
    chain_id: Hash,
    blocks: Vec<Entry>,
    file: File,
    signed: HashMap<(i64, i64, String), Option<Hash>>,
    signed_file: File,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn lines(path: &Path) -> Vec<Value> {
    let Ok(f) = File::open(path) else { return Vec::new() };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .map_while(|l| codec::decode(l.as_bytes()).ok())
        .collect()
}

impl Store {
    pub fn open(dir: &Path, chain_id: Hash) -> Result<Store, String> {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join("chain.jsonl");
        let mut blocks: Vec<Entry> = Vec::new();
        let rows = lines(&path);
        let fresh = rows.is_empty();
        let mut good = 0usize;
        for (i, row) in rows.iter().enumerate() {
            if i == 0 {
                let id = row.get("chain_id").and_then(Value::as_str).unwrap_or("");
                if id != hex(&chain_id) {
                    return Err(format!(
                        "{}: store belongs to another validator set (chain id {id:.16}..., config \
                         gives {:.16}...); remove it or fix [chain] validators",
                        path.display(),
                        hex(&chain_id)
                    ));
                }
                good = 1;
                continue;
            }
            let (Ok(block), Ok(_)) =
                (Block::from_obj(row.get("block")), CommitCert::from_obj(row.get("commit")))
            else {
                break;
            };
            let tip = blocks.last().map_or(chain_id, |e| e.hash);
            if block.height != blocks.len() as i64 + 1 || block.prev_hash != tip {
                break;
            }
            blocks.push(Entry { hash: block.hash(), obj: row.clone() });
            good += 1;
        }
        if good < rows.len() || fresh {
            // rewrite without the torn or stray tail (or start the file)
            let mut text = String::new();
            let head = codec::encode_ok(&json!({"chain_id": hex(&chain_id)}));
            text.push_str(std::str::from_utf8(&head).expect("ascii"));
            text.push('\n');
            for e in &blocks {
                text.push_str(std::str::from_utf8(&codec::encode_ok(&e.obj)).expect("ascii"));
                text.push('\n');
            }
            let tmp = dir.join("chain.jsonl.tmp");
            fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
            fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let file = open_append(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let spath = dir.join("signed.jsonl");
        let mut signed = HashMap::new();
        for row in lines(&spath) {
            let (Some(h), Some(r), Some(k)) = (
                row.get("height").and_then(Value::as_i64),
                row.get("round").and_then(Value::as_i64),
                row.get("type").and_then(Value::as_str),
            ) else {
                continue;
            };
            let b = row.get("block").and_then(Value::as_str).and_then(from_hex);
            signed.insert((h, r, k.to_string()), b.and_then(|b| b.try_into().ok()));
        }
        let signed_file = open_append(&spath).map_err(|e| format!("{}: {e}", spath.display()))?;
        Ok(Store { dir: dir.to_path_buf(), chain_id, blocks, file, signed, signed_file })
    }

    pub fn height(&self) -> i64 {
        self.blocks.len() as i64
    }

    /// Height 0 is the genesis: its hash is the chain id.
    pub fn tip_hash(&self) -> Hash {
        self.blocks.last().map_or(self.chain_id, |e| e.hash)
    }

    /// Store the next block (the caller has verified it; this only enforces order).
    pub fn append(&mut self, block: Block, cert: CommitCert) -> Result<(), String> {
        if block.height != self.height() + 1 || block.prev_hash != self.tip_hash() {
            return Err(format!("block {} does not extend tip {}", block.height, self.height()));
        }
        let obj = json!({"block": block.to_obj(), "commit": cert.to_obj()});
        let mut line = codec::encode_ok(&obj);
        line.push(b'\n');
        self.file.write_all(&line).map_err(|e| format!("chain.jsonl: {e}"))?;
        self.blocks.push(Entry { hash: block.hash(), obj });
        Ok(())
    }

    pub fn get(&self, height: i64) -> Option<&Entry> {
        if height < 1 {
            return None;
        }
        self.blocks.get(height as usize - 1)
    }

    /// Blocks start..=end as wire objects {block, commit}, for the sync server.
    pub fn range_objs(&self, start: i64, end: i64) -> Vec<Value> {
        (start.max(1)..=end.min(self.height()))
            .filter_map(|h| self.get(h).map(|e| e.obj.clone()))
            .collect()
    }

    /// True when signing (height, round, kind, block) is safe; recorded before signing.
    pub fn check_and_record_signature(
        &mut self,
        height: i64,
        round: i64,
        kind: &str,
        block: Option<Hash>,
    ) -> bool {
        let key = (height, round, kind.to_string());
        if let Some(prev) = self.signed.get(&key) {
            return *prev == block;
        }
        let row = json!({"height": height, "round": round, "type": kind,
                         "block": block.map(|b| hex(&b))});
        let mut line = codec::encode_ok(&row);
        line.push(b'\n');
        if self.signed_file.write_all(&line).and_then(|_| self.signed_file.sync_data()).is_err() {
            return false; // not recorded: do not sign
        }
        self.signed.insert(key, block);
        true
    }

    pub fn prune_signatures(&mut self, below: i64) {
        self.signed.retain(|(h, _, _), _| *h >= below);
    }

    /// Keep the lock with the prevotes that made it: after a restart the validator must be
    /// able to show the others why it re-proposes this block.
    pub fn save_lock(&mut self, height: i64, round: i64, block: Option<&Block>, polka: &[Vote]) {
        let obj = json!({"height": height, "round": round,
                         "block": block.map(Block::to_obj),
                         "polka": polka.iter().map(Vote::to_obj).collect::<Vec<_>>()});
        let tmp = self.dir.join("lock.json.tmp");
        if fs::write(&tmp, codec::encode_ok(&obj)).is_ok() {
            let _ = fs::rename(&tmp, self.dir.join("lock.json"));
        }
    }

    /// The lock saved for `height`. A lock written before the polka was kept (no "polka")
    /// loads with an empty one; a vote that does not decode is left out (consensus verifies
    /// the rest before using them).
    pub fn load_lock(&self, height: i64) -> Option<Lock> {
        let raw = fs::read(self.dir.join("lock.json")).ok()?;
        let obj = codec::decode_object(&raw).ok()?;
        if obj.get("height").and_then(Value::as_i64) != Some(height) {
            return None;
        }
        let block = Block::from_obj(obj.get("block")).ok()?;
        let polka = match obj.get("polka") {
            Some(Value::Array(votes)) => {
                votes.iter().filter_map(|v| Vote::from_obj(Some(v)).ok()).collect()
            }
            _ => Vec::new(),
        };
        Some(Lock { round: obj.get("round")?.as_i64()?, block, polka })
    }
}
