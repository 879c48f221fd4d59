//! Canonical JSON (node/chain/codec.py): the bytes that are hashed, signed and sent.
//!
//! Sorted keys, no whitespace, ASCII only (everything outside space..'~' as `\uXXXX`,
//! lowercase hex, surrogate pairs above U+FFFF, the short escapes `\" \\ \b \f \n \r \t`),
//! integers, strings, booleans, null, lists and objects; floats are refused; bytes travel
//! as lowercase hex. Byte for byte what Python's
//! `json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=True)` writes.

use std::fmt;

use serde_json::{Map, Value};

pub const MAX_DEPTH: usize = 8;

/// Input that is not canonical JSON of the expected shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

pub fn cerr<T>(msg: impl Into<String>) -> Result<T, CodecError> {
    Err(CodecError(msg.into()))
}

fn check(value: &Value, depth: usize) -> Result<(), CodecError> {
    if depth > MAX_DEPTH {
        return cerr("nesting too deep");
    }
    match value {
        Value::Number(n) if n.is_f64() => cerr(format!("float {n} is not allowed")),
        Value::Array(items) => items.iter().try_for_each(|v| check(v, depth + 1)),
        Value::Object(map) => map.values().try_for_each(|v| check(v, depth + 1)),
        _ => Ok(()),
    }
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(ch),
            _ => {
                let mut units = [0u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // sorted by code point, as Python sorts str keys (UTF-8 byte order is the same)
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, key);
                out.push(':');
                write_value(out, &map[key]);
            }
            out.push('}');
        }
    }
}

/// Canonical bytes of a JSON value (no floats, at most MAX_DEPTH deep).
pub fn encode(value: &Value) -> Result<Vec<u8>, CodecError> {
    check(value, 0)?;
    let mut out = String::new();
    write_value(&mut out, value);
    Ok(out.into_bytes())
}

/// Canonical bytes of a value built by this node (always encodable).
pub fn encode_ok(value: &Value) -> Vec<u8> {
    encode(value).expect("values built by this node are canonical")
}

/// Parse bytes produced by `encode` (or any ASCII JSON without floats).
pub fn decode(data: &[u8]) -> Result<Value, CodecError> {
    if let Some(pos) = data.iter().position(|b| !b.is_ascii()) {
        return cerr(format!("not canonical JSON: non-ASCII byte at {pos}"));
    }
    let value: Value =
        serde_json::from_slice(data).map_err(|e| CodecError(format!("not canonical JSON: {e}")))?;
    check(&value, 0)?;
    Ok(value)
}

/// Decode and insist on a JSON object at the top level.
pub fn decode_object(data: &[u8]) -> Result<Map<String, Value>, CodecError> {
    match decode(data)? {
        Value::Object(map) => Ok(map),
        _ => cerr("expected a JSON object"),
    }
}

pub fn as_object<'a>(
    value: Option<&'a Value>,
    what: &str,
) -> Result<&'a Map<String, Value>, CodecError> {
    match value {
        Some(Value::Object(map)) => Ok(map),
        _ => cerr(format!("{what} must be an object")),
    }
}

/// A required integer field within [lo, hi]; names the field when wrong.
pub fn get_int(obj: &Map<String, Value>, key: &str, lo: i64, hi: i64) -> Result<i64, CodecError> {
    let value = match obj.get(key) {
        Some(Value::Number(n)) if !n.is_f64() => n.as_i64(),
        _ => return cerr(format!("field '{key}' must be an integer")),
    };
    match value {
        Some(v) if lo <= v && v <= hi => Ok(v),
        _ => cerr(format!("field '{key}'={} out of range [{lo}, {hi}]", obj[key])),
    }
}

pub const INT_MAX: i64 = i64::MAX;

pub fn get_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    max_len: usize,
) -> Result<&'a str, CodecError> {
    let Some(Value::String(s)) = obj.get(key) else {
        return cerr(format!("field '{key}' must be a string"));
    };
    if s.chars().count() > max_len {
        return cerr(format!("field '{key}' longer than {max_len}"));
    }
    Ok(s)
}

/// A lowercase hex field, optionally of exactly `size` bytes.
pub fn get_hex(
    obj: &Map<String, Value>,
    key: &str,
    size: Option<usize>,
    max_len: usize,
) -> Result<Vec<u8>, CodecError> {
    let text = get_str(obj, key, 2 * max_len)?;
    let raw = from_hex(text).ok_or_else(|| CodecError(format!("field '{key}' is not hex")))?;
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return cerr(format!("field '{key}' is not lowercase canonical hex"));
    }
    if let Some(n) = size {
        if raw.len() != n {
            return cerr(format!("field '{key}' must be {n} bytes, got {}", raw.len()));
        }
    }
    Ok(raw)
}

pub fn hex(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Strict hex (even length, digits only; no whitespace, unlike Python's fromhex, whose
/// whitespace-tolerant results the canonical check rejects anyway).
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    let nib = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    b.chunks(2).map(|p| Some(nib(p[0])? << 4 | nib(p[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn enc(v: Value) -> String {
        String::from_utf8(encode(&v).unwrap()).unwrap()
    }

    // Vectors from node/chain/codec.py encode() (Python 3, json.dumps).
    #[test]
    fn python_vectors() {
        assert_eq!(
            enc(json!({"b": 1, "a": [true, false, null], "c": {"z": "x", "y": -5}})),
            r#"{"a":[true,false,null],"b":1,"c":{"y":-5,"z":"x"}}"#
        );
        assert_eq!(
            enc(
                json!({"s": "h\u{e9}llo \u{2603} \u{1f600} \"q\" \\ /\n\t\r\u{8}\u{c}\u{1}\u{7f}~"})
            ),
            r#"{"s":"h\u00e9llo \u2603 \ud83d\ude00 \"q\" \\ /\n\t\r\b\f\u0001\u007f~"}"#
        );
        assert_eq!(
            enc(json!({"\u{e9}": 1, "z": 2, "A": 3, "_": 4})),
            r#"{"A":3,"_":4,"z":2,"\u00e9":1}"#
        );
        assert_eq!(
            enc(json!({"n": 9223372036854775807i64, "m": -1})),
            r#"{"m":-1,"n":9223372036854775807}"#
        );
        assert_eq!(enc(json!([[], {}, ""])), r#"[[],{},""]"#);
    }

    #[test]
    fn floats_and_depth_refused() {
        assert!(encode(&json!({"f": 1.5})).is_err());
        assert!(decode(b"{\"f\":1.0}").is_err());
        assert!(decode(b"{\"f\":1e5}").is_err());
        assert!(decode(b"[[[[[[[[[1]]]]]]]]]").is_err());
        assert!(decode(b"[[[[[[[[1]]]]]]]]").is_ok());
        assert!(decode("{\"s\":\"\u{e9}\"}".as_bytes()).is_err());
        assert_eq!(decode(br#" {"s" : "\u00e9"} "#).unwrap(), json!({"s": "\u{e9}"}));
    }

    #[test]
    fn hex_fields() {
        let obj = decode_object(br#"{"a":"00ff","b":"00FF","c":"0","d":"zz"}"#).unwrap();
        assert_eq!(get_hex(&obj, "a", Some(2), 64).unwrap(), vec![0, 255]);
        assert!(get_hex(&obj, "a", Some(3), 64).is_err());
        assert!(get_hex(&obj, "b", None, 64).is_err());
        assert!(get_hex(&obj, "c", None, 64).is_err());
        assert!(get_hex(&obj, "d", None, 64).is_err());
        assert_eq!(hex(&[0, 1, 171, 255]), "0001abff");
    }

    #[test]
    fn ints() {
        let obj = decode_object(br#"{"a":5,"b":true,"c":-2,"d":"5"}"#).unwrap();
        assert_eq!(get_int(&obj, "a", 1, 10).unwrap(), 5);
        assert!(get_int(&obj, "b", 0, 10).is_err());
        assert!(get_int(&obj, "c", 0, 10).is_err());
        assert!(get_int(&obj, "d", 0, 10).is_err());
        assert!(get_int(&obj, "x", 0, 10).is_err());
    }
}
