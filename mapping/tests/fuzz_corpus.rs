//! Replays the stored corpus of every fuzz target (`mapping/fuzz/corpus/<target>/`) through
//! its entry point, so that plain `cargo test` keeps every input the fuzzers kept.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        let data = std::fs::read(&path).expect("a corpus file");
        run(&data);
        count += 1;
    }
    assert!(count > 0, "the corpus of {target} is empty");
}

#[test]
fn addresses() {
    replay("addresses", causeway_mapping::fuzzing::addresses);
}

#[test]
fn html() {
    replay("html", causeway_mapping::fuzzing::html);
}

#[test]
fn styling() {
    replay("styling", causeway_mapping::fuzzing::styling);
}

#[test]
fn xmpp_message() {
    replay("xmpp_message", causeway_mapping::fuzzing::xmpp_message);
}
