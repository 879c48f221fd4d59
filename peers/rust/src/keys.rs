//! The node key file, in the Python node's format so both give the same peer id.
//!
//! The file is a libp2p `PrivateKey` protobuf (field 1 = key type, 2 = data). The Python
//! node (and the harness's render) write Ed25519 keys with the 32-byte seed as data, while
//! rust-libp2p's own encoding holds the 64-byte seed||public pair, so the protobuf is read
//! here and either length is accepted. A missing file is created (0600) in the seed form.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use libp2p::identity::{ed25519, Keypair};

const ED25519: u64 = 1;

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&b) = buf.get(*pos) else { bail!("truncated varint") };
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    bail!("varint too long")
}

/// (key type, data) of a `PrivateKey` protobuf.
fn decode(buf: &[u8]) -> Result<(u64, Vec<u8>)> {
    let (mut pos, mut key_type, mut data) = (0usize, None, None);
    while pos < buf.len() {
        let tag = read_varint(buf, &mut pos)?;
        match (tag >> 3, tag & 7) {
            (1, 0) => key_type = Some(read_varint(buf, &mut pos)?),
            (2, 2) => {
                let len = read_varint(buf, &mut pos)? as usize;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len());
                let Some(end) = end else { bail!("truncated key data") };
                data = Some(buf[pos..end].to_vec());
                pos = end;
            }
            (field, wire) => bail!("unexpected protobuf field {field} (wire type {wire})"),
        }
    }
    match (key_type, data) {
        (Some(t), Some(d)) => Ok((t, d)),
        _ => bail!("not a libp2p PrivateKey protobuf (type or data missing)"),
    }
}

pub fn from_bytes(buf: &[u8]) -> Result<Keypair> {
    let (key_type, mut data) = decode(buf)?;
    if key_type != ED25519 {
        bail!("key type {key_type} is not Ed25519 (1)");
    }
    let pair = match data.len() {
        32 => ed25519::Keypair::from(ed25519::SecretKey::try_from_bytes(&mut data)?),
        64 => ed25519::Keypair::try_from_bytes(&mut data)?,
        n => bail!("Ed25519 key data is {n} bytes, expected 32 (seed) or 64 (seed+public)"),
    };
    Ok(pair.into())
}

fn to_bytes(pair: &ed25519::Keypair) -> Vec<u8> {
    let seed = pair.secret();
    let mut out = vec![0x08, ED25519 as u8, 0x12, 32];
    out.extend_from_slice(seed.as_ref());
    out
}

/// Load the key at `path`, or create it when the file does not exist.
pub fn load_or_create(path: &Path) -> Result<Keypair> {
    if path.exists() {
        let buf = fs::read(path).with_context(|| format!("reading key file {}", path.display()))?;
        return from_bytes(&buf).with_context(|| format!("key file {}", path.display()));
    }
    let pair = ed25519::Keypair::generate();
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("key.tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating key file {}", tmp.display()))?;
    f.write_all(&to_bytes(&pair))?;
    fs::rename(&tmp, path)?;
    Ok(pair.into())
}
