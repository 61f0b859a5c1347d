//! Goma's JWT `claimsExpression`, parsed into the `ClaimsCheck` tree the data plane evaluates.
//!
//! ```text
//! expr  := and ("||" and)*
//! and   := unary ("&&" unary)*
//! unary := "!" unary | "(" expr ")" | call
//! call  := ("Equals" | "Prefix" | "Contains" | "OneOf") "(" claim ("," value)+ ")"
//! ```
//! Claims and values are strings quoted with backticks (Goma's style), single or double quotes.
//! `Equals` and `Prefix` take one value, `Contains` and `OneOf` one or more.

use sluice_proto::config as pb;

/// Deepest nesting accepted (the data plane enforces the same bound).
const MAX_DEPTH: usize = 32;

/// Parses an expression; errors give the character position (from 1).
pub fn parse(text: &str) -> Result<pb::ClaimsCheck, String> {
    let mut p = Parser {
        text,
        chars: text.char_indices().collect(),
        pos: 0,
    };
    let expr = p.or(0)?;
    p.skip_space();
    if p.pos < p.chars.len() {
        return Err(p.error("expected && or || or the end"));
    }
    Ok(expr)
}

struct Parser<'a> {
    text: &'a str,
    chars: Vec<(usize, char)>,
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        match self.chars.get(self.pos) {
            Some((byte, _)) => {
                let near: String = self.text[*byte..].chars().take(12).collect();
                format!("at character {}: {what} (found {near:?})", self.pos + 1)
            }
            None => format!("at the end: {what}"),
        }
    }

    fn skip_space(&mut self) {
        while self
            .chars
            .get(self.pos)
            .is_some_and(|(_, c)| c.is_whitespace())
        {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_space();
        self.chars.get(self.pos).map(|(_, c)| *c)
    }

    /// Consumes `token` when it comes next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        let n = token.chars().count();
        let matches = self.chars.len() >= self.pos + n
            && self.chars[self.pos..self.pos + n]
                .iter()
                .map(|(_, c)| *c)
                .eq(token.chars());
        if matches {
            self.pos += n;
        }
        matches
    }

    fn or(&mut self, depth: usize) -> Result<pb::ClaimsCheck, String> {
        let mut items = vec![self.and(depth)?];
        while self.eat("||") {
            items.push(self.and(depth)?);
        }
        Ok(combine(items, |checks| {
            pb::claims_check::Check::Any(pb::ClaimsChecks { checks })
        }))
    }

    fn and(&mut self, depth: usize) -> Result<pb::ClaimsCheck, String> {
        let mut items = vec![self.unary(depth)?];
        while self.eat("&&") {
            items.push(self.unary(depth)?);
        }
        Ok(combine(items, |checks| {
            pb::claims_check::Check::All(pb::ClaimsChecks { checks })
        }))
    }

    fn unary(&mut self, depth: usize) -> Result<pb::ClaimsCheck, String> {
        if depth > MAX_DEPTH {
            return Err(self.error(&format!("nested deeper than {MAX_DEPTH}")));
        }
        if self.eat("!") {
            let inner = self.unary(depth + 1)?;
            return Ok(pb::ClaimsCheck {
                check: Some(pb::claims_check::Check::Not(Box::new(inner))),
            });
        }
        if self.eat("(") {
            let inner = self.or(depth + 1)?;
            if !self.eat(")") {
                return Err(self.error("expected )"));
            }
            return Ok(inner);
        }
        self.call()
    }

    fn call(&mut self) -> Result<pb::ClaimsCheck, String> {
        use pb::ClaimFunction as F;
        self.skip_space();
        let start = self.pos;
        while self
            .chars
            .get(self.pos)
            .is_some_and(|(_, c)| c.is_ascii_alphabetic())
        {
            self.pos += 1;
        }
        let name: String = self.chars[start..self.pos].iter().map(|(_, c)| c).collect();
        let function = match name.as_str() {
            "Equals" => F::Equals,
            "Prefix" => F::Prefix,
            "Contains" => F::Contains,
            "OneOf" => F::OneOf,
            _ => {
                self.pos = start;
                return Err(self.error("expected Equals, Prefix, Contains, OneOf, ! or ("));
            }
        };
        if !self.eat("(") {
            return Err(self.error(&format!("expected ( after {name}")));
        }
        let claim = self.string()?;
        if claim.is_empty() {
            return Err(self.error("the claim name is empty"));
        }
        let mut values = Vec::new();
        while self.eat(",") {
            values.push(self.string()?);
        }
        if !self.eat(")") {
            return Err(self.error("expected , or )"));
        }
        let single = matches!(function, F::Equals | F::Prefix);
        if values.is_empty() || (single && values.len() > 1) {
            return Err(format!(
                "{name}({claim:?}, ...) takes {} value{} after the claim, {} given",
                if single {
                    "exactly one"
                } else {
                    "at least one"
                },
                if single { "" } else { "s" },
                values.len()
            ));
        }
        Ok(pb::ClaimsCheck {
            check: Some(pb::claims_check::Check::Test(pb::ClaimTest {
                function: function as i32,
                claim,
                values,
            })),
        })
    }

    fn string(&mut self) -> Result<String, String> {
        let Some(quote) = self.peek().filter(|c| matches!(c, '`' | '\'' | '"')) else {
            return Err(self.error("expected a quoted string (`...`, '...' or \"...\")"));
        };
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.chars.get(self.pos) {
                None => {
                    self.pos = open;
                    return Err(self.error("unterminated string"));
                }
                Some((_, c)) if *c == quote => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some((_, c)) => {
                    out.push(*c);
                    self.pos += 1;
                }
            }
        }
    }
}

/// One item as itself, several under `wrap`.
fn combine(
    mut items: Vec<pb::ClaimsCheck>,
    wrap: impl FnOnce(Vec<pb::ClaimsCheck>) -> pb::claims_check::Check,
) -> pb::ClaimsCheck {
    if items.len() == 1 {
        items.remove(0)
    } else {
        pb::ClaimsCheck {
            check: Some(wrap(items)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::claims_check::Check;

    /// A compact rendering of a tree, for readable assertions.
    fn show(c: &pb::ClaimsCheck) -> String {
        match &c.check {
            None => "?".into(),
            Some(Check::All(l)) => format!(
                "all({})",
                l.checks.iter().map(show).collect::<Vec<_>>().join(", ")
            ),
            Some(Check::Any(l)) => format!(
                "any({})",
                l.checks.iter().map(show).collect::<Vec<_>>().join(", ")
            ),
            Some(Check::Not(i)) => format!("not({})", show(i)),
            Some(Check::Test(t)) => format!(
                "{}({}={})",
                pb::ClaimFunction::try_from(t.function)
                    .map(|f| f.as_str_name())
                    .unwrap_or("?"),
                t.claim,
                t.values.join("|")
            ),
        }
    }

    #[test]
    fn precedence_not_binds_tightest_then_and_then_or() {
        let e = parse("Equals(`a`, `1`) || !Prefix('b', \"x\") && OneOf(`c`, `y`, `z`)").unwrap();
        assert_eq!(
            show(&e),
            "any(CLAIM_FUNCTION_EQUALS(a=1), all(not(CLAIM_FUNCTION_PREFIX(b=x)), CLAIM_FUNCTION_ONE_OF(c=y|z)))"
        );
    }

    #[test]
    fn parentheses_group() {
        let e = parse(
            "Equals(`email_verified`, `true`) && (OneOf(`user.role`, `admin`, `owner`) || Contains(`tags`, `vip`))",
        )
        .unwrap();
        assert_eq!(
            show(&e),
            "all(CLAIM_FUNCTION_EQUALS(email_verified=true), any(CLAIM_FUNCTION_ONE_OF(user.role=admin|owner), CLAIM_FUNCTION_CONTAINS(tags=vip)))"
        );
        let e = parse("!(Equals(`a`,`1`))").unwrap();
        assert_eq!(show(&e), "not(CLAIM_FUNCTION_EQUALS(a=1))");
        // Values may hold operators, commas and other quotes.
        let e = parse("Equals(`x`, `a && b, 'c'`)").unwrap();
        assert_eq!(show(&e), "CLAIM_FUNCTION_EQUALS(x=a && b, 'c')");
    }

    #[test]
    fn errors_say_where_and_why() {
        let cases = [
            ("", "at the end: expected Equals"),
            ("Equal(`a`, `b`)", "at character 1: expected Equals"),
            ("Equals(`a`)", "takes exactly one value"),
            ("Equals(`a`, `b`, `c`)", "takes exactly one value"),
            ("OneOf(`a`)", "takes at least one value"),
            ("Equals(`a`, `b`", "at the end: expected , or )"),
            ("Equals(`a, `b`)", "expected , or )"),
            (
                "Equals(`a`, b)",
                "at character 13: expected a quoted string",
            ),
            ("Equals(`a`, `b`) &&", "at the end: expected Equals"),
            (
                "Equals(`a`, `b`) & Equals(`c`, `d`)",
                "at character 18: expected && or ||",
            ),
            ("(Equals(`a`, `b`)", "at the end: expected )"),
            ("Equals(``, `b`)", "the claim name is empty"),
            ("Equals(`a`, `b)", "unterminated string"),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text);
            assert!(
                err.contains(want),
                "{text:?}: {err:?} should contain {want:?}"
            );
        }
        let deep = format!("{}Equals(`a`, `b`)", "!".repeat(40));
        assert!(parse(&deep).unwrap_err().contains("deeper"));
        let deep = format!("{}Equals(`a`, `b`){}", "(".repeat(40), ")".repeat(40));
        assert!(parse(&deep).unwrap_err().contains("deeper"));
    }
}
