//! Helpers shared by the codec's test files.

#![allow(dead_code)]

use std::num::NonZeroU16;

/// The maximum packet size the tests decode with.
pub const MAX: usize = 1 << 20;

/// Parses hex written as space-separated byte pairs (`"10 25 00 04"`).
pub fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}

/// A packet id; panics on 0.
pub fn pid(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).expect("non-zero packet id")
}
