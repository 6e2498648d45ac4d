//! Glob patterns as Redis matches them (`KEYS`, `SCAN ... MATCH`), on bytes.
//!
//! - `*` matches any run of bytes (also none), `?` any one byte;
//! - `[abc]` one byte of the set, `[a-z]` a range (ends in either order), `[^...]` one
//!   byte *not* in the set; inside brackets `\x` is the byte `x`; a `[` with no closing
//!   `]` takes the rest of the pattern as its set;
//! - `\x` outside brackets is the byte `x`; a trailing `\` is itself.
//!
//! These are Redis's `stringmatchlen` rules, quirks included (`[a-]` is the range from
//! `a` to `]`, and `[]` matches nothing). A pattern is compiled once ([`Glob::new`]) and
//! matched with the classic two-pointer walk that backtracks only to the last `*`: time
//! `O(pattern × subject)` at worst, never exponential, and no recursion, so no pattern can
//! exhaust the stack.
//!
//! [`Glob::literal_prefix`] is the bytes every match starts with: a scan reads only the keys
//! in that range of an ordered map.

/// One element of a compiled pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// This byte.
    Byte(u8),
    /// Any one byte (`?`).
    One,
    /// Any run of bytes (`*`, consecutive ones folded).
    Any,
    /// One byte of (or, `negated`, not of) the set.
    Set { negated: bool, items: Vec<Item> },
}

/// A member of a bracket set.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    Byte(u8),
    /// Inclusive, `low <= high`.
    Range(u8, u8),
}

/// A compiled glob pattern. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    tokens: Vec<Token>,
}

impl Glob {
    /// Compiles `pattern`. Every byte string is a pattern: this never fails.
    pub fn new(pattern: &[u8]) -> Glob {
        let mut tokens = Vec::new();
        let mut at = 0;
        while at < pattern.len() {
            let (token, used) = match pattern[at] {
                b'*' => (Token::Any, 1),
                b'?' => (Token::One, 1),
                b'[' => set(&pattern[at + 1..]),
                b'\\' if at + 1 < pattern.len() => (Token::Byte(pattern[at + 1]), 2),
                byte => (Token::Byte(byte), 1),
            };
            if !(token == Token::Any && tokens.last() == Some(&Token::Any)) {
                tokens.push(token);
            }
            at += used;
        }
        Glob { tokens }
    }

    /// Whether `subject` matches the whole pattern.
    pub fn matches(&self, subject: &[u8]) -> bool {
        let tokens = &self.tokens;
        let (mut t, mut s) = (0, 0);
        // The last `*` seen and the subject position it currently stands for the end of.
        let mut star: Option<(usize, usize)> = None;
        while s < subject.len() {
            match tokens.get(t) {
                Some(Token::Any) => {
                    star = Some((t, s));
                    t += 1;
                }
                Some(token) if token.matches_byte(subject[s]) => {
                    t += 1;
                    s += 1;
                }
                _ => match star {
                    // Let the last `*` take one more byte, and retry what follows it.
                    Some((star_at, taken_to)) => {
                        star = Some((star_at, taken_to + 1));
                        t = star_at + 1;
                        s = taken_to + 1;
                    }
                    None => return false,
                },
            }
        }
        tokens[t..].iter().all(|token| *token == Token::Any)
    }

    /// The bytes every matching subject starts with (empty if the pattern starts with a
    /// wildcard or a set).
    pub fn literal_prefix(&self) -> Vec<u8> {
        self.tokens
            .iter()
            .map_while(|token| match token {
                Token::Byte(byte) => Some(*byte),
                _ => None,
            })
            .collect()
    }

    /// Whether the pattern matches every subject (`*`).
    pub fn matches_everything(&self) -> bool {
        self.tokens == [Token::Any]
    }
}

impl Token {
    fn matches_byte(&self, byte: u8) -> bool {
        match self {
            Token::Byte(b) => *b == byte,
            Token::One => true,
            Token::Any => unreachable!("`*` is handled by the matcher"),
            Token::Set { negated, items } => {
                let inside = items.iter().any(|item| match *item {
                    Item::Byte(b) => b == byte,
                    Item::Range(low, high) => (low..=high).contains(&byte),
                });
                inside != *negated
            }
        }
    }
}

/// The set that starts after a `[` (`rest` is the pattern after it), and the bytes it
/// used including the `[`.
fn set(rest: &[u8]) -> (Token, usize) {
    let negated = rest.first() == Some(&b'^');
    let mut at = usize::from(negated);
    let mut items = Vec::new();
    loop {
        match rest.get(at..).unwrap_or_default() {
            [] => break,
            [b'\\', byte, ..] => {
                items.push(Item::Byte(*byte));
                at += 2;
            }
            [b']', ..] => {
                at += 1;
                break;
            }
            [low, b'-', high, ..] => {
                items.push(Item::Range(*low.min(high), *low.max(high)));
                at += 3;
            }
            [byte, ..] => {
                items.push(Item::Byte(*byte));
                at += 1;
            }
        }
    }
    (Token::Set { negated, items }, at + 1)
}

/// `bytes` as a pattern that matches exactly them, for a pattern made of a literal part
/// and wildcards (a prefix scan is `escape(prefix)` followed by `*`).
pub fn escape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for &byte in bytes {
        if matches!(byte, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(byte);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, subject: &str) -> bool {
        Glob::new(pattern.as_bytes()).matches(subject.as_bytes())
    }

    #[test]
    fn stars_and_question_marks_match_runs_and_single_bytes() {
        assert!(matches("*", ""));
        assert!(matches("*", "anything"));
        assert!(matches("h?llo", "hello"));
        assert!(matches("h?llo", "hallo"));
        assert!(!matches("h?llo", "hllo"));
        assert!(matches("h*llo", "hllo"));
        assert!(matches("h*llo", "heeeello"));
        assert!(matches("*a*b*c*", "xxaxxbxxcxx"));
        assert!(!matches("*a*b*c*", "xxcxxbxxaxx"));
        assert!(matches("a**b", "ab"));
        assert!(!matches("abc", "abcd"));
        assert!(!matches("abcd", "abc"));
        assert!(matches("", ""));
        assert!(!matches("", "a"));
    }

    #[test]
    fn sets_ranges_and_negation_follow_redis() {
        assert!(matches("h[ae]llo", "hello"));
        assert!(matches("h[ae]llo", "hallo"));
        assert!(!matches("h[ae]llo", "hillo"));
        assert!(matches("h[^e]llo", "hallo"));
        assert!(!matches("h[^e]llo", "hello"));
        assert!(matches("h[a-b]llo", "hbllo"));
        assert!(
            matches("h[b-a]llo", "hallo"),
            "a range's ends in either order"
        );
        assert!(!matches("h[a-b]llo", "hcllo"));
        assert!(matches("[\\]]", "]"), "an escaped ] inside a set");
        assert!(!matches("[]", "]"), "[] is an empty set");
        assert!(
            matches("[a-]", "_"),
            "[a- takes ] as the range's end: ] to a"
        );
        assert!(!matches("[a-]", "b"));
        assert!(matches("x[abc", "xb"), "an unclosed set runs to the end");
        assert!(!matches("x[abc", "xd"));
    }

    #[test]
    fn backslash_escapes_special_bytes() {
        assert!(matches("a\\*b", "a*b"));
        assert!(!matches("a\\*b", "axb"));
        assert!(matches("a\\?", "a?"));
        assert!(!matches("a\\?", "ab"));
        assert!(matches("a\\", "a\\"), "a trailing backslash is itself");
        assert!(matches("\\[x]", "[x]"));
    }

    #[test]
    fn matching_is_on_bytes_and_is_not_exponential() {
        let glob = Glob::new(b"\xff*\x00");
        assert!(glob.matches(b"\xff\x01\x02\x00"));
        let nasty = Glob::new("a*".repeat(40).as_bytes());
        let subject = "a".repeat(60) + "b";
        assert!(nasty.matches(subject.as_bytes()));
        let failing = Glob::new(("a*".repeat(40) + "c").as_bytes());
        assert!(!failing.matches(subject.as_bytes()));
    }

    #[test]
    fn the_literal_prefix_is_what_every_match_starts_with() {
        assert_eq!(Glob::new(b"mr:in:*").literal_prefix(), b"mr:in:");
        assert_eq!(Glob::new(b"a\\*b*").literal_prefix(), b"a*b");
        assert_eq!(Glob::new(b"ab?c").literal_prefix(), b"ab");
        assert_eq!(Glob::new(b"[ab]c").literal_prefix(), b"");
        assert_eq!(Glob::new(b"*").literal_prefix(), b"");
        assert!(Glob::new(b"**").matches_everything());
        assert!(!Glob::new(b"a*").matches_everything());
    }

    #[test]
    fn an_escaped_prefix_matches_exactly_itself() {
        for prefix in ["plain", "with*star", "q?[x]\\", ""] {
            let mut pattern = escape(prefix.as_bytes());
            assert!(Glob::new(&pattern).matches(prefix.as_bytes()), "{prefix}");
            pattern.push(b'*');
            let glob = Glob::new(&pattern);
            assert_eq!(glob.literal_prefix(), prefix.as_bytes());
            assert!(glob.matches(format!("{prefix}tail").as_bytes()));
            assert!(!glob.matches(format!("x{prefix}").as_bytes()) || prefix.is_empty());
        }
    }
}
