//! Label selectors as the API server reads them, checked before any
//! request: a `--selector` it would refuse (HTTP 400) stops `run` at once
//! with exit 2 instead of a pod that crash-loops. The chart's schema holds
//! the same grammar as a pattern ([`SCHEMA_PATTERN`]); tests walk both.
//!
//! Requirements, comma-separated, spaces allowed between tokens: `key`,
//! `!key`, `key=value`, `key==value`, `key!=value`, `key in (a,b)`,
//! `key notin (a,b)`, `key>1`, `key<1`. Keys are `[prefix/]name` (prefix a
//! DNS subdomain, name at most 63 characters), values at most 63; set
//! values are not empty. This is a subset of what the API server accepts
//! (it also takes empty set members), never more.

/// The grammar as a JSON-schema pattern (ECMA and RE2 alike: no lookaround).
pub const SCHEMA_PATTERN: &str = concat!(
    r"^\s*(",
    r"(!\s*KEY|KEY(\s*(=|==|!=)\s*VALUE|\s*[<>]\s*-?[0-9]+|\s+(in|notin)\s*\(\s*NAME(\s*,\s*NAME)*\s*\))?)",
    r"(\s*,\s*(!\s*KEY|KEY(\s*(=|==|!=)\s*VALUE|\s*[<>]\s*-?[0-9]+|\s+(in|notin)\s*\(\s*NAME(\s*,\s*NAME)*\s*\))?))*",
    r")?\s*$"
);

/// [`SCHEMA_PATTERN`] with its placeholders spelt out.
pub fn schema_pattern() -> String {
    let name = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?";
    let label = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?";
    let key = format!(r"({label}(\.{label})*/)?{name}");
    SCHEMA_PATTERN.replace("KEY", &key).replace("VALUE", &format!("({name})?")).replace("NAME", name)
}

/// Checks `text`; the error names what is wrong and where.
pub fn check(text: &str) -> Result<(), String> {
    let mut parser = Parser { text, at: 0 };
    parser.spaces();
    if parser.done() {
        return Ok(());
    }
    loop {
        parser.requirement()?;
        parser.spaces();
        if parser.done() {
            return Ok(());
        }
        parser.expect(",")?;
        parser.spaces();
    }
}

/// A clap value parser: the selector itself when [`check`] passes.
pub fn parse(text: &str) -> Result<String, String> {
    check(text).map(|()| text.to_string()).map_err(|e| format!("{text:?} is not a label selector: {e}"))
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.at..]
    }

    fn done(&self) -> bool {
        self.at >= self.text.len()
    }

    fn spaces(&mut self) -> usize {
        let skipped = self.rest().len() - self.rest().trim_start().len();
        self.at += skipped;
        skipped
    }

    fn eat(&mut self, token: &str) -> bool {
        let found = self.rest().starts_with(token);
        if found {
            self.at += token.len();
        }
        found
    }

    fn expect(&mut self, token: &str) -> Result<(), String> {
        if self.eat(token) { Ok(()) } else { Err(format!("expected {token:?} at character {}", self.at + 1)) }
    }

    /// The longest run of characters a key or value may hold.
    fn word(&mut self) -> &str {
        let start = self.at;
        let len =
            self.rest().find(|c: char| !(c.is_ascii_alphanumeric() || "-_./".contains(c))).unwrap_or(self.rest().len());
        self.at += len;
        &self.text[start..start + len]
    }

    fn requirement(&mut self) -> Result<(), String> {
        if self.eat("!") {
            self.spaces();
            let key = self.word().to_string();
            return check_key(&key);
        }
        let key = self.word().to_string();
        check_key(&key)?;
        let spaced = self.spaces() > 0;
        for operator in ["==", "!=", "="] {
            if self.eat(operator) {
                self.spaces();
                let value = self.word().to_string();
                return check_value(&value);
            }
        }
        if self.eat(">") || self.eat("<") {
            self.spaces();
            let number = self.word().to_string();
            let digits = number.strip_prefix('-').unwrap_or(&number);
            return match !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
                true => Ok(()),
                false => Err(format!("{key}: > and < take an integer, not {number:?}")),
            };
        }
        let set_operator = ["notin", "in"].into_iter().find(|op| {
            self.rest().starts_with(op) && !self.rest()[op.len()..].starts_with(|c: char| c.is_ascii_alphanumeric())
        });
        match (spaced, set_operator) {
            (true, Some(operator)) => {
                self.at += operator.len();
                self.spaces();
                self.expect("(")?;
                loop {
                    self.spaces();
                    let value = self.word().to_string();
                    if value.is_empty() {
                        return Err(format!("{key} {operator}: a value may not be empty"));
                    }
                    check_value(&value)?;
                    self.spaces();
                    if self.eat(")") {
                        return Ok(());
                    }
                    self.expect(",")?;
                }
            }
            // Just the key (`key`, "has the label").
            _ => Ok(()),
        }
    }
}

fn is_name(text: &str) -> bool {
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    (1..=63).contains(&text.len())
        && ends_ok(text.chars().next())
        && ends_ok(text.chars().last())
        && text.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn is_dns_label(text: &str) -> bool {
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (1..=63).contains(&text.len())
        && ends_ok(text.chars().next())
        && ends_ok(text.chars().last())
        && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !prefix.split('.').all(is_dns_label)
    {
        return Err(format!("the key prefix {prefix:?} is not a DNS subdomain"));
    }
    if !is_name(name) {
        return Err(format!(
            "the key {key:?} must be [prefix/]name, the name 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_name(value) {
        Ok(())
    } else {
        Err(format!(
            "the value {value:?} must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The parser and the schema's pattern agree on every string made
        /// of selector tokens: the chart refuses exactly what `run` does.
        #[test]
        fn the_schema_pattern_and_the_parser_agree(
            tokens in proptest::collection::vec(
                prop_oneof![
                    Just("a"), Just("b2"), Just("x.io/"), Just("X"), Just("="), Just("=="), Just("!="), Just("!"),
                    Just(" "), Just(","), Just(" in "), Just(" notin "), Just("("), Just(")"), Just(">"), Just("<"),
                    Just("1"), Just("-"), Just("_"), Just("."), Just("/"), Just("in"),
                ],
                0..12,
            )
        ) {
            let text: String = tokens.concat();
            let pattern = regex::Regex::new(&schema_pattern()).unwrap();
            prop_assert_eq!(check(&text).is_ok(), pattern.is_match(&text), "{:?}", text);
        }
    }

    #[test]
    fn what_the_api_server_reads_passes_and_the_rest_is_named() {
        for good in [
            "",
            "shard=a",
            "shard==a,tier!=canary",
            " shard = a , !legacy ",
            "groupban.dev/shared-credentials=true",
            "env in (prod, staging)",
            "env notin (dev)",
            "count>3",
            "count < -1",
            "has-label",
            "a=",
        ] {
            assert_eq!(check(good), Ok(()), "{good:?}");
        }
        for bad in [
            "shard=a,",
            "=a",
            "shard=a b",
            "env in ()",
            "env in (a,)",
            "env in a",
            "count>x",
            "Bad_Prefix.io/x=1",
            "-x=1",
            "x=-a",
            "shard=a;b",
            &format!("x={}", "v".repeat(64)),
        ] {
            assert!(check(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
