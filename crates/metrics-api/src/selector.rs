//! Kubernetes label selectors (the `labelSelector` query parameter): parsing and matching.
//!
//! Syntax and semantics follow `k8s.io/apimachinery/pkg/labels.Parse`: requirements separated by
//! commas (logical AND), each one of `key`, `!key`, `key=value`, `key==value`, `key!=value`,
//! `key in (v1,v2)`, `key notin (v1,v2)`, `key>N`, `key<N`. Keys are qualified names
//! (`[prefix/]name`), values are label values (at most 63 characters, may be empty).
//! `!=` and `notin` also match objects that lack the key, as in Kubernetes.
//!
//! Pure code: no I/O, and every input, however malformed, yields a [`SelectorError`] rather than
//! a panic (see the property test below).

use std::collections::BTreeMap;
use std::fmt;

use thiserror::Error;

/// What a requirement asks of one label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    /// `key=value` or `key==value`, or `key in (...)`: the label exists and is one of the values.
    In(Vec<String>),
    /// `key!=value` or `key notin (...)`: the label is absent or none of the values.
    NotIn(Vec<String>),
    /// `key`: the label exists.
    Exists,
    /// `!key`: the label does not exist.
    DoesNotExist,
    /// `key>N`: the label exists and parses as an integer greater than N.
    GreaterThan(i64),
    /// `key<N`: the label exists and parses as an integer less than N.
    LessThan(i64),
}

/// One comma-separated part of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// What is asked of it.
    pub op: Operator,
}

impl Requirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match (&self.op, value) {
            (Operator::In(values), Some(v)) => values.iter().any(|x| x == v),
            (Operator::In(_), None) => false,
            (Operator::NotIn(values), Some(v)) => !values.iter().any(|x| x == v),
            (Operator::NotIn(_), None) => true,
            (Operator::Exists, v) => v.is_some(),
            (Operator::DoesNotExist, v) => v.is_none(),
            (Operator::GreaterThan(n), Some(v)) => v.parse::<i64>().is_ok_and(|x| x > *n),
            (Operator::LessThan(n), Some(v)) => v.parse::<i64>().is_ok_and(|x| x < *n),
            (Operator::GreaterThan(_) | Operator::LessThan(_), None) => false,
        }
    }
}

/// A parsed label selector: the AND of its requirements. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// The requirements, in the order written.
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// Parses Kubernetes selector syntax.
    pub fn parse(input: &str) -> Result<Selector, SelectorError> {
        Parser::new(input).parse()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The requirements on `key`.
    pub fn on<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Requirement> {
        self.requirements.iter().filter(move |r| r.key == key)
    }

    /// Whether the selector asks about `key` at all, other than to exclude it with `!key`.
    pub fn wants(&self, key: &str) -> bool {
        self.on(key).any(|r| r.op != Operator::DoesNotExist)
            && !self.on(key).any(|r| r.op == Operator::DoesNotExist)
    }
}

/// A malformed selector, with the byte position where the problem was found.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("invalid label selector at position {position}: {message}")]
pub struct SelectorError {
    /// Byte offset into the selector.
    pub position: usize,
    /// What was expected and what was found.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    Comma,
    Open,
    Close,
    End,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => write!(f, "{s:?}"),
            Token::Bang => f.write_str("'!'"),
            Token::Eq => f.write_str("'='"),
            Token::DoubleEq => f.write_str("'=='"),
            Token::NotEq => f.write_str("'!='"),
            Token::Gt => f.write_str("'>'"),
            Token::Lt => f.write_str("'<'"),
            Token::Comma => f.write_str("','"),
            Token::Open => f.write_str("'('"),
            Token::Close => f.write_str("')'"),
            Token::End => f.write_str("end of selector"),
        }
    }
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
    peeked: Option<(usize, Token)>,
}

fn is_ident_char(c: char) -> bool {
    !(c.is_whitespace() || matches!(c, '!' | '=' | '>' | '<' | ',' | '(' | ')'))
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Self {
            input,
            pos: 0,
            peeked: None,
        }
    }

    fn err<T>(&self, position: usize, message: impl Into<String>) -> Result<T, SelectorError> {
        Err(SelectorError {
            position,
            message: message.into(),
        })
    }

    /// Returns the next token and where it starts.
    fn lex(&mut self) -> (usize, Token) {
        let rest = &self.input[self.pos..];
        let trimmed = rest.trim_start();
        self.pos += rest.len() - trimmed.len();
        let start = self.pos;
        let mut chars = trimmed.chars();
        let Some(c) = chars.next() else {
            return (start, Token::End);
        };
        let next = chars.next();
        let (token, len) = match (c, next) {
            ('!', Some('=')) => (Token::NotEq, 2),
            ('!', _) => (Token::Bang, 1),
            ('=', Some('=')) => (Token::DoubleEq, 2),
            ('=', _) => (Token::Eq, 1),
            ('>', _) => (Token::Gt, 1),
            ('<', _) => (Token::Lt, 1),
            (',', _) => (Token::Comma, 1),
            ('(', _) => (Token::Open, 1),
            (')', _) => (Token::Close, 1),
            _ => {
                let len = trimmed
                    .char_indices()
                    .find(|(_, c)| !is_ident_char(*c))
                    .map_or(trimmed.len(), |(i, _)| i);
                (Token::Ident(trimmed[..len].to_string()), len)
            }
        };
        self.pos += len;
        (start, token)
    }

    fn next(&mut self) -> (usize, Token) {
        self.peeked.take().unwrap_or_else(|| self.lex())
    }

    fn peek(&mut self) -> &(usize, Token) {
        if self.peeked.is_none() {
            self.peeked = Some(self.lex());
        }
        self.peeked.get_or_insert((0, Token::End))
    }

    fn parse(mut self) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        if self.peek().1 == Token::End {
            return Ok(Selector { requirements });
        }
        loop {
            requirements.push(self.requirement()?);
            match self.next() {
                (_, Token::End) => break,
                (_, Token::Comma) => {}
                (at, t) => {
                    return self.err(at, format!("expected ',' or end of selector, found {t}"));
                }
            }
        }
        Ok(Selector { requirements })
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (at, first) = self.next();
        if first == Token::Bang {
            let (at, t) = self.next();
            let Token::Ident(key) = t else {
                return self.err(at, format!("expected a label key after '!', found {t}"));
            };
            validate_key(&key, at)?;
            return Ok(Requirement {
                key,
                op: Operator::DoesNotExist,
            });
        }
        let Token::Ident(key) = first else {
            return self.err(at, format!("expected a label key, found {first}"));
        };
        validate_key(&key, at)?;
        let (op_at, op) = self.peek().clone();
        let op = match op {
            Token::End | Token::Comma => Operator::Exists,
            Token::Eq | Token::DoubleEq => {
                self.next();
                Operator::In(vec![self.single_value()?])
            }
            Token::NotEq => {
                self.next();
                Operator::NotIn(vec![self.single_value()?])
            }
            Token::Gt | Token::Lt => {
                self.next();
                let (at, t) = self.next();
                let n = match &t {
                    Token::Ident(s) => s.parse::<i64>().ok(),
                    _ => None,
                };
                let Some(n) = n else {
                    return self.err(
                        at,
                        format!("expected an integer after '>' or '<', found {t}"),
                    );
                };
                if op == Token::Gt {
                    Operator::GreaterThan(n)
                } else {
                    Operator::LessThan(n)
                }
            }
            Token::Ident(word) if word == "in" || word == "notin" => {
                self.next();
                let values = self.value_set()?;
                if word == "in" {
                    Operator::In(values)
                } else {
                    Operator::NotIn(values)
                }
            }
            t => {
                return self.err(
                    op_at,
                    format!(
                        "expected an operator ('=', '==', '!=', 'in', 'notin', '>', '<'), ',' or end of selector after key {key:?}, found {t}"
                    ),
                );
            }
        };
        Ok(Requirement { key, op })
    }

    /// A value after `=`/`==`/`!=`: an identifier, or nothing (the empty value) before `,`/end.
    fn single_value(&mut self) -> Result<String, SelectorError> {
        match self.peek().clone() {
            (_, Token::End | Token::Comma) => Ok(String::new()),
            (at, Token::Ident(v)) => {
                self.next();
                validate_value(&v, at)?;
                Ok(v)
            }
            (at, t) => self.err(at, format!("expected a label value, found {t}")),
        }
    }

    /// `( v1, v2, ... )`; empty values are allowed between commas, an empty set is not.
    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        let (at, t) = self.next();
        if t != Token::Open {
            return self.err(at, format!("expected '(' after 'in'/'notin', found {t}"));
        }
        let mut values = Vec::new();
        loop {
            let v = match self.peek().clone() {
                (at, Token::Ident(v)) => {
                    self.next();
                    validate_value(&v, at)?;
                    v
                }
                (_, Token::Comma | Token::Close) => String::new(),
                (at, t) => return self.err(at, format!("expected a label value, found {t}")),
            };
            values.push(v);
            match self.next() {
                (_, Token::Comma) => {}
                (_, Token::Close) => break,
                (at, t) => return self.err(at, format!("expected ',' or ')', found {t}")),
            }
        }
        if values.len() == 1 && values[0].is_empty() {
            return self.err(at, "'in' and 'notin' need at least one value in '(...)'");
        }
        Ok(values)
    }
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters.
fn check_name(name: &str) -> Result<(), String> {
    if name.len() > 63 {
        return Err(format!("{name:?} is longer than 63 characters"));
    }
    let (Some(first), Some(last)) = (name.chars().next(), name.chars().last()) else {
        return Err("the name part must not be empty".into());
    };
    if !is_alnum(first) || !is_alnum(last) {
        return Err(format!(
            "{name:?} must start and end with a letter or digit"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(is_alnum(*c) || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{name:?} contains {c:?}; only letters, digits, '-', '_' and '.' are allowed"
        ));
    }
    Ok(())
}

/// A DNS-1123 subdomain: lowercase labels separated by dots, at most 253 characters.
fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || prefix.len() > 253 {
        return Err(format!("key prefix {prefix:?} must be 1 to 253 characters"));
    }
    for label in prefix.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "key prefix {prefix:?} is not a DNS subdomain (lowercase letters, digits, '-', '.')"
            ));
        }
    }
    Ok(())
}

fn validate_key(key: &str, at: usize) -> Result<(), SelectorError> {
    let result = match key.split_once('/') {
        Some((prefix, name)) => check_prefix(prefix).and_then(|()| check_name(name)),
        None => check_name(key),
    };
    result.map_err(|m| SelectorError {
        position: at,
        message: format!("invalid label key: {m}"),
    })
}

fn validate_value(value: &str, at: usize) -> Result<(), SelectorError> {
    if value.is_empty() {
        return Ok(());
    }
    check_name(value).map_err(|m| SelectorError {
        position: at,
        message: format!("invalid label value: {m}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, op: Operator) -> Requirement {
        Requirement {
            key: key.into(),
            op,
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_every_form() {
        let table: Vec<(&str, Vec<Requirement>)> = vec![
            ("", vec![]),
            ("   ", vec![]),
            (
                "milvus=demo",
                vec![req("milvus", Operator::In(strings(&["demo"])))],
            ),
            (
                "milvus==demo",
                vec![req("milvus", Operator::In(strings(&["demo"])))],
            ),
            (
                " milvus = demo ",
                vec![req("milvus", Operator::In(strings(&["demo"])))],
            ),
            (
                "milvus!=demo",
                vec![req("milvus", Operator::NotIn(strings(&["demo"])))],
            ),
            ("milvus=", vec![req("milvus", Operator::In(strings(&[""])))]),
            (
                "milvus in (a, b,c)",
                vec![req("milvus", Operator::In(strings(&["a", "b", "c"])))],
            ),
            (
                "milvus notin (a)",
                vec![req("milvus", Operator::NotIn(strings(&["a"])))],
            ),
            (
                "milvus in (a,)",
                vec![req("milvus", Operator::In(strings(&["a", ""])))],
            ),
            ("collection", vec![req("collection", Operator::Exists)]),
            (
                "!collection",
                vec![req("collection", Operator::DoesNotExist)],
            ),
            (
                "! collection",
                vec![req("collection", Operator::DoesNotExist)],
            ),
            ("n>3", vec![req("n", Operator::GreaterThan(3))]),
            ("n < -2", vec![req("n", Operator::LessThan(-2))]),
            (
                "example.com/tier=a-b_c.d,milvus,!x",
                vec![
                    req("example.com/tier", Operator::In(strings(&["a-b_c.d"]))),
                    req("milvus", Operator::Exists),
                    req("x", Operator::DoesNotExist),
                ],
            ),
        ];
        for (input, want) in table {
            let got = Selector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(got.requirements, want, "{input:?}");
        }
    }

    #[test]
    fn rejects_malformed_selectors_with_a_position() {
        let table: &[(&str, &str)] = &[
            ("milvus=demo,", "expected a label key, found end"),
            (",milvus", "expected a label key, found ','"),
            ("milvus demo", "expected an operator"),
            ("milvus in a", "expected '('"),
            ("milvus in (a", "expected ',' or ')'"),
            ("milvus in ()", "at least one value"),
            ("milvus=a=b", "expected ',' or end"),
            ("milvus=(a)", "expected a label value"),
            ("-milvus=a", "must start and end"),
            ("milvus=bad value", "expected ',' or end"),
            ("milvus=a$b", "contains '$'"),
            ("Example.com/x=a", "DNS subdomain"),
            ("/x=a", "must be 1 to 253"),
            ("a/b/c=d", "contains '/'"),
            ("n>x", "expected an integer"),
            ("!", "expected a label key after '!'"),
            ("!a=b", "expected ',' or end"),
            (&"x=a".replace('a', &"a".repeat(64)), "longer than 63"),
        ];
        for (input, want) in table {
            let err = Selector::parse(input).expect_err(input);
            assert!(
                err.to_string().contains(want),
                "{input:?}: {err} (wanted {want:?})"
            );
            assert!(err.position <= input.len());
        }
    }

    #[test]
    fn matches_with_kubernetes_semantics() {
        let demo = labels(&[("milvus", "demo"), ("collection", "docs")]);
        let bare = labels(&[("milvus", "demo")]);
        let table: &[(&str, bool, bool)] = &[
            // selector, matches demo, matches bare
            ("", true, true),
            ("milvus=demo", true, true),
            ("milvus=other", false, false),
            ("milvus!=other", true, true),
            ("collection!=docs", false, true),
            ("collection notin (docs)", false, true),
            ("collection in (docs,x)", true, false),
            ("collection", true, false),
            ("!collection", false, true),
            ("milvus=demo,collection=docs", true, false),
            ("n>1", false, false),
        ];
        for (sel, a, b) in table {
            let s = Selector::parse(sel).unwrap();
            assert_eq!(s.matches(&demo), *a, "{sel:?} on {demo:?}");
            assert_eq!(s.matches(&bare), *b, "{sel:?} on {bare:?}");
        }
        let num = labels(&[("n", "5")]);
        assert!(Selector::parse("n>4").unwrap().matches(&num));
        assert!(!Selector::parse("n<5").unwrap().matches(&num));
    }

    #[test]
    fn wants_collection() {
        for (sel, want) in [
            ("milvus=demo", false),
            ("collection=docs", true),
            ("collection", true),
            ("collection in (a,b)", true),
            ("!collection", false),
            ("collection!=docs", true),
            ("collection!=docs,!collection", false),
        ] {
            assert_eq!(
                Selector::parse(sel).unwrap().wants("collection"),
                want,
                "{sel}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn never_panics_on_arbitrary_input(s in "\\PC{0,80}") {
            let _ = Selector::parse(&s);
        }

        #[test]
        fn never_panics_on_selector_like_input(s in "[a-z!=<>(), .0-9/_-]{0,60}") {
            if let Ok(sel) = Selector::parse(&s) {
                let _ = sel.matches(&labels(&[("a", "b")]));
            }
        }

        #[test]
        fn equality_round_trips(k in "[a-z][a-z0-9]{0,10}", v in "[a-z0-9]{1,10}") {
            let sel = Selector::parse(&format!("{k}={v}")).unwrap();
            prop_assert!(sel.matches(&labels(&[(&k, &v)])));
        }
    }
}
