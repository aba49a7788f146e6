//! Decode arbitrary bytes as every protocol version, the way a connection's read loop does.
//! The invariants are in `decode_check.rs`, which CI also runs over `corpus/decode`.
//!
//! Run: `cargo +nightly fuzz run decode` from `fuzz/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "decode_check.rs"]
mod decode_check;

fuzz_target!(|data: &[u8]| decode_check::check(data));
