//! Replays the stored corpus of the stream parser's fuzz target (`xmpp/fuzz/corpus/stream/`),
//! so that plain `cargo test` keeps every input the fuzzer kept.

use std::path::Path;

#[test]
fn stream() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/stream");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        let data = std::fs::read(&path).expect("a corpus file");
        causeway_xmpp::fuzzing::stream(&data);
        count += 1;
    }
    assert!(count > 0, "the corpus is empty");
}
