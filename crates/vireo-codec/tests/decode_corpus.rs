//! Replays the `decode` fuzz target's corpus (`fuzz/corpus/decode`) with the target's own
//! checks (`fuzz/fuzz_targets/decode_check.rs`: round trip, split decode equals whole decode,
//! in 3.1, 3.1.1 and 5.0), so every submission runs what fuzzing found without a nightly
//! compiler or libFuzzer. `fuzz/README.md` says how the corpus is made.

#[path = "../../../fuzz/fuzz_targets/decode_check.rs"]
mod decode_check;

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

#[test]
fn decode_corpus_keeps_the_fuzz_invariants() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/decode");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no corpus", dir.display());
    let mut failed = Vec::new();
    for path in &files {
        let data = std::fs::read(path).expect("corpus file");
        if panic::catch_unwind(AssertUnwindSafe(|| decode_check::check(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} corpus entries break the decode invariants: {failed:?}",
        failed.len(),
        files.len()
    );
}
