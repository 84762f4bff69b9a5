//! `docs/protocol.md` documents every op and every error code the protocol
//! has: a new op or code without documentation fails here. The ops are
//! read from the protocol's one op table (`OP_TABLE`), the same the
//! daemon decodes and checks access with.
#![allow(clippy::unwrap_used)] // a test that cannot read its input should fail loudly

use lwsys_messages::protocol::{Topic, OP_TABLE};
use lwsys_messages::ErrorCode;
use lwsys_tests::workspace_root;

fn doc() -> String {
    std::fs::read_to_string(workspace_root().join("docs/protocol.md")).unwrap()
}

/// `name` as the first word of a heading (`### state.steps {target}`) or
/// backticked anywhere.
fn documented(doc: &str, name: &str) -> bool {
    let as_heading = doc.lines().any(|l| {
        l.starts_with('#') && l.trim_start_matches('#').split_whitespace().next() == Some(name)
    });
    as_heading || doc.contains(&format!("`{name}`"))
}

#[test]
fn every_op_is_in_the_protocol_doc() {
    let doc = doc();
    // Hidden test hooks (`debug.crash`) are documented or not as their
    // authors see fit; every op a client can always use must be.
    let missing: Vec<&str> = OP_TABLE
        .iter()
        .filter(|o| !o.hidden)
        .map(|o| o.name)
        .filter(|op| !documented(&doc, op))
        .collect();
    assert!(missing.is_empty(), "ops missing from docs/protocol.md: {missing:?}");
}

#[test]
fn every_error_code_is_in_the_protocol_doc() {
    let doc = doc();
    let missing: Vec<&str> =
        ErrorCode::ALL.iter().map(|c| c.as_str()).filter(|c| !documented(&doc, c)).collect();
    assert!(missing.is_empty(), "error codes missing from docs/protocol.md: {missing:?}");
}

#[test]
fn every_event_topic_is_in_the_protocol_doc() {
    let doc = doc();
    let missing: Vec<&str> =
        Topic::ALL.iter().map(|t| t.as_str()).filter(|t| !documented(&doc, t)).collect();
    assert!(missing.is_empty(), "topics missing from docs/protocol.md: {missing:?}");
}
