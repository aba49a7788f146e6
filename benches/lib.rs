//! Criterion benchmarks live beside this file; run them with `cargo bench -p vireo-benches`.
