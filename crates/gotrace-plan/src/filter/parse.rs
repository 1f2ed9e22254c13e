//! The `--where` language: comparisons of arguments, results and their fields with constants,
//! joined by `&&`, `||`, `!` and parentheses.
//!
//! ```text
//! expr    := or
//! or      := and ("||" and)*
//! and     := unary ("&&" unary)*
//! unary   := "!" unary | "(" expr ")" | prefix | compare
//! prefix  := "strings.HasPrefix" "(" path "," STRING ")"
//! compare := operand (("==" | "!=" | "<" | "<=" | ">" | ">=") operand)?
//! operand := path | INT | STRING | "true" | "false" | "nil"
//! path    := NAME ("." NAME)*
//! ```

use super::FilterError;

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare {
        left: Operand,
        op: CmpOp,
        right: Operand,
        at: usize,
    },
    /// A bare boolean value: `ok`.
    Truth(Path),
    HasPrefix {
        path: Path,
        prefix: Vec<u8>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// `a op b` as `b flipped a`.
    pub fn flipped(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            same => same,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    Path(Path),
    Int(i128),
    Str(Vec<u8>),
    Bool(bool),
    Nil,
}

/// `req.URL.Path`: an argument or result, then fields (through pointers, as Go writes them).
#[derive(Clone, Debug, PartialEq)]
pub struct Path {
    pub parts: Vec<String>,
    /// Byte offset of the path in the expression, for errors.
    pub at: usize,
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Name(String),
    Int(i128),
    Str(Vec<u8>),
    Dot,
    Comma,
    LParen,
    RParen,
    Not,
    And,
    Or,
    Cmp(CmpOp),
    End,
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

impl Lexer<'_> {
    fn error(&self, at: usize, message: impl Into<String>) -> FilterError {
        FilterError::at(self.text, at, message)
    }

    /// The next token and where it starts.
    fn next(&mut self) -> Result<(Token, usize), FilterError> {
        let bytes = self.text.as_bytes();
        while self.pos < bytes.len() && bytes[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
        let at = self.pos;
        let Some(&c) = bytes.get(at) else {
            return Ok((Token::End, at));
        };
        let two = |s: &str| self.text[at..].starts_with(s);
        let (token, len) = match c {
            b'.' => (Token::Dot, 1),
            b',' => (Token::Comma, 1),
            b'(' => (Token::LParen, 1),
            b')' => (Token::RParen, 1),
            b'&' if two("&&") => (Token::And, 2),
            b'|' if two("||") => (Token::Or, 2),
            b'=' if two("==") => (Token::Cmp(CmpOp::Eq), 2),
            b'!' if two("!=") => (Token::Cmp(CmpOp::Ne), 2),
            b'!' => (Token::Not, 1),
            b'<' if two("<=") => (Token::Cmp(CmpOp::Le), 2),
            b'<' => (Token::Cmp(CmpOp::Lt), 1),
            b'>' if two(">=") => (Token::Cmp(CmpOp::Ge), 2),
            b'>' => (Token::Cmp(CmpOp::Gt), 1),
            b'"' => return self.string(at),
            b'-' | b'0'..=b'9' => return self.int(at),
            c if c == b'_' || c == b'~' || c.is_ascii_alphabetic() => {
                let len = self.text[at..]
                    .find(|ch: char| !(ch == '_' || ch == '~' || ch.is_ascii_alphanumeric()))
                    .unwrap_or(self.text.len() - at);
                (Token::Name(self.text[at..at + len].to_owned()), len)
            }
            _ => {
                let ch = self.text[at..].chars().next().unwrap_or('?');
                return Err(self.error(at, format!("unexpected {ch:?}")));
            }
        };
        self.pos += len;
        Ok((token, at))
    }

    fn int(&mut self, at: usize) -> Result<(Token, usize), FilterError> {
        let rest = &self.text[at..];
        let (negative, digits_at) = match rest.strip_prefix('-') {
            Some(_) => (true, at + 1),
            None => (false, at),
        };
        let len = self.text[digits_at..]
            .find(|ch: char| !ch.is_ascii_alphanumeric() && ch != '_')
            .unwrap_or(self.text.len() - digits_at);
        let word = self.text[digits_at..digits_at + len].replace('_', "");
        let parsed = match word.strip_prefix("0x").or_else(|| word.strip_prefix("0X")) {
            Some(hex) => i128::from_str_radix(hex, 16),
            None => word.parse::<i128>(),
        };
        let value = parsed.map_err(|_| self.error(at, "not a number"))?;
        self.pos = digits_at + len;
        if self.text[self.pos..].starts_with('.') {
            return Err(self.error(
                at,
                "floating-point values cannot be tested: Go passes them in XMM registers, which probes do not read",
            ));
        }
        Ok((Token::Int(if negative { -value } else { value }), at))
    }

    /// A Go interpreted string literal with the common escapes.
    fn string(&mut self, at: usize) -> Result<(Token, usize), FilterError> {
        let mut out = Vec::new();
        let mut chars = self.text[at + 1..].char_indices();
        while let Some((i, ch)) = chars.next() {
            match ch {
                '"' => {
                    self.pos = at + 1 + i + 1;
                    return Ok((Token::Str(out), at));
                }
                '\\' => {
                    let escaped = match chars.next().map(|(_, e)| e) {
                        Some('n') => b'\n',
                        Some('t') => b'\t',
                        Some('r') => b'\r',
                        Some('0') => 0,
                        Some('\\') => b'\\',
                        Some('"') => b'"',
                        _ => return Err(self.error(at + 1 + i, "unknown escape")),
                    };
                    out.push(escaped);
                }
                ch => {
                    let mut buf = [0; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        Err(self.error(at, "string not closed"))
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    token: Token,
    at: usize,
}

/// Parses a `--where` expression.
pub fn parse(text: &str) -> Result<Expr, FilterError> {
    let mut lexer = Lexer { text, pos: 0 };
    let (token, at) = lexer.next()?;
    let mut parser = Parser { lexer, token, at };
    let expr = parser.or()?;
    match parser.token {
        Token::End => Ok(expr),
        _ => Err(parser.error("expected && or || or the end")),
    }
}

impl Parser<'_> {
    fn error(&self, message: &str) -> FilterError {
        let found = match &self.token {
            Token::End => "the end".to_owned(),
            _ => format!("{:?}", self.lexer.text[self.at..self.lexer.pos].trim_end()),
        };
        self.lexer
            .error(self.at, format!("{message}, found {found}"))
    }

    fn advance(&mut self) -> Result<(), FilterError> {
        (self.token, self.at) = self.lexer.next()?;
        Ok(())
    }

    fn expect(&mut self, token: Token, what: &str) -> Result<(), FilterError> {
        if self.token != token {
            return Err(self.error(&format!("expected {what}")));
        }
        self.advance()
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while self.token == Token::Or {
            self.advance()?;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        while self.token == Token::And {
            self.advance()?;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        match self.token {
            Token::Not => {
                self.advance()?;
                Ok(Expr::Not(Box::new(self.unary()?)))
            }
            Token::LParen => {
                self.advance()?;
                let inner = self.or()?;
                self.expect(Token::RParen, ")")?;
                Ok(inner)
            }
            _ => self.compare(),
        }
    }

    fn compare(&mut self) -> Result<Expr, FilterError> {
        let at = self.at;
        let left = self.operand()?;
        if let Operand::Path(path) = &left {
            if path.parts == ["strings", "HasPrefix"] && self.token == Token::LParen {
                return self.has_prefix();
            }
        }
        let Token::Cmp(op) = self.token else {
            return match left {
                Operand::Path(path) => Ok(Expr::Truth(path)),
                _ => Err(self.lexer.error(at, "a constant alone is not a condition")),
            };
        };
        self.advance()?;
        let right = self.operand()?;
        Ok(Expr::Compare {
            left,
            op,
            right,
            at,
        })
    }

    fn has_prefix(&mut self) -> Result<Expr, FilterError> {
        self.advance()?;
        let Operand::Path(path) = self.operand()? else {
            return Err(self.error("strings.HasPrefix's first argument must be a name"));
        };
        self.expect(Token::Comma, ",")?;
        let Token::Str(prefix) = self.token.clone() else {
            return Err(self.error("expected a string constant"));
        };
        self.advance()?;
        self.expect(Token::RParen, ")")?;
        Ok(Expr::HasPrefix { path, prefix })
    }

    fn operand(&mut self) -> Result<Operand, FilterError> {
        let at = self.at;
        let operand = match self.token.clone() {
            Token::Int(v) => Operand::Int(v),
            Token::Str(s) => Operand::Str(s),
            Token::Name(name) => match name.as_str() {
                "true" => Operand::Bool(true),
                "false" => Operand::Bool(false),
                "nil" => Operand::Nil,
                _ => return self.path(name, at),
            },
            _ => return Err(self.error("expected a name or a constant")),
        };
        self.advance()?;
        Ok(operand)
    }

    fn path(&mut self, first: String, at: usize) -> Result<Operand, FilterError> {
        let mut parts = vec![first];
        self.advance()?;
        while self.token == Token::Dot {
            self.advance()?;
            let Token::Name(name) = self.token.clone() else {
                return Err(self.error("expected a field name"));
            };
            parts.push(name);
            self.advance()?;
        }
        Ok(Operand::Path(Path { parts, at }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(parts: &[&str], at: usize) -> Operand {
        Operand::Path(Path {
            parts: parts.iter().map(|p| p.to_string()).collect(),
            at,
        })
    }

    #[test]
    fn precedence_and_parentheses() {
        let e = parse("a > 1 || !(b == \"x\" && p != nil)").unwrap();
        let Expr::Or(left, right) = e else {
            panic!("{e:?}")
        };
        assert_eq!(
            *left,
            Expr::Compare {
                left: path(&["a"], 0),
                op: CmpOp::Gt,
                right: Operand::Int(1),
                at: 0
            }
        );
        let Expr::Not(inner) = *right else {
            panic!("{right:?}")
        };
        assert!(matches!(*inner, Expr::And(_, _)));
    }

    #[test]
    fn fields_prefixes_and_literals() {
        let e = parse("strings.HasPrefix(req.URL.Path, \"/api\\n\")").unwrap();
        assert_eq!(
            e,
            Expr::HasPrefix {
                path: Path {
                    parts: vec!["req".into(), "URL".into(), "Path".into()],
                    at: 18
                },
                prefix: b"/api\n".to_vec()
            }
        );
        assert!(matches!(
            parse("n == -0x10").unwrap(),
            Expr::Compare {
                right: Operand::Int(-16),
                ..
            }
        ));
        assert!(matches!(parse("ok").unwrap(), Expr::Truth(_)));
    }

    #[test]
    fn errors_point_at_the_bad_token() {
        let e = parse("n > 3 &&& m").unwrap_err();
        assert_eq!(e.at, 8, "{e}");
        assert!(e.to_string().contains("        ^"), "{e}");
        assert_eq!(parse("n == \"abc").unwrap_err().at, 5);
        assert_eq!(parse("(n == 1").unwrap_err().at, 7);
        assert_eq!(parse("n == 1 m").unwrap_err().at, 7);
        assert_eq!(parse("3").unwrap_err().at, 0);
        assert_eq!(parse("").unwrap_err().at, 0);
        assert_eq!(parse("n $ 2").unwrap_err().at, 2);
        let float = parse("x > 1.5").unwrap_err();
        assert_eq!(float.at, 4);
        assert!(float.message.contains("XMM registers"), "{float}");
    }
}
