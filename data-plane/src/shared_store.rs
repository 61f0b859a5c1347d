//! The gateway's shared store (Goma `spec.server.redis`): a small Redis client (RESP2 over TCP,
//! AUTH, a pool of idle connections, bounded connect and command times) for middleware state
//! that every replica must see, such as rate-limit buckets and cached responses.
//!
//! Callers decide what a failure means for them (a rate limit may fall back to local buckets);
//! a command that fails or times out drops its connection.

use bytes::{Buf, Bytes, BytesMut};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_IDLE: usize = 16;
/// Replies larger than this are refused (cached bodies stay well below).
const MAX_REPLY: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Nil,
    Status(String),
    Int(i64),
    Bulk(Bytes),
    Array(Vec<Reply>),
    /// An error reply from Redis ("ERR ...", "NOSCRIPT ...").
    Error(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis {0}: {1}")]
    Io(String, std::io::Error),
    #[error("redis {0}: timed out")]
    Timeout(String),
    #[error("redis {0}: protocol error: {1}")]
    Protocol(String, &'static str),
    #[error("redis {0}: {1}")]
    Refused(String, String),
}

#[derive(Debug)]
pub struct SharedStore {
    address: String,
    password: Option<String>,
    idle: Mutex<Vec<Connection>>,
}

impl SharedStore {
    pub fn new(address: &str, password: &str) -> SharedStore {
        SharedStore {
            address: address.to_owned(),
            password: (!password.is_empty()).then(|| password.to_owned()),
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Sends one command and returns its reply (an error reply is `Ok(Reply::Error)`).
    pub async fn command<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<Reply, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match idle {
            Some(c) => c,
            None => self.connect().await?,
        };
        let reply = tokio::time::timeout(COMMAND_TIMEOUT, conn.call(args))
            .await
            .map_err(|_| StoreError::Timeout(self.address.clone()))?
            .map_err(|e| self.error(e))?;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        Ok(reply)
    }

    /// EVAL of a Lua script (atomic on the server).
    pub async fn eval(
        &self,
        script: &str,
        keys: &[&str],
        args: &[&str],
    ) -> Result<Reply, StoreError> {
        let count = keys.len().to_string();
        let mut all: Vec<&[u8]> = vec![b"EVAL", script.as_bytes(), count.as_bytes()];
        all.extend(keys.iter().map(|k| k.as_bytes()));
        all.extend(args.iter().map(|a| a.as_bytes()));
        self.command(&all).await
    }

    async fn connect(&self) -> Result<Connection, StoreError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.address))
            .await
            .map_err(|_| StoreError::Timeout(self.address.clone()))?
            .map_err(|e| StoreError::Io(self.address.clone(), e))?;
        let _ = stream.set_nodelay(true);
        let mut conn = Connection {
            stream,
            buf: BytesMut::with_capacity(4096),
        };
        if let Some(password) = &self.password {
            let reply = tokio::time::timeout(COMMAND_TIMEOUT, conn.call(&["AUTH", password]))
                .await
                .map_err(|_| StoreError::Timeout(self.address.clone()))?
                .map_err(|e| self.error(e))?;
            if let Reply::Error(e) = reply {
                return Err(StoreError::Refused(self.address.clone(), e));
            }
        }
        Ok(conn)
    }

    fn error(&self, e: ConnError) -> StoreError {
        match e {
            ConnError::Io(e) => StoreError::Io(self.address.clone(), e),
            ConnError::Protocol(p) => StoreError::Protocol(self.address.clone(), p),
        }
    }
}

#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    buf: BytesMut,
}

enum ConnError {
    Io(std::io::Error),
    Protocol(&'static str),
}

impl Connection {
    async fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Reply, ConnError> {
        self.stream
            .write_all(&encode(args))
            .await
            .map_err(ConnError::Io)?;
        loop {
            match parse(&self.buf) {
                Ok(Some((reply, used))) => {
                    self.buf.advance(used);
                    return Ok(reply);
                }
                Ok(None) if self.buf.len() > MAX_REPLY => {
                    return Err(ConnError::Protocol("reply too large"));
                }
                Ok(None) => {
                    let n = self
                        .stream
                        .read_buf(&mut self.buf)
                        .await
                        .map_err(ConnError::Io)?;
                    if n == 0 {
                        return Err(ConnError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                Err(e) => return Err(ConnError::Protocol(e)),
            }
        }
    }
}

/// A command as a RESP array of bulk strings.
fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(16 + args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One reply from the front of `buf` and the bytes it used; None when more is needed.
fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, &'static str> {
    let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let Some((&kind, line)) = buf[..line_end].split_first() else {
        return Err("empty line");
    };
    let text = || String::from_utf8_lossy(line).into_owned();
    let number = || -> Result<i64, &'static str> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad number")
    };
    let rest = line_end + 2;
    Ok(Some(match kind {
        b'+' => (Reply::Status(text()), rest),
        b'-' => (Reply::Error(text()), rest),
        b':' => (Reply::Int(number()?), rest),
        b'$' => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Reply::Nil, rest)));
            }
            let len = usize::try_from(len).map_err(|_| "bad length")?;
            if len > MAX_REPLY {
                return Err("bulk too large");
            }
            if buf.len() < rest + len + 2 {
                return Ok(None);
            }
            (
                Reply::Bulk(Bytes::copy_from_slice(&buf[rest..rest + len])),
                rest + len + 2,
            )
        }
        b'*' => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Reply::Nil, rest)));
            }
            let mut items = Vec::new();
            let mut at = rest;
            for _ in 0..len {
                match parse(&buf[at..])? {
                    Some((item, used)) => {
                        items.push(item);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            (Reply::Array(items), at)
        }
        _ => return Err("unknown reply type"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn encodes_and_parses_resp() {
        assert_eq!(encode(&["GET", "k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        let cases: [(&[u8], Reply); 5] = [
            (b"+OK\r\n", Reply::Status("OK".into())),
            (b"-ERR no\r\n", Reply::Error("ERR no".into())),
            (b":-3\r\n", Reply::Int(-3)),
            (b"$-1\r\n", Reply::Nil),
            (
                b"*2\r\n$2\r\nab\r\n:1\r\n",
                Reply::Array(vec![Reply::Bulk(Bytes::from_static(b"ab")), Reply::Int(1)]),
            ),
        ];
        for (wire, expected) in cases {
            assert_eq!(parse(wire).unwrap(), Some((expected, wire.len())));
            assert_eq!(parse(&wire[..wire.len() - 1]).unwrap(), None);
        }
        assert!(parse(b"?x\r\n").is_err());
    }

    /// A one-connection fake server answering AUTH then echoing the first argument as bulk.
    #[tokio::test]
    async fn authenticates_and_reuses_the_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 1024];
            for reply in [&b"+OK\r\n"[..], b"$4\r\nPING\r\n", b"$4\r\nECHO\r\n"] {
                let n = s.read(&mut buf).await.unwrap();
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                s.write_all(reply).await.unwrap();
            }
            seen
        });
        let store = SharedStore::new(&addr, "secret");
        assert_eq!(
            store.command(&["PING"]).await.unwrap(),
            Reply::Bulk(Bytes::from_static(b"PING"))
        );
        assert_eq!(
            store.command(&["ECHO"]).await.unwrap(),
            Reply::Bulk(Bytes::from_static(b"ECHO"))
        );
        let seen = server.await.unwrap();
        assert_eq!(seen[0], "*2\r\n$4\r\nAUTH\r\n$6\r\nsecret\r\n");
    }

    #[tokio::test]
    async fn an_unreachable_store_fails_fast() {
        let store = SharedStore::new("127.0.0.1:1", "");
        assert!(store.command(&["PING"]).await.is_err());
    }
}
