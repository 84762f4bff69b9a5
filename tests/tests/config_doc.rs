//! `docs/config.md` documents every key of the config file: the default
//! config is rendered as TOML and each section and key in it must appear in
//! the page, so a key added to `supervisor/src/config.rs` without docs fails
//! here.
//!
//! A section is documented by a heading naming it as `` `[section]` ``. A
//! key is documented by `` `section.key` `` anywhere in the page, or by
//! `` `key` `` under its section's heading. Keys whose default is `None`
//! are not rendered by TOML and so are not seen here; give such keys a
//! concrete default or check them by hand.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use lwsys::config::Config;

fn page() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `section.key` of the default config, nested tables as dotted
/// paths under their section.
fn rendered_keys() -> Vec<(String, String)> {
    let text = toml::to_string(&Config::default()).unwrap();
    let table: toml::Table = text.parse().unwrap();
    let mut out = Vec::new();
    for (section, value) in &table {
        let toml::Value::Table(keys) = value else {
            panic!("top-level key {section:?} is not a section; document it and adjust this test")
        };
        collect(section, "", keys, &mut out);
    }
    assert!(!out.is_empty(), "the default config rendered no keys:\n{text}");
    out
}

fn collect(section: &str, prefix: &str, keys: &toml::Table, out: &mut Vec<(String, String)>) {
    for (k, v) in keys {
        let key = format!("{prefix}{k}");
        match v {
            toml::Value::Table(inner) => collect(section, &format!("{key}."), inner, out),
            _ => out.push((section.to_owned(), key)),
        }
    }
}

/// The level and text of a Markdown heading line.
fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.chars().take_while(|c| *c == '#').count();
    (level > 0 && line[level..].starts_with(' ')).then(|| (level, line[level..].trim()))
}

/// The lines under the heading that names `[section]`, up to the next
/// heading of the same or a higher level.
fn section_body<'a>(page: &'a str, section: &str) -> Option<Vec<&'a str>> {
    let name = format!("`[{section}]`");
    let mut lines = page.lines();
    let level = loop {
        let line = lines.next()?;
        if let Some((level, text)) = heading(line) {
            if text.contains(&name) {
                break level;
            }
        }
    };
    Some(lines.take_while(|l| heading(l).is_none_or(|(lv, _)| lv > level)).collect())
}

#[test]
fn every_config_section_and_key_is_documented_in_config_md() {
    let page = page();
    let mut missing = Vec::new();
    for (section, key) in rendered_keys() {
        let Some(body) = section_body(&page, &section) else {
            missing.push(format!("section heading `[{section}]`"));
            continue;
        };
        let dotted = format!("`{section}.{key}`");
        let bare = format!("`{key}`");
        if !page.contains(&dotted) && !body.iter().any(|l| l.contains(&bare)) {
            missing.push(dotted);
        }
    }
    missing.dedup();
    assert!(missing.is_empty(), "docs/config.md does not document: {}", missing.join(", "));
}

#[test]
fn config_md_documents_no_key_the_config_does_not_have() {
    let page = page();
    let keys = rendered_keys();
    let mut stale = Vec::new();
    // The first cell of each table row names a key (`` | `section.key` | ``):
    // a renamed or removed key must not linger in the docs. Rows of
    // sections the config does not have (yet) are left alone.
    for line in page.lines() {
        let Some(cell) = line.strip_prefix("| `").and_then(|r| r.split('`').next()) else {
            continue;
        };
        let Some((section, key)) = cell.split_once('.') else { continue };
        if keys.iter().any(|(s, _)| s == section)
            && !keys.iter().any(|(s, k)| s == section && k == key)
        {
            stale.push(cell.to_owned());
        }
    }
    assert!(stale.is_empty(), "docs/config.md names keys the config does not have: {stale:?}");
}
