//! A minimal RFC 6455 WebSocket echo: the opening handshake, then every data frame is sent back
//! (unmasked, same opcode), pings are answered and a close is returned. No extensions.

use super::{EchoBody, full};
use base64::Engine;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Larger frames close the connection: an echo has no use for them.
const MAX_PAYLOAD: u64 = 1 << 20;

const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

pub(super) fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut input = Vec::with_capacity(key.len() + ACCEPT_GUID.len());
    input.extend_from_slice(key);
    input.extend_from_slice(ACCEPT_GUID.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

pub(super) fn accept(mut req: Request<hyper::body::Incoming>) -> Response<EchoBody> {
    let Some(key) = req.headers().get("sec-websocket-key") else {
        let mut resp = Response::new(full("missing Sec-WebSocket-Key\n"));
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return resp;
    };
    let accept = accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let _ = echo_frames(TokioIo::new(upgraded)).await;
            }
            Err(error) => tracing::debug!(%error, "websocket upgrade failed"),
        }
    });
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        headers.insert("sec-websocket-accept", v);
    }
    resp
}

async fn echo_frames<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) -> std::io::Result<()> {
    loop {
        let mut head = [0u8; 2];
        io.read_exact(&mut head).await?;
        let fin_and_opcode = head[0] & 0x8F;
        let opcode = head[0] & 0x0F;
        let masked = head[1] & 0x80 != 0;
        let len = match head[1] & 0x7F {
            126 => u64::from(io.read_u16().await?),
            127 => io.read_u64().await?,
            n => u64::from(n),
        };
        if len > MAX_PAYLOAD {
            return Err(std::io::Error::other("frame too large"));
        }
        let mut mask = [0u8; 4];
        if masked {
            io.read_exact(&mut mask).await?;
        }
        let mut payload = vec![0u8; len as usize];
        io.read_exact(&mut payload).await?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        let reply = match opcode {
            OP_PING => 0x80 | OP_PONG,
            OP_PONG => continue,
            _ => fin_and_opcode,
        };
        io.write_all(&frame_header(reply, payload.len())).await?;
        io.write_all(&payload).await?;
        io.flush().await?;
        if opcode == OP_CLOSE {
            return io.shutdown().await;
        }
    }
}

/// An unmasked (server) frame header.
fn frame_header(fin_and_opcode: u8, len: usize) -> Vec<u8> {
    let mut h = vec![fin_and_opcode];
    match len {
        0..=125 => h.push(len as u8),
        126..=0xFFFF => {
            h.push(126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            h.push(127);
            h.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn echoes_masked_frames_and_closes() {
        let (mut client, server) = tokio::io::duplex(1024);
        tokio::spawn(echo_frames(server));
        // Masked "hi" text frame, then a masked close.
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x81, 0x80 | 2];
        frame.extend_from_slice(&mask);
        frame.extend(b"hi".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame.extend_from_slice(&[0x88, 0x80, 0, 0, 0, 0]);
        client.write_all(&frame).await.unwrap();
        let mut echoed = Vec::new();
        client.read_to_end(&mut echoed).await.unwrap();
        assert_eq!(echoed, [0x81, 2, b'h', b'i', 0x88, 0]);
    }
}
