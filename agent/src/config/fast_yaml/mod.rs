//! A fast path for the YAML that configs are written in.
//!
//! serde_yaml (libyaml) parses a 10 000-mapping config (850 KiB) in ~30 ms,
//! most of a YAML `Apply`; the pure-Rust YAML parsers on crates.io were
//! slower still. Configs use a small part of YAML: block mappings and
//! sequences, one-line flow collections, one-line plain and quoted scalars,
//! comments. This module parses exactly that part, in a few milliseconds,
//! and answers `None` for anything else, including every error: the caller
//! then parses with serde_yaml, so a document outside the subset still
//! parses (more slowly) and every error message is serde_yaml's, with its
//! field path, line and column.
//!
//! Where a construct is in the subset, the result must be the one serde_yaml
//! gives, so the subset stops short wherever YAML gets subtle: anchors,
//! aliases, tags, block scalars, multi-line scalars and flow collections,
//! directives, several documents, tabs and carriage returns all answer
//! `None`. The deserializer ([`de`]) equally refuses every conversion it is
//! not sure serde_yaml makes the same way (numbers other than plain decimal
//! integers, `True`, an empty value where a struct is expected).

mod de;
#[cfg(test)]
mod tests;

#[cfg(test)]
pub use tests::assert_same_as_serde_yaml;

use std::borrow::Cow;

use serde::de::DeserializeOwned;

/// Deeper documents are left to serde_yaml (which stops at 128 levels).
const MAX_DEPTH: usize = 64;
/// Keys of one mapping; duplicates are looked for pairwise.
const MAX_KEYS: usize = 256;
/// Longest mapping key taken, in bytes.
const MAX_KEY_LEN: usize = 1000;

/// `text` as a `T`, or `None` if it is outside the subset or does not
/// deserialize (see the module docs).
pub fn from_str<T: DeserializeOwned>(text: &str) -> Option<T> {
    let node = Parser::new(text).document()?;
    T::deserialize(de::NodeDe(&node)).ok()
}

/// A parsed node. Scalars keep their text unresolved: what `80` or `true`
/// means depends on the type it is deserialized into, as in serde_yaml.
#[derive(Debug, PartialEq)]
enum Node<'a> {
    Scalar(Scalar<'a>),
    Seq(Vec<Node<'a>>),
    Map(Vec<(Scalar<'a>, Node<'a>)>),
}

#[derive(Debug, PartialEq)]
struct Scalar<'a> {
    text: Cow<'a, str>,
    /// Unquoted: only plain scalars can be null, booleans or numbers.
    plain: bool,
}

impl<'a> Scalar<'a> {
    /// A value left out (`key:` with nothing after it): serde_yaml sees an
    /// empty plain scalar.
    fn empty() -> Self {
        Self {
            text: Cow::Borrowed(""),
            plain: true,
        }
    }
}

/// Why parsing stopped; never shown (serde_yaml's error is).
struct Outside;

type R<T> = Result<T, Outside>;

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
}

/// Newlines and YAML's printable characters only: no tab, CR, BOM or other
/// control character, and none of the line breaks libyaml adds (NEL, LS,
/// PS); what libyaml does with those is its own business.
fn plain_text(text: &str) -> bool {
    if text
        .bytes()
        .all(|c| c == b'\n' || (b' '..=b'~').contains(&c))
    {
        return true;
    }
    text.chars().all(|c| {
        matches!(c, '\n' | ' '..='~' | '\u{a0}'..='\u{2027}' | '\u{202a}'..='\u{d7ff}' | '\u{e000}'..='\u{fefe}' | '\u{ff00}'..='\u{fffd}' | '\u{10000}'..)
    })
}

fn is_space_or_end(c: Option<u8>) -> bool {
    matches!(c, None | Some(b' ' | b'\n'))
}

fn is_flow_indicator(c: u8) -> bool {
    matches!(c, b',' | b'[' | b']' | b'{' | b'}')
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            pos: 0,
            depth: 0,
        }
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.text.as_bytes().get(i).copied()
    }

    fn peek(&self) -> Option<u8> {
        self.at(self.pos)
    }

    fn column(&self) -> usize {
        let before = self.text.get(..self.pos).unwrap_or_default();
        self.pos - before.rfind('\n').map_or(0, |i| i + 1)
    }

    /// The whole document: one block or flow collection at the top.
    fn document(&mut self) -> Option<Node<'a>> {
        if !plain_text(self.text) {
            return None;
        }
        self.skip_blank_lines().ok()?;
        self.peek()?;
        let node = self.block_node(0).ok()?;
        self.skip_blank_lines().ok()?;
        self.peek().is_none().then_some(node)
    }

    /// Skips empty, blank and comment-only lines, stopping at the first
    /// character of the next content line (or the end). A line that opens
    /// with a document marker or a directive is outside the subset.
    fn skip_blank_lines(&mut self) -> R<()> {
        loop {
            let line_start = self.pos;
            while self.peek() == Some(b' ') {
                self.pos += 1;
            }
            match self.peek() {
                None => return Ok(()),
                Some(b'\n') => self.pos += 1,
                Some(b'#') => self.skip_to_line_end(),
                Some(_) => {
                    if self.pos == line_start {
                        let rest = self.text.get(self.pos..).unwrap_or_default();
                        if rest.starts_with("---")
                            || rest.starts_with("...")
                            || rest.starts_with('%')
                        {
                            return Err(Outside);
                        }
                    }
                    return Ok(());
                }
            }
        }
    }

    fn skip_to_line_end(&mut self) {
        let rest = self.text.get(self.pos..).unwrap_or_default();
        self.pos += rest.find('\n').unwrap_or(rest.len());
    }

    /// After a value: spaces, an optional comment, then the line's end.
    fn end_of_line(&mut self) -> R<()> {
        self.skip_spaces();
        match self.peek() {
            None => Ok(()),
            Some(b'\n') => {
                self.pos += 1;
                Ok(())
            }
            // A comment needs a space before it.
            Some(b'#') if self.at(self.pos.wrapping_sub(1)) == Some(b' ') => {
                self.skip_to_line_end();
                Ok(())
            }
            Some(_) => Err(Outside),
        }
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Outside);
        }
        Ok(())
    }

    /// The node starting at the current position (a content character),
    /// whose collection, if it is one, sits at this column; `parent` is the
    /// indentation of the enclosing block collection.
    fn block_node(&mut self, parent: usize) -> R<Node<'a>> {
        let col = self.column();
        if self.peek() == Some(b'-') && is_space_or_end(self.at(self.pos + 1)) {
            return self.block_seq(col);
        }
        if self.mapping_key_ahead()? {
            return self.block_map(col);
        }
        let node = self.inline_value()?;
        self.end_of_line()?;
        self.skip_blank_lines()?;
        // A more indented line after a scalar continues it (a multi-line
        // scalar) or is an error: either way, serde_yaml's business.
        if self.peek().is_some() && self.column() > parent {
            return Err(Outside);
        }
        Ok(node)
    }

    /// Whether the line from here is `key:` followed by a space or the
    /// line's end (a block mapping entry).
    fn mapping_key_ahead(&mut self) -> R<bool> {
        let start = self.pos;
        let key = match self.peek() {
            Some(b'"' | b'\'') => self.quoted().map(|_| ()),
            _ => self.plain(false).map(|_| ()),
        };
        let is_key =
            key.is_ok() && self.peek() == Some(b':') && is_space_or_end(self.at(self.pos + 1));
        self.pos = start;
        Ok(is_key)
    }

    fn block_map(&mut self, indent: usize) -> R<Node<'a>> {
        self.enter()?;
        let mut entries: Vec<(Scalar<'a>, Node<'a>)> = Vec::new();
        loop {
            let key = self.key(false)?;
            if self.peek() != Some(b':') {
                return Err(Outside);
            }
            self.pos += 1;
            // Duplicate keys are left to serde_yaml and the types, and so are
            // mappings too large to look for them cheaply.
            if entries.len() >= MAX_KEYS || entries.iter().any(|(k, _)| k.text == key.text) {
                return Err(Outside);
            }
            while self.peek() == Some(b' ') {
                self.pos += 1;
            }
            let value = if matches!(self.peek(), None | Some(b'\n' | b'#')) {
                self.end_of_line()?;
                self.skip_blank_lines()?;
                let col = self.column();
                let starts_seq =
                    self.peek() == Some(b'-') && is_space_or_end(self.at(self.pos + 1));
                if self.peek().is_some() && (col > indent || (col == indent && starts_seq)) {
                    self.block_node(indent)?
                } else {
                    Node::Scalar(Scalar::empty())
                }
            } else {
                let v = self.inline_value()?;
                self.end_of_line()?;
                self.skip_blank_lines()?;
                v
            };
            entries.push((key, value));
            if !self.block_continues(indent)? {
                break;
            }
        }
        self.depth -= 1;
        Ok(Node::Map(entries))
    }

    /// After a block collection's entry: whether the next line is another
    /// entry at `indent` (`false` at the end of the text or on a shallower
    /// line, which ends the collection); a deeper line is outside the subset.
    fn block_continues(&mut self, indent: usize) -> R<bool> {
        if self.peek().is_none() {
            return Ok(false);
        }
        let col = self.column();
        if col > indent {
            return Err(Outside);
        }
        Ok(col == indent)
    }

    fn block_seq(&mut self, indent: usize) -> R<Node<'a>> {
        self.enter()?;
        let mut items = Vec::new();
        loop {
            // At the `-` of an entry.
            self.pos += 1;
            while self.peek() == Some(b' ') {
                self.pos += 1;
            }
            let item = if matches!(self.peek(), None | Some(b'\n' | b'#')) {
                self.end_of_line()?;
                self.skip_blank_lines()?;
                if self.peek().is_some() && self.column() > indent {
                    self.block_node(indent)?
                } else {
                    Node::Scalar(Scalar::empty())
                }
            } else {
                // `- key: value` (a mapping at this column) or `- value`.
                self.block_node(indent)?
            };
            items.push(item);
            if !self.block_continues(indent)? {
                break;
            }
            if !(self.peek() == Some(b'-') && is_space_or_end(self.at(self.pos + 1))) {
                // The next key of a mapping whose value this sequence is,
                // written at the key's own indentation.
                break;
            }
        }
        self.depth -= 1;
        Ok(Node::Seq(items))
    }

    /// A mapping key. libyaml refuses implicit keys over 1024 characters,
    /// so long ones are left to it.
    fn key(&mut self, flow: bool) -> R<Scalar<'a>> {
        let start = self.pos;
        let key = match self.peek() {
            Some(b'"' | b'\'') => self.quoted()?,
            _ => self.plain(flow)?,
        };
        if self.pos - start > MAX_KEY_LEN {
            return Err(Outside);
        }
        Ok(key)
    }

    /// A value that ends on this line: a flow collection or a scalar.
    fn inline_value(&mut self) -> R<Node<'a>> {
        match self.peek() {
            Some(b'[') => self.flow_seq(),
            Some(b'{') => self.flow_map(),
            Some(b'"' | b'\'') => Ok(Node::Scalar(self.quoted()?)),
            _ => {
                let s = self.plain(false)?;
                // `a: b: c` and the like.
                if self.peek() == Some(b':') {
                    return Err(Outside);
                }
                Ok(Node::Scalar(s))
            }
        }
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    fn flow_seq(&mut self) -> R<Node<'a>> {
        self.enter()?;
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_spaces();
        if self.peek() == Some(b']') {
            self.pos += 1;
        } else {
            loop {
                let item = self.flow_value()?;
                // `[a: b]` (a single-pair mapping) is left to serde_yaml.
                self.skip_spaces();
                items.push(item);
                if !self.flow_next(b']')? {
                    break;
                }
            }
        }
        self.depth -= 1;
        Ok(Node::Seq(items))
    }

    fn flow_map(&mut self) -> R<Node<'a>> {
        self.enter()?;
        self.pos += 1;
        let mut entries: Vec<(Scalar<'a>, Node<'a>)> = Vec::new();
        self.skip_spaces();
        if self.peek() == Some(b'}') {
            self.pos += 1;
        } else {
            loop {
                let key = self.key(true)?;
                // `key: value`, with the space (`"key":value` is left out).
                if !(self.peek() == Some(b':') && self.at(self.pos + 1) == Some(b' ')) {
                    return Err(Outside);
                }
                self.pos += 1;
                self.skip_spaces();
                if entries.len() >= MAX_KEYS || entries.iter().any(|(k, _)| k.text == key.text) {
                    return Err(Outside);
                }
                let value = self.flow_value()?;
                self.skip_spaces();
                entries.push((key, value));
                if !self.flow_next(b'}')? {
                    break;
                }
            }
        }
        self.depth -= 1;
        Ok(Node::Map(entries))
    }

    /// After a flow collection's item: `,` means another follows (`true`),
    /// `close` ends the collection (`false`); anything else is outside.
    fn flow_next(&mut self, close: u8) -> R<bool> {
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                self.skip_spaces();
                Ok(true)
            }
            Some(c) if c == close => {
                self.pos += 1;
                Ok(false)
            }
            _ => Err(Outside),
        }
    }

    fn flow_value(&mut self) -> R<Node<'a>> {
        match self.peek() {
            Some(b'[') => self.flow_seq(),
            Some(b'{') => self.flow_map(),
            Some(b'"' | b'\'') => Ok(Node::Scalar(self.quoted()?)),
            _ => Ok(Node::Scalar(self.plain(true)?)),
        }
    }

    /// A one-line plain scalar, up to `: `, ` #` or the line's end (and in
    /// flow context a flow indicator), without trailing spaces. One that
    /// starts with an indicator is outside the subset (except `-` before a
    /// character that cannot end it, as in `-1`).
    fn plain(&mut self, flow: bool) -> R<Scalar<'a>> {
        let start = self.pos;
        let first = self.peek().ok_or(Outside)?;
        // In flow context libyaml also refuses `:` before `?`: stopping there
        // leaves the `:` to the caller, which refuses it.
        let ends_here = |c: Option<u8>| {
            is_space_or_end(c) || (flow && c.is_some_and(|c| is_flow_indicator(c) || c == b'?'))
        };
        match first {
            b'-' if !ends_here(self.at(start + 1)) => {}
            b'-' | b'?' | b':' | b',' | b'[' | b']' | b'{' | b'}' | b'#' | b'&' | b'*' | b'!'
            | b'|' | b'>' | b'\'' | b'"' | b'%' | b'@' | b'`' | b' ' | b'\n' => {
                return Err(Outside);
            }
            _ => {}
        }
        let mut end = start;
        let mut i = start;
        loop {
            match self.at(i) {
                None | Some(b'\n') => break,
                Some(b':') if ends_here(self.at(i + 1)) => break,
                Some(b'#') if self.at(i.wrapping_sub(1)) == Some(b' ') => break,
                Some(c) if flow && is_flow_indicator(c) => break,
                Some(b' ') => {}
                Some(_) => end = i + 1,
            }
            i += 1;
        }
        self.pos = end;
        let text = self.text.get(start..end).ok_or(Outside)?;
        Ok(Scalar {
            text: Cow::Borrowed(text),
            plain: true,
        })
    }

    /// A single- or double-quoted scalar that ends on this line.
    fn quoted(&mut self) -> R<Scalar<'a>> {
        let quote = self.peek().ok_or(Outside)?;
        self.pos += 1;
        let start = self.pos;
        let rest = self.text.get(start..).ok_or(Outside)?;
        let stop = rest.find([quote as char, '\\', '\n']).ok_or(Outside)?;
        if rest.as_bytes().get(stop) == Some(&quote)
            && rest.as_bytes().get(stop + 1) != Some(&quote)
        {
            // The common case: nothing to unescape.
            self.pos = start + stop + 1;
            return Ok(Scalar {
                text: Cow::Borrowed(rest.get(..stop).ok_or(Outside)?),
                plain: false,
            });
        }
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\n' => return Err(Outside),
                '\'' if quote == b'\'' => {
                    if rest.as_bytes().get(i + 1) == Some(&b'\'') {
                        chars.next();
                        out.push('\'');
                    } else {
                        self.pos = start + i + 1;
                        return Ok(Scalar {
                            text: Cow::Owned(out),
                            plain: false,
                        });
                    }
                }
                '"' if quote == b'"' => {
                    self.pos = start + i + 1;
                    return Ok(Scalar {
                        text: Cow::Owned(out),
                        plain: false,
                    });
                }
                '\\' if quote == b'"' => {
                    let (_, e) = chars.next().ok_or(Outside)?;
                    out.push(match e {
                        '\\' => '\\',
                        '"' => '"',
                        '/' => '/',
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '0' => '\0',
                        // \x, \u, \U, line folding and the rest: serde_yaml's.
                        _ => return Err(Outside),
                    });
                }
                c => out.push(c),
            }
        }
        Err(Outside)
    }
}
