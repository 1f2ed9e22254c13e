//! Function-name globs: `*` matches any run of characters (dots and slashes included), `?` one.
//! The `*` that opens a pointer receiver, `(*T)`, is the name's own character, not a glob:
//! `net/http.(*Transport).RoundTrip` names one method; `(*http*)` still globs inside it.

/// A compiled glob over Go function names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    tokens: Vec<Token>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Byte(u8),
    /// Any run of bytes, possibly empty.
    Star,
    /// Any one byte.
    One,
}

impl Pattern {
    pub fn new(text: &str) -> Pattern {
        let bytes = text.as_bytes();
        let tokens = bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| match b {
                b'*' if i > 0 && bytes[i - 1] == b'(' => Token::Byte(b'*'),
                b'*' => Token::Star,
                b'?' => Token::One,
                _ => Token::Byte(b),
            })
            .collect();
        Pattern { tokens }
    }

    pub fn is_glob(&self) -> bool {
        self.tokens.iter().any(|t| !matches!(t, Token::Byte(_)))
    }

    pub fn matches(&self, name: &str) -> bool {
        glob_match(&self.tokens, name.as_bytes())
    }
}

/// Iterative glob matching with single-star backtracking: linear in practice, no recursion.
fn glob_match(pattern: &[Token], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(Token::Star) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Token::One) => {
                p += 1;
                t += 1;
            }
            Some(&Token::Byte(c)) if c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == Token::Star)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_go_names() {
        assert!(Pattern::new("main.*").matches("main.Fibonacci"));
        assert!(Pattern::new("net/http.(*conn).*").matches("net/http.(*conn).serve"));
        assert!(!Pattern::new("net/http.(*conn).*").matches("net/http.(*Server).Serve"));
        assert!(Pattern::new("main.F?bonacci").matches("main.Fibonacci"));
        assert!(Pattern::new("*Fib*").matches("main.Fibonacci"));
        assert!(!Pattern::new("main.Fib").matches("main.Fibonacci"));
        assert!(Pattern::new("main.Fibonacci").matches("main.Fibonacci"));
    }

    #[test]
    fn a_pointer_receiver_is_not_a_glob() {
        let round_trip = Pattern::new("net/http.(*Transport).RoundTrip");
        assert!(!round_trip.is_glob());
        assert!(round_trip.matches("net/http.(*Transport).RoundTrip"));
        assert!(!round_trip.matches("net/http.(*http2Transport).RoundTrip"));
        assert!(!round_trip.matches("net/http.(Transport).RoundTrip"));
        // Globs around a receiver still glob; the receiver's star stays literal.
        let methods = Pattern::new("*.(*Transport).*");
        assert!(methods.matches("net/http.(*Transport).RoundTrip"));
        assert!(!methods.matches("net/http.(*http2Transport).RoundTrip"));
        assert!(!Pattern::new("main.(*T).F").matches("main.(xT).F"));
    }

    #[test]
    fn a_glob_inside_a_receiver_still_globs() {
        let http = Pattern::new("net/http.(*http*).RoundTrip");
        assert!(http.is_glob());
        assert!(http.matches("net/http.(*http2Transport).RoundTrip"));
        assert!(!http.matches("net/http.(*Transport).RoundTrip"));
        // Only pointer receivers: `(*` is literal.
        assert!(!Pattern::new("main.(*?).F").matches("main.(T).F"));
        assert!(Pattern::new("main.(*?).F").matches("main.(*T).F"));
        // A star elsewhere, e.g. after a type's `[`, is a glob.
        assert!(Pattern::new("main.Map[*]").matches("main.Map[go.shape.int]"));
    }
}
