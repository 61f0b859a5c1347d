//! LDAP search filters (RFC 4515 string form) to BER, and escaping of values put into them.
//!
//! The user name is escaped before it is substituted for `%s`, so `*`, `(`, `)`, `\` and NUL
//! in a name are literal characters, never filter syntax (LDAP injection).

/// RFC 4515 §3: `*`, `(`, `)`, `\` and NUL become `\2a`, `\28`, `\29`, `\5c`, `\00`.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// `template` with every `%s` replaced by the escaped `user`, encoded as BER.
pub fn user_filter(template: &str, user: &str) -> Result<Vec<u8>, String> {
    encode(&template.replace("%s", &escape(user)))
}

/// Parses a filter string and encodes it.
pub fn encode(filter: &str) -> Result<Vec<u8>, String> {
    let mut parser = Parser {
        s: filter.as_bytes(),
        pos: 0,
        depth: 0,
    };
    let mut out = Vec::new();
    parser.filter(&mut out)?;
    if parser.pos != parser.s.len() {
        return Err(format!("{filter:?}: unexpected text after the filter"));
    }
    Ok(out)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    depth: u32,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at offset {}", c as char, self.pos))
        }
    }

    fn filter(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        self.depth += 1;
        if self.depth > 32 {
            return Err("filter nested too deeply".into());
        }
        self.eat(b'(')?;
        match self.peek() {
            Some(b'&') | Some(b'|') => {
                let tag = if self.peek() == Some(b'&') {
                    0xa0
                } else {
                    0xa1
                };
                self.pos += 1;
                let mut set = Vec::new();
                while self.peek() == Some(b'(') {
                    self.filter(&mut set)?;
                }
                if set.is_empty() {
                    return Err(format!("empty filter list at offset {}", self.pos));
                }
                super::ber::tlv(out, tag, &set);
            }
            Some(b'!') => {
                self.pos += 1;
                let mut inner = Vec::new();
                self.filter(&mut inner)?;
                super::ber::tlv(out, 0xa2, &inner);
            }
            _ => self.item(out)?,
        }
        self.eat(b')')?;
        self.depth -= 1;
        Ok(())
    }

    /// `attr=value`, `attr=*`, `attr=a*b*c`, `attr>=v`, `attr<=v`, `attr~=v`.
    fn item(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b';' {
                self.pos += 1;
            } else {
                break;
            }
        }
        let attr = &self.s[start..self.pos];
        if attr.is_empty() {
            return Err(format!("attribute name expected at offset {start}"));
        }
        let tag = match (self.peek(), self.s.get(self.pos + 1).copied()) {
            (Some(b'='), _) => {
                self.pos += 1;
                None
            }
            (Some(b'>'), Some(b'=')) => Some(0xa5),
            (Some(b'<'), Some(b'=')) => Some(0xa6),
            (Some(b'~'), Some(b'=')) => Some(0xa8),
            _ => return Err(format!("operator expected at offset {}", self.pos)),
        };
        if tag.is_some() {
            self.pos += 2;
        }
        // The raw value runs to the closing parenthesis; '*' splits substrings.
        let mut pieces: Vec<Vec<u8>> = vec![Vec::new()];
        loop {
            match self.peek() {
                None => return Err("unterminated filter".into()),
                Some(b')') => break,
                Some(b'(') => return Err(format!("unescaped '(' at offset {}", self.pos)),
                Some(b'*') => {
                    pieces.push(Vec::new());
                    self.pos += 1;
                }
                Some(b'\\') => {
                    let hex = self
                        .s
                        .get(self.pos + 1..self.pos + 3)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| format!("bad escape at offset {}", self.pos))?;
                    if let Some(last) = pieces.last_mut() {
                        last.push(hex);
                    }
                    self.pos += 3;
                }
                Some(c) => {
                    if let Some(last) = pieces.last_mut() {
                        last.push(c);
                    }
                    self.pos += 1;
                }
            }
        }
        let mut body = Vec::new();
        super::ber::tlv(&mut body, 0x04, attr);
        match (tag, pieces.len()) {
            (Some(tag), 1) => {
                super::ber::tlv(&mut body, 0x04, &pieces[0]);
                super::ber::tlv(out, tag, &body);
            }
            (Some(_), _) => {
                return Err(format!(
                    "'*' is not allowed in an ordering or approximate match at offset {}",
                    self.pos
                ));
            }
            (None, 1) => {
                super::ber::tlv(&mut body, 0x04, &pieces[0]);
                super::ber::tlv(out, 0xa3, &body);
            }
            (None, 2) if pieces[0].is_empty() && pieces[1].is_empty() => {
                super::ber::tlv(out, 0x87, attr);
            }
            (None, n) => {
                let mut subs = Vec::new();
                for (i, piece) in pieces.iter().enumerate() {
                    if piece.is_empty() {
                        if i == 0 || i == n - 1 {
                            continue;
                        }
                        return Err(format!("empty substring ('**') at offset {}", self.pos));
                    }
                    let tag = if i == 0 {
                        0x80
                    } else if i == n - 1 {
                        0x82
                    } else {
                        0x81
                    };
                    super::ber::tlv(&mut subs, tag, piece);
                }
                super::ber::tlv(&mut body, 0x30, &subs);
                super::ber::tlv(out, 0xa4, &body);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_special_character() {
        assert_eq!(escape("a*b(c)d\\e\0"), "a\\2ab\\28c\\29d\\5ce\\00");
        assert_eq!(escape("jöhn.doe"), "jöhn.doe");
    }

    #[test]
    fn encodes_equality_presence_substrings_and_logic() {
        assert_eq!(
            encode("(uid=bob)").unwrap(),
            [
                0xa3, 0x0a, 0x04, 0x03, b'u', b'i', b'd', 0x04, 0x03, b'b', b'o', b'b'
            ]
        );
        assert_eq!(encode("(uid=*)").unwrap(), [0x87, 0x03, b'u', b'i', b'd']);
        assert_eq!(
            encode("(cn=a*b)").unwrap(),
            [
                0xa4, 0x0c, 0x04, 0x02, b'c', b'n', 0x30, 0x06, 0x80, 0x01, b'a', 0x82, 0x01, b'b'
            ]
        );
        let and = encode("(&(objectClass=person)(!(uid>=m)))").unwrap();
        assert_eq!(and[0], 0xa0);
        assert!(encode("(uid=a").is_err());
        assert!(encode("(uid=a))").is_err());
        assert!(encode("uid=a").is_err());
        assert!(encode("(&)").is_err());
        assert!(encode("(uid=\\zz)").is_err());
    }

    #[test]
    fn an_injected_name_stays_one_literal_equality_match() {
        // Without escaping this would be (uid=*)(uid=*): match everyone.
        let filter = user_filter("(uid=%s)", "*)(uid=*").unwrap();
        let literal = user_filter("(uid=%s)", "x").unwrap();
        assert_eq!(
            filter[0], 0xa3,
            "an equality match, not presence or substrings"
        );
        assert_eq!(literal[0], 0xa3);
        assert!(filter.windows(8).any(|w| w == b"*)(uid=*"));
        // Within an AND, the structure is unchanged by the name.
        let filter = user_filter("(&(objectClass=person)(uid=%s))", "a)(|(uid=*").unwrap();
        assert_eq!(filter[0], 0xa0);
        assert!(!filter.contains(&0xa1), "no OR was injected");
    }
}
