//! Function-name globs: `*` matches any run of characters (dots and slashes included), `?` one.

/// A compiled glob over Go function names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    text: String,
}

impl Pattern {
    pub fn new(text: &str) -> Pattern {
        Pattern {
            text: text.to_owned(),
        }
    }

    pub fn is_glob(&self) -> bool {
        self.text.contains(['*', '?'])
    }

    pub fn matches(&self, name: &str) -> bool {
        glob_match(self.text.as_bytes(), name.as_bytes())
    }
}

/// Iterative glob matching with single-star backtracking: linear in practice, no recursion.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
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
    pattern[p..].iter().all(|&c| c == b'*')
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
}
