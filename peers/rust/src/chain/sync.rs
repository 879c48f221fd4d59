//! Block sync wire, /sentrynet/sync/1.0.0 (node/chain/sync.py): every frame is a uvarint
//! length + a canonical JSON object; a stream carries any number of requests in turn.
//!     -> {"type": "status"}                    <- {"type": "status", "height": H, "tip": hex}
//!     -> {"type": "blocks", "from": a, "to": b} (b - a < MAX_RANGE)
//!                                              <- {"type": "blocks", "from": a, "blocks": [..]}
//!     anything malformed                       <- {"type": "error", "reason": "..."}
//! After a framing error the server answers with an error and closes the stream; after a
//! well-framed but invalid request it answers with an error and keeps reading.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use futures::{AsyncRead, AsyncWrite};
use serde_json::{json, Map, Value};

use super::block::{Block, CommitCert};
use super::codec::{self, cerr, get_int, hex, CodecError, INT_MAX};
use super::store::Store;

pub const PROTOCOL: &str = "/sentrynet/sync/1.0.0";
pub const MAX_RANGE: i64 = 64;
pub const CHUNK: i64 = 16;
pub const MAX_REQUEST: usize = 4 * 1024;
pub const MAX_RESPONSE: usize = 8 * 1024 * 1024;
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(10);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub enum FrameError {
    /// The byte stream is not a valid frame sequence; the stream cannot continue.
    Bad(String),
    Io(std::io::Error),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Bad(s) => f.write_str(s),
            FrameError::Io(e) => write!(f, "{e}"),
        }
    }
}

pub fn encode_uvarint(mut value: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

pub fn frame(obj: &Value) -> Vec<u8> {
    let body = codec::encode_ok(obj);
    let mut out = Vec::with_capacity(body.len() + 5);
    encode_uvarint(body.len() as u64, &mut out);
    out.extend(body);
    out
}

async fn read_byte<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<u8>, FrameError> {
    let mut b = [0u8; 1];
    match r.read(&mut b).await {
        Ok(0) => Ok(None),
        Ok(_) => Ok(Some(b[0])),
        Err(e) => Err(FrameError::Io(e)),
    }
}

/// The next frame's body; None on a clean EOF between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max_size: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let (mut length, mut shift, mut first) = (0u64, 0u32, true);
    loop {
        let Some(byte) = read_byte(r).await? else {
            if first {
                return Ok(None);
            }
            return Err(FrameError::Bad("stream ended inside a length prefix".into()));
        };
        first = false;
        length |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 35 {
            return Err(FrameError::Bad("length prefix is not a valid varint".into()));
        }
    }
    if length > max_size as u64 {
        return Err(FrameError::Bad(format!("frame of {length} bytes exceeds limit {max_size}")));
    }
    let mut body = vec![0u8; length as usize];
    r.read_exact(&mut body).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Bad("stream ended inside a frame".into()),
        _ => FrameError::Io(e),
    })?;
    Ok(Some(body))
}

/// The response to one request frame; CodecError for a malformed request.
pub fn answer(store: &Store, request: &[u8]) -> Result<Value, CodecError> {
    let req = codec::decode_object(request)?;
    match req.get("type").and_then(Value::as_str) {
        Some("status") => Ok(json!({"type": "status", "height": store.height(),
                                    "tip": hex(&store.tip_hash())})),
        Some("blocks") => {
            let start = get_int(&req, "from", 1, INT_MAX)?;
            let end = get_int(&req, "to", 1, INT_MAX)?;
            if end < start {
                return cerr(format!("field 'to'={end} is below 'from'={start}"));
            }
            if end - start + 1 > MAX_RANGE {
                return cerr(format!("range {start}..{end} longer than {MAX_RANGE} blocks"));
            }
            Ok(json!({"type": "blocks", "from": start,
                      "blocks": store.range_objs(start, end.min(store.height()))}))
        }
        _ => cerr(format!(
            "field 'type'={} is not one of status, blocks",
            req.get("type").map_or("None".to_string(), |t| t.to_string())
        )),
    }
}

/// Serve requests on one inbound stream until EOF; `reject(reason)` counts bad input.
pub async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    store: Arc<Mutex<Store>>,
    reject: impl Fn(&'static str, String),
) {
    let mut io = BufReader::new(stream);
    loop {
        let body = match tokio::time::timeout(IDLE_TIMEOUT, read_frame(&mut io, MAX_REQUEST)).await
        {
            Err(_) => return, // idle: drop (resets the stream)
            Ok(Ok(Some(body))) => body,
            Ok(Ok(None)) => break,
            Ok(Err(FrameError::Io(_))) => return,
            Ok(Err(FrameError::Bad(e))) => {
                reject("bad_frame", e.clone());
                let reply = frame(&json!({"type": "error", "reason": format!("bad frame: {e}")}));
                let _ = io.get_mut().write_all(&reply).await;
                let _ = io.get_mut().flush().await;
                break;
            }
        };
        let response = {
            let st = store.lock().expect("store lock");
            answer(&st, &body)
        };
        let response = response.unwrap_or_else(|e| {
            reject("malformed", e.to_string());
            json!({"type": "error", "reason": format!("malformed request: {e}")})
        });
        let w = io.get_mut();
        if w.write_all(&frame(&response)).await.is_err() || w.flush().await.is_err() {
            return;
        }
    }
    let _ = io.get_mut().close().await;
}

#[derive(Debug)]
pub enum SyncError {
    Timeout,
    /// the peer sent something that is not an answer (counted as rejected.sync)
    Bad(String),
    /// stream gone, peer closed, error answer
    Lost(String),
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncError::Timeout => f.write_str("timeout"),
            SyncError::Bad(s) | SyncError::Lost(s) => f.write_str(s),
        }
    }
}

/// One request over a client stream: (response object, response size in bytes).
pub async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    obj: &Value,
    timeout: Duration,
) -> Result<(Map<String, Value>, usize), SyncError> {
    let work = async {
        io.get_mut().write_all(&frame(obj)).await.map_err(|e| SyncError::Lost(e.to_string()))?;
        io.get_mut().flush().await.map_err(|e| SyncError::Lost(e.to_string()))?;
        match read_frame(io, MAX_RESPONSE).await {
            Ok(Some(body)) => Ok(body),
            Ok(None) => Err(SyncError::Lost("peer closed the stream".into())),
            Err(FrameError::Bad(e)) => Err(SyncError::Bad(e)),
            Err(FrameError::Io(e)) => Err(SyncError::Lost(e.to_string())),
        }
    };
    let body = tokio::time::timeout(timeout, work).await.map_err(|_| SyncError::Timeout)??;
    let size = body.len() + 1;
    let resp = codec::decode_object(&body)
        .map_err(|e| SyncError::Bad(format!("malformed response: {e}")))?;
    if resp.get("type").and_then(Value::as_str) == Some("error") {
        return Err(SyncError::Lost(format!("peer answered error: {}", resp["reason"])));
    }
    Ok((resp, size))
}

/// The blocks of an answer to {"type": "blocks", "from": start, "to": end}.
pub fn parse_blocks(
    resp: &Map<String, Value>,
    start: i64,
    end: i64,
) -> Result<Vec<(Block, CommitCert)>, SyncError> {
    if resp.get("type").and_then(Value::as_str) != Some("blocks")
        || resp.get("from").and_then(Value::as_i64) != Some(start)
    {
        return Err(SyncError::Bad("response does not answer the request".into()));
    }
    let want = (end - start + 1) as usize;
    let raw = match resp.get("blocks") {
        Some(Value::Array(items)) if items.len() == want => items,
        other => {
            return Err(SyncError::Bad(format!(
                "expected {want} blocks, got {}",
                other.map_or("nothing".to_string(), |v| match v {
                    Value::Array(a) => a.len().to_string(),
                    v => v.to_string(),
                })
            )))
        }
    };
    let mut out = Vec::with_capacity(want);
    for (i, item) in raw.iter().enumerate() {
        let bad = |e: CodecError| SyncError::Bad(e.to_string());
        let block = Block::from_obj(item.get("block")).map_err(bad)?;
        let cert = CommitCert::from_obj(item.get("commit")).map_err(bad)?;
        if block.height != start + i as i64 {
            return Err(SyncError::Bad(format!(
                "block {} out of order (expected {})",
                block.height,
                start + i as i64
            )));
        }
        out.push((block, cert));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8], max: usize) -> Result<Option<Vec<u8>>, FrameError> {
        let mut r = futures::io::Cursor::new(bytes.to_vec());
        futures::executor::block_on(read_frame(&mut r, max))
    }

    #[test]
    fn frames_as_python_writes_them() {
        // node/chain/sync.py frame({"type": "status"})
        let f = frame(&json!({"type": "status"}));
        assert_eq!(f, b"\x11{\"type\":\"status\"}".to_vec());
        let mut v = Vec::new();
        encode_uvarint(300, &mut v);
        assert_eq!(v, vec![0xac, 0x02]);
        assert_eq!(read(&f, 64).unwrap().unwrap(), b"{\"type\":\"status\"}".to_vec());
        assert!(read(b"", 64).unwrap().is_none());
        assert!(matches!(read(&[0x80], 64), Err(FrameError::Bad(_))));
        assert!(matches!(read(&[0xff; 6], 64), Err(FrameError::Bad(_))));
        assert!(matches!(read(&[0x05, b'{'], 64), Err(FrameError::Bad(_))));
        let mut big = Vec::new();
        encode_uvarint(1_000_000_000, &mut big);
        assert!(matches!(read(&big, MAX_REQUEST), Err(FrameError::Bad(_))));
    }

    #[test]
    fn answers_and_rejections() {
        let dir = std::env::temp_dir().join(format!("sentrynet-sync-test-{}", std::process::id()));
        let store = Store::open(&dir, [7; 32]).unwrap();
        let st = answer(&store, br#"{"type":"status"}"#).unwrap();
        assert_eq!(st, json!({"type": "status", "height": 0, "tip": hex(&[7; 32])}));
        let b = answer(&store, br#"{"type":"blocks","from":1,"to":64}"#).unwrap();
        assert_eq!(b, json!({"type": "blocks", "from": 1, "blocks": []}));
        for bad in [
            &br#"{"type":"blocks","from":0,"to":2}"#[..],
            br#"{"type":"blocks","from":1,"to":65}"#,
            br#"{"type":"blocks","from":3,"to":2}"#,
            br#"{"type":"gimme"}"#,
            br#"[1]"#,
            b"not json",
            br#"{"type":"blocks","from":1.0,"to":2}"#,
        ] {
            assert!(answer(&store, bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
