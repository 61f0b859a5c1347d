//! The few LDAPv3 messages (RFC 4511) the ldap middleware exchanges, BER-encoded: simple bind,
//! subtree search for one DN, StartTLS and unbind. Decoding reads only what it needs and
//! refuses anything malformed (the directory's bytes are untrusted input).

pub const RESULT_SUCCESS: u32 = 0;
pub const RESULT_INVALID_CREDENTIALS: u32 = 49;
const START_TLS_OID: &[u8] = b"1.3.6.1.4.1.1466.20037";

/// Largest message accepted from the directory.
pub const MAX_MESSAGE: usize = 256 * 1024;

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const ENUMERATED: u8 = 0x0a;
const BOOLEAN: u8 = 0x01;

const BIND_REQUEST: u8 = 0x60;
const BIND_RESPONSE: u8 = 0x61;
const SEARCH_REQUEST: u8 = 0x63;
pub const SEARCH_ENTRY: u8 = 0x64;
pub const SEARCH_DONE: u8 = 0x65;
pub const SEARCH_REFERENCE: u8 = 0x73;
const EXTENDED_REQUEST: u8 = 0x77;
const EXTENDED_RESPONSE: u8 = 0x78;

/// Appends a tag-length-value.
pub fn tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
}

fn integer(out: &mut Vec<u8>, tag: u8, value: u32) {
    let bytes = value.to_be_bytes();
    let mut start = bytes.iter().take_while(|b| **b == 0).count().min(3);
    // Keep a leading zero when the high bit is set (BER integers are signed).
    if bytes[start] & 0x80 != 0 && start > 0 {
        start -= 1;
    }
    tlv(out, tag, &bytes[start..]);
}

fn message(id: u32, op: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(op.len() + 6);
    integer(&mut content, INTEGER, id);
    content.extend_from_slice(op);
    let mut out = Vec::with_capacity(content.len() + 6);
    tlv(&mut out, SEQUENCE, &content);
    out
}

/// A simple bind (anonymous when both are empty).
pub fn bind_request(id: u32, dn: &str, password: &str) -> Vec<u8> {
    let mut op = Vec::new();
    integer(&mut op, INTEGER, 3);
    tlv(&mut op, OCTET_STRING, dn.as_bytes());
    tlv(&mut op, 0x80, password.as_bytes());
    let mut wrapped = Vec::new();
    tlv(&mut wrapped, BIND_REQUEST, &op);
    message(id, &wrapped)
}

/// A subtree search under `base` for entries matching `filter` (already BER), returning no
/// attributes ("1.1"): only the DNs are wanted. At most 2 entries: more than one is ambiguous.
pub fn search_request(id: u32, base: &str, filter: &[u8], time_limit_secs: u32) -> Vec<u8> {
    let mut op = Vec::new();
    tlv(&mut op, OCTET_STRING, base.as_bytes());
    integer(&mut op, ENUMERATED, 2); // wholeSubtree
    integer(&mut op, ENUMERATED, 0); // neverDerefAliases
    integer(&mut op, INTEGER, 2); // sizeLimit
    integer(&mut op, INTEGER, time_limit_secs);
    tlv(&mut op, BOOLEAN, &[0xff]); // typesOnly
    op.extend_from_slice(filter);
    let mut attrs = Vec::new();
    tlv(&mut attrs, OCTET_STRING, b"1.1");
    tlv(&mut op, SEQUENCE, &attrs);
    let mut wrapped = Vec::new();
    tlv(&mut wrapped, SEARCH_REQUEST, &op);
    message(id, &wrapped)
}

pub fn start_tls_request(id: u32) -> Vec<u8> {
    let mut op = Vec::new();
    tlv(&mut op, 0x80, START_TLS_OID);
    let mut wrapped = Vec::new();
    tlv(&mut wrapped, EXTENDED_REQUEST, &op);
    message(id, &wrapped)
}

/// One TLV read from a buffer.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn next(&mut self) -> Result<(u8, &'a [u8]), String> {
        let (tag, header, len) = header(self.0)?.ok_or("truncated element")?;
        let end = header + len;
        if self.0.len() < end {
            return Err("truncated element".into());
        }
        let content = &self.0[header..end];
        self.0 = &self.0[end..];
        Ok((tag, content))
    }

    fn expect(&mut self, want: u8) -> Result<&'a [u8], String> {
        let (tag, content) = self.next()?;
        if tag != want {
            return Err(format!("expected tag {want:#04x}, found {tag:#04x}"));
        }
        Ok(content)
    }
}

/// (tag, header length, content length) of the element at the start of `buf`; None when more
/// bytes are needed to know.
pub fn header(buf: &[u8]) -> Result<Option<(u8, usize, usize)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let tag = buf[0];
    if tag & 0x1f == 0x1f {
        return Err("multi-byte tags are not used by LDAP".into());
    }
    let first = buf[1];
    if first < 0x80 {
        return Ok(Some((tag, 2, usize::from(first))));
    }
    let count = usize::from(first & 0x7f);
    if count == 0 || count > 4 {
        return Err("unsupported length encoding".into());
    }
    if buf.len() < 2 + count {
        return Ok(None);
    }
    let len = buf[2..2 + count]
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    Ok(Some((tag, 2 + count, len)))
}

fn uint(content: &[u8]) -> Result<u32, String> {
    if content.is_empty() || content.len() > 5 || content[0] & 0x80 != 0 {
        return Err("integer out of range".into());
    }
    let value = content
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    u32::try_from(value).map_err(|_| "integer out of range".into())
}

/// A message from the directory, reduced to what the middleware uses.
#[derive(Debug, PartialEq, Eq)]
pub enum Response {
    /// Bind, search-done or extended response: the result code and diagnostic message.
    Result { op: u8, code: u32, message: String },
    /// A search result entry's DN.
    Entry(Vec<u8>),
    /// A search continuation reference (ignored).
    Reference,
}

/// Decodes one whole LDAPMessage; returns its message ID.
pub fn decode(buf: &[u8]) -> Result<(u32, Response), String> {
    let mut outer = Reader(buf);
    let body = outer.expect(SEQUENCE)?;
    let mut body = Reader(body);
    let id = uint(body.expect(INTEGER)?)?;
    let (op, content) = body.next()?;
    let mut fields = Reader(content);
    let response = match op {
        BIND_RESPONSE | SEARCH_DONE | EXTENDED_RESPONSE => {
            let code = uint(fields.expect(ENUMERATED)?)?;
            let _matched = fields.expect(OCTET_STRING)?;
            let message = fields.expect(OCTET_STRING)?;
            Response::Result {
                op,
                code,
                message: String::from_utf8_lossy(message).into_owned(),
            }
        }
        SEARCH_ENTRY => Response::Entry(fields.expect(OCTET_STRING)?.to_vec()),
        SEARCH_REFERENCE => Response::Reference,
        other => return Err(format!("unexpected LDAP operation {other:#04x}")),
    };
    Ok((id, response))
}

pub fn is_bind_response(op: u8) -> bool {
    op == BIND_RESPONSE
}

pub fn is_extended_response(op: u8) -> bool {
    op == EXTENDED_RESPONSE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_request_matches_a_known_encoding() {
        // RFC 4511 BindRequest: version 3, name "cn=a", simple [0] "b", in message 1.
        let bytes = bind_request(1, "cn=a", "b");
        assert_eq!(
            bytes,
            [
                0x30, 0x11, 0x02, 0x01, 0x01, 0x60, 0x0c, 0x02, 0x01, 0x03, 0x04, 0x04, b'c', b'n',
                b'=', b'a', 0x80, 0x01, b'b'
            ]
        );
    }

    #[test]
    fn long_lengths_and_integers() {
        let mut out = Vec::new();
        tlv(&mut out, OCTET_STRING, &[0u8; 300]);
        assert_eq!(&out[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(header(&out).unwrap(), Some((0x04, 4, 300)));
        let mut out = Vec::new();
        integer(&mut out, INTEGER, 128);
        assert_eq!(out, [0x02, 0x02, 0x00, 0x80]);
        let mut out = Vec::new();
        integer(&mut out, INTEGER, 0);
        assert_eq!(out, [0x02, 0x01, 0x00]);
    }

    #[test]
    fn decodes_results_and_entries_and_refuses_garbage() {
        // BindResponse id 1, invalidCredentials, "", "bad".
        let mut op = Vec::new();
        integer(&mut op, ENUMERATED, 49);
        tlv(&mut op, OCTET_STRING, b"");
        tlv(&mut op, OCTET_STRING, b"bad");
        let mut wrapped = Vec::new();
        tlv(&mut wrapped, BIND_RESPONSE, &op);
        let msg = message(1, &wrapped);
        assert_eq!(
            decode(&msg).unwrap(),
            (
                1,
                Response::Result {
                    op: BIND_RESPONSE,
                    code: 49,
                    message: "bad".into()
                }
            )
        );
        let mut op = Vec::new();
        tlv(&mut op, OCTET_STRING, b"uid=x,dc=t");
        tlv(&mut op, SEQUENCE, &[]);
        let mut wrapped = Vec::new();
        tlv(&mut wrapped, SEARCH_ENTRY, &op);
        let msg = message(7, &wrapped);
        assert_eq!(
            decode(&msg).unwrap(),
            (7, Response::Entry(b"uid=x,dc=t".to_vec()))
        );
        assert!(decode(&msg[..msg.len() - 1]).is_err());
        assert!(decode(&[0x30, 0x03, 0x02, 0x01]).is_err());
        assert!(decode(&[]).is_err());
    }
}
