//! Where things are in a config file, from the TOML parser's own spans
//! (`toml::Spanned` on every key and value), so that an error can name its
//! line and `[section] key` without a second, hand-written reading of the
//! text.

use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// One key of the file: its name, where it is written, and, for a table,
/// its keys. Only keys carry spans: toml gives none to a table made by a
/// dotted key, and a value belongs to the key written last before it.
#[derive(Debug)]
struct Item {
    name: String,
    key: Range<usize>,
    /// Whether the value is a table.
    table: bool,
    children: Vec<Item>,
}

/// What a value is, as far as locating goes: whether it is a table, and
/// its keys.
struct Node(bool, Vec<Item>);

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

macro_rules! leaf {
    ($($f:ident: $t:ty),*) => {$(
        fn $f<E: de::Error>(self, _v: $t) -> Result<Node, E> {
            Ok(Node(false, Vec::new()))
        }
    )*};
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    leaf!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    /// An array of tables (`[[name]]`) counts as a section, as its header
    /// says.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut tables = false;
        while let Some(Node(table, _)) = seq.next_element::<Node>()? {
            tables |= table;
        }
        Ok(Node(tables, Vec::new()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(k) = map.next_key::<Spanned<String>>()? {
            let Node(table, children) = map.next_value::<Node>()?;
            let key = k.span();
            items.push(Item { name: k.into_inner(), key, table, children });
        }
        Ok(Node(true, items))
    }
}

/// The keys of a file, with their places. See the module docs.
pub(super) struct Layout<'t> {
    text: &'t str,
    root: Vec<Item>,
}

impl<'t> Layout<'t> {
    /// The layout of `text`, if it is TOML.
    pub(super) fn parse(text: &'t str) -> Option<Self> {
        let Node(_, root) = toml::from_str(text).ok()?;
        Some(Self { text, root })
    }

    /// The line (from 1) of byte `pos`.
    pub(super) fn line_of(text: &str, pos: usize) -> usize {
        let pos = pos.min(text.len());
        text.as_bytes()[..pos].iter().filter(|b| **b == b'\n').count() + 1
    }

    /// The line where `[section] key` is set; else where `section` is
    /// named (its header); else `None` (the value is a default). A dotted
    /// `section` (`ota.policy`) names a table within a table.
    pub(super) fn line_of_key(&self, section: &str, key: &str) -> Option<usize> {
        let mut parts = section.split('.');
        let first = parts.next()?;
        let mut s = self.root.iter().find(|i| i.name == first)?;
        for part in parts {
            s = s.children.iter().find(|i| i.name == part)?;
        }
        let at = s.children.iter().find(|i| i.name == key).map_or(&s.key, |k| &k.key);
        Some(Self::line_of(self.text, at.start))
    }

    /// Where byte `pos` is: the key written last at or before it (the
    /// one whose value or header it is in), as a top-level key (a
    /// section, or a plain key) and the key within it.
    pub(super) fn at(&self, pos: usize) -> Place {
        let mut best: Option<(usize, &Item, Option<&Item>)> = None;
        let candidates = self.root.iter().flat_map(|top| {
            std::iter::once((top.key.start, top, None))
                .chain(top.children.iter().map(move |c| (c.key.start, top, Some(c))))
        });
        for (start, top, child) in candidates {
            if start <= pos && best.is_none_or(|(b, _, _)| start >= b) {
                best = Some((start, top, child));
            }
        }
        match best {
            Some((_, top, child)) => Place {
                top: Some(top.name.clone()),
                key: child.map(|c| c.name.clone()),
                top_is_section: top.table,
            },
            None => Place { top: None, key: None, top_is_section: true },
        }
    }
}

/// Where an error is, as [`Layout::at`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Place {
    /// The top-level key.
    pub(super) top: Option<String>,
    /// The key within it.
    pub(super) key: Option<String>,
    /// Whether the top-level key is a section (a table).
    pub(super) top_is_section: bool,
}

/// Where a syntax error at byte `pos` of `text` is: the section from the
/// valid text before its line, and the key from that line as far as it
/// parses (its value replaced by a placeholder, since the value is what
/// is usually broken).
pub(super) fn place_of_syntax_error(text: &str, pos: usize) -> Place {
    let bytes = text.as_bytes();
    let pos = pos.min(bytes.len());
    // Found by bytes, so that a position inside a character cannot panic;
    // just after or at a newline is always a character boundary.
    let line_start = bytes[..pos].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let before = &text[..line_start];
    let Some(prefix) = Layout::parse(before) else {
        return Place { top: None, key: None, top_is_section: true };
    };
    let section = prefix.at(line_start).top;
    // The key of the line, by parsing it with a placeholder value.
    let line_end = bytes[line_start..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(bytes.len(), |i| line_start + i);
    let line = &text[line_start..line_end];
    let key = line.split_once('=').and_then(|(k, _)| {
        let probe = format!("{before}{k}= 0\n");
        let l = Layout::parse(&probe)?;
        let place = l.at(line_start + k.trim_end().len().saturating_sub(1));
        match (&place.top, &section) {
            (Some(t), Some(s)) if t == s => place.key,
            (Some(t), None) => Some(t.clone()),
            _ => None,
        }
    });
    Place { top: section, key, top_is_section: true }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_headers_are_found_by_their_spans() {
        let text = "# c\n[control]\nclient_queue_bytes = 8\nmax_clients = 0\n\n[time]\nx = 1\n";
        let l = Layout::parse(text).unwrap();
        assert_eq!(l.line_of_key("control", "max_clients"), Some(4));
        assert_eq!(l.line_of_key("time", "backoff_max_ms"), Some(6));
        assert_eq!(l.line_of_key("ota", "variant"), None);
        let arrays = Layout::parse("[[x]]\na = 1\n").unwrap();
        assert!(arrays.at(2).top_is_section, "[[x]] is a section header");
        let dotted = Layout::parse("blobs.max_bytes = 0\n").unwrap();
        assert_eq!(dotted.line_of_key("blobs", "max_bytes"), Some(1));
    }

    #[test]
    fn a_position_names_its_section_and_key() {
        let text = "[time]\nsource = \"system\"\ntrust_unsynced = \"yes\"\n";
        let l = Layout::parse(text).unwrap();
        let pos = text.find("\"yes\"").unwrap();
        let p = l.at(pos);
        assert_eq!((p.top.as_deref(), p.key.as_deref()), (Some("time"), Some("trust_unsynced")));
    }

    #[test]
    fn positions_inside_characters_and_past_the_end_do_not_panic() {
        let text = "[log]\nlevel = \u{e9}t\u{e9}\n# \u{1f600}\n";
        for pos in 0..text.len() + 3 {
            let _ = place_of_syntax_error(text, pos);
            let _ = Layout::line_of(text, pos);
        }
        let l = Layout::parse("[log]\nlevel = \"\u{e9}\"\n").unwrap();
        for pos in 0..20 {
            let _ = l.at(pos);
        }
    }

    #[test]
    fn a_syntax_error_is_placed_by_the_valid_text_around_it() {
        let text = "[log]\nlevel = \n";
        let p = place_of_syntax_error(text, text.len() - 1);
        assert_eq!((p.top.as_deref(), p.key.as_deref()), (Some("log"), Some("level")));
    }
}
