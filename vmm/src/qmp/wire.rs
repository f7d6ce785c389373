//! QMP's wire format: the greeting, splitting a byte stream into JSON
//! values (QMP is not line-based: a client may send several objects on
//! one line or one object across many writes), checking a request's
//! shape, and the reply, error and event objects, all in QEMU 7.2's exact
//! shapes and wording.

use serde_json::{json, Map, Value};

/// The QEMU version Casemate answers as: the command line and QMP it
/// follows are QEMU 7.2's.
pub const QEMU_VERSION: (u32, u32, u32) = (7, 2, 0);

/// The largest JSON value one client may send; a longer one is dropped
/// and answered with an error, so a client's buffer stays bounded.
pub const MAX_MESSAGE: usize = 2 << 20;
/// Nesting deeper than this is refused, as QEMU's parser does (1024).
const MAX_DEPTH: usize = 1024;

pub fn package() -> String {
    format!("casemate {}", env!("CARGO_PKG_VERSION"))
}

/// `{"QMP": {"version": ..., "capabilities": []}}`.
pub fn greeting() -> String {
    let (major, minor, micro) = QEMU_VERSION;
    json!({"QMP": {
        "version": {"qemu": {"micro": micro, "minor": minor, "major": major},
                    "package": package()},
        "capabilities": []
    }})
    .to_string()
}

/// A QMP error class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    CommandNotFound,
    GenericError,
}

/// An error answer: class and QEMU's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QmpError {
    pub class: Class,
    pub desc: String,
}

impl QmpError {
    pub fn generic(desc: impl Into<String>) -> Self {
        Self {
            class: Class::GenericError,
            desc: desc.into(),
        }
    }

    pub fn not_found(desc: impl Into<String>) -> Self {
        Self {
            class: Class::CommandNotFound,
            desc: desc.into(),
        }
    }
}

/// `{"return": v}` or `{"error": ...}`, with the request's `id` echoed.
pub fn reply(r: &Result<Value, QmpError>, id: Option<&Value>) -> String {
    let mut m = Map::new();
    match r {
        Ok(v) => {
            m.insert("return".into(), v.clone());
        }
        Err(e) => {
            let class = match e.class {
                Class::CommandNotFound => "CommandNotFound",
                Class::GenericError => "GenericError",
            };
            m.insert("error".into(), json!({"class": class, "desc": e.desc}));
        }
    }
    if let Some(id) = id {
        m.insert("id".into(), id.clone());
    }
    Value::Object(m).to_string()
}

/// `{"timestamp": {"seconds", "microseconds"}, "event": NAME[, "data"]}`.
pub fn event(name: &str, data: Option<Value>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut m = Map::new();
    m.insert("event".into(), json!(name));
    if let Some(d) = data {
        m.insert("data".into(), d);
    }
    m.insert(
        "timestamp".into(),
        json!({"seconds": now.as_secs(), "microseconds": now.subsec_micros()}),
    );
    Value::Object(m).to_string()
}

/// A request that passed the shape checks.
#[derive(Debug, PartialEq)]
pub struct Request {
    pub execute: String,
    pub arguments: Map<String, Value>,
    pub id: Option<Value>,
}

/// Check a parsed value as QEMU's `qmp_dispatch` does. The error carries
/// the id when one was readable.
pub fn request(v: Value) -> Result<Request, (QmpError, Option<Value>)> {
    let Value::Object(mut m) = v else {
        return Err((QmpError::generic("QMP input must be a JSON object"), None));
    };
    let id = m.remove("id");
    let fail = |d: String, id: &Option<Value>| Err((QmpError::generic(d), id.clone()));
    for k in m.keys() {
        if !matches!(k.as_str(), "execute" | "arguments" | "exec-oob") {
            return fail(format!("QMP input member '{k}' is unexpected"), &id);
        }
    }
    if m.contains_key("exec-oob") {
        return fail("QMP input member 'exec-oob' is unexpected".into(), &id);
    }
    let execute = match m.remove("execute") {
        Some(Value::String(s)) => s,
        Some(_) => return fail("QMP input member 'execute' must be a string".into(), &id),
        None => return fail("QMP input lacks member 'execute'".into(), &id),
    };
    let arguments = match m.remove("arguments") {
        None => Map::new(),
        Some(Value::Object(a)) => a,
        Some(_) => return fail("QMP input member 'arguments' must be an object".into(), &id),
    };
    Ok(Request {
        execute,
        arguments,
        id,
    })
}

/// What the splitter found in the bytes fed so far.
#[derive(Debug, PartialEq)]
pub enum Piece {
    /// One complete JSON value's text.
    Value(Vec<u8>),
    /// Bytes that cannot start a value (answered with a parse error).
    Garbage,
    /// A value longer than `MAX_MESSAGE` (dropped).
    TooLong,
}

/// Splits a byte stream into top-level JSON values by tracking nesting
/// and strings, as QEMU's json-streamer does; holds at most
/// `MAX_MESSAGE` bytes.
#[derive(Default)]
pub struct Splitter {
    cur: Vec<u8>,
    depth: usize,
    in_str: bool,
    escape: bool,
    /// Inside a value that grew too long: skip to its end.
    skipping: bool,
    /// Inside a run of bytes that cannot start a value.
    garbage: bool,
}

impl Splitter {
    /// Feed `bytes`; complete pieces are appended to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Piece>) {
        for &b in bytes {
            if self.depth == 0 {
                match b {
                    b'{' | b'[' => {
                        if self.garbage {
                            self.garbage = false;
                            out.push(Piece::Garbage);
                        }
                        self.depth = 1;
                        self.cur.clear();
                        self.cur.push(b);
                    }
                    b' ' | b'\t' | b'\r' | b'\n' => {
                        if self.garbage {
                            self.garbage = false;
                            out.push(Piece::Garbage);
                        }
                    }
                    _ => self.garbage = true,
                }
                continue;
            }
            if !self.skipping {
                if self.cur.len() >= MAX_MESSAGE {
                    self.skipping = true;
                    self.cur = Vec::new();
                } else {
                    self.cur.push(b);
                }
            }
            if self.in_str {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_str = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_str = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => self.depth -= 1,
                _ => {}
            }
            if self.depth > MAX_DEPTH && !self.skipping {
                self.skipping = true;
                self.cur = Vec::new();
            }
            if self.depth == 0 {
                if self.skipping {
                    self.skipping = false;
                    out.push(Piece::TooLong);
                } else {
                    out.push(Piece::Value(std::mem::take(&mut self.cur)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<Piece> {
        let mut s = Splitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut out);
        }
        out
    }

    #[test]
    fn values_split_across_writes_and_several_per_write() {
        let out = split(&[b"{\"execute\":", b" \"a\"}{\"x\": \"}{\\\"\"}\n[1]"]);
        assert_eq!(
            out,
            vec![
                Piece::Value(b"{\"execute\": \"a\"}".to_vec()),
                Piece::Value(b"{\"x\": \"}{\\\"\"}".to_vec()),
                Piece::Value(b"[1]".to_vec()),
            ]
        );
    }

    #[test]
    fn garbage_and_huge_values_are_reported_not_kept() {
        let out = split(&[b"hello world\n{}"]);
        assert_eq!(
            out,
            vec![Piece::Garbage, Piece::Garbage, Piece::Value(b"{}".to_vec())]
        );
        let mut big = vec![b'{', b'"', b'a', b'"', b':', b'"'];
        big.resize(MAX_MESSAGE + 10, b'x');
        big.extend_from_slice(b"\"}{}");
        let mut s = Splitter::default();
        let mut out = Vec::new();
        s.feed(&big, &mut out);
        assert_eq!(out, vec![Piece::TooLong, Piece::Value(b"{}".to_vec())]);
        assert!(s.cur.capacity() <= MAX_MESSAGE * 2);
    }

    #[test]
    fn requests_are_checked_with_qemus_wording() {
        let e = |v: Value| request(v).unwrap_err();
        assert_eq!(e(json!([1])).0.desc, "QMP input must be a JSON object");
        assert_eq!(
            e(json!({"id": 5})).0.desc,
            "QMP input lacks member 'execute'"
        );
        assert_eq!(e(json!({"id": 5})).1, Some(json!(5)), "id echoed");
        assert_eq!(
            e(json!({"execute": 1})).0.desc,
            "QMP input member 'execute' must be a string"
        );
        assert_eq!(
            e(json!({"execute": "x", "foo": 1})).0.desc,
            "QMP input member 'foo' is unexpected"
        );
        let r = request(json!({"execute": "x", "id": "a"})).unwrap();
        assert_eq!(r.execute, "x");
        assert_eq!(
            reply(&Ok(json!({})), r.id.as_ref()),
            r#"{"id":"a","return":{}}"#
        );
        let g: Value = serde_json::from_str(&greeting()).unwrap();
        assert_eq!(g["QMP"]["version"]["qemu"]["major"], 7);
        assert_eq!(g["QMP"]["capabilities"], json!([]));
        let ev: Value = serde_json::from_str(&event("STOP", None)).unwrap();
        assert!(ev["timestamp"]["seconds"].as_u64().unwrap() > 0);
        assert!(ev["timestamp"]["microseconds"].as_u64().unwrap() < 1_000_000);
    }
}
