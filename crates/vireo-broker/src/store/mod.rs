//! Durable state: what the broker keeps across a restart and a crash (retained messages,
//! persistent sessions, their queued messages), in [`Log`], an append-only segment log of
//! our own. `docs/architecture.md` ("Durability: the store") has the measurements against
//! redb and fjall that chose it.

mod index;
mod log;

pub use log::{COMPACT_MIN_BYTES, Log, MAX_RECORD, OpenError, Recovery, SEGMENT_BYTES};
pub mod records;
