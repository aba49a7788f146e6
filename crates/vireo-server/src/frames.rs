//! The worker's log of QoS 0 PUBLISH frames.
//!
//! A QoS 0 frame is encoded once per message into this log and shared by every local
//! subscriber. Consecutive frames sit next to each other, so what one connection is sent in
//! one iteration is usually one contiguous *run* of the log (fan-out: every subscriber gets
//! every frame; fan-in: one subscriber gets them all). A connection queues the run as a pair of
//! offsets ([`crate::conn::Out::Pending`]), extended in place while frames stay contiguous, and
//! resolves it to one `Bytes` slice when it is flushed: one reference count and one iovec per
//! connection per iteration instead of one per frame (fan-out spent 22 % of its CPU time on
//! those reference counts).
//!
//! Offsets are logical and only grow. Resolving needs the bytes frozen, so a flush first
//! *seals* what has been written (`seal`), and each sealed segment is kept until no queued run
//! can point into it (`release`, after the iteration's flushes). A gap of one offset after
//! every seal keeps a run from spanning two segments.

use bytes::{Bytes, BytesMut};
use slab::Slab;
use vireo_broker::Message;
use vireo_broker::protocol::publish::OutAlias;
use vireo_codec::{ProtocolVersion, PublishHeader, QosPid};

use crate::conn::Conn;

/// Growth step of the log: one allocation serves hundreds of frames.
const CHUNK: usize = 64 * 1024;

/// A frame or run of frames in the log: logical offsets, end exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: u64,
    pub end: u64,
}

impl Span {
    pub(crate) fn len(self) -> usize {
        // A span covers at most one segment, which fits in memory.
        usize::try_from(self.end - self.start).unwrap_or(usize::MAX)
    }
}

#[derive(Default)]
pub(crate) struct FrameLog {
    /// Frames written since the last seal.
    open: BytesMut,
    /// Logical offset of `open[0]`.
    open_base: u64,
    /// Frozen segments that queued runs may point into, oldest first, with their base offsets.
    sealed: Vec<(u64, Bytes)>,
    /// Connections that queued a run since the last release (keys may be stale).
    holders: Vec<usize>,
}

impl FrameLog {
    /// Encodes a 3.1/3.1.1 QoS 0 PUBLISH of `msg` (DUP 0 [MQTT-3.3.1-2]) and returns where
    /// it is.
    pub(crate) fn encode_qos0(&mut self, msg: &Message, retain: bool) -> Span {
        let header = PublishHeader::new(
            false,
            QosPid::AtMostOnce,
            retain,
            &msg.topic,
            msg.payload.len(),
        );
        self.encode(&header, ProtocolVersion::V311, &msg.payload)
    }

    /// Encodes a 5.0 QoS 0 PUBLISH of `msg`: its forwarded properties, what is left of its
    /// expiry interval (`expiry`) and the subscription identifiers `ids`.
    pub(crate) fn encode_qos0_v5(
        &mut self,
        msg: &Message,
        retain: bool,
        expiry: Option<u32>,
        ids: &[u32],
        alias: OutAlias,
    ) -> Span {
        let mut header = PublishHeader::new(
            false,
            QosPid::AtMostOnce,
            retain,
            &msg.topic,
            msg.payload.len(),
        );
        header.properties = &msg.properties;
        header.message_expiry = expiry;
        header.subscription_ids = ids;
        apply_alias(&mut header, alias);
        self.encode(&header, ProtocolVersion::V5, &msg.payload)
    }

    fn encode(
        &mut self,
        header: &PublishHeader<'_>,
        version: ProtocolVersion,
        payload: &[u8],
    ) -> Span {
        let len = header.len(version) + payload.len();
        if self.open.capacity() - self.open.len() < len {
            self.seal();
            self.open.reserve(len.max(CHUNK));
        }
        let start = self.open_base + self.open.len() as u64;
        // Encoding into a buffer with room cannot fail for a topic the codec accepted.
        let _ = header.encode(version, &mut self.open);
        self.open.extend_from_slice(payload);
        Span {
            start,
            end: self.open_base + self.open.len() as u64,
        }
    }

    /// Records that connection `key` holds a run, so `release` keeps the segments alive.
    pub(crate) fn add_holder(&mut self, key: usize) {
        self.holders.push(key);
    }

    /// Freezes what was written so runs can be cut from it.
    pub(crate) fn seal(&mut self) {
        if self.open.is_empty() {
            return;
        }
        let len = self.open.len() as u64;
        self.sealed
            .push((self.open_base, self.open.split().freeze()));
        self.open_base += len + 1;
    }

    /// The bytes of a sealed span; `None` if no sealed segment holds it (a bug: the caller
    /// drops the run and logs it).
    pub(crate) fn slice(&self, span: Span) -> Option<Bytes> {
        let (base, segment) = self
            .sealed
            .iter()
            .rev()
            .find(|(base, _)| *base <= span.start)?;
        let from = usize::try_from(span.start - base).ok()?;
        let to = from.checked_add(span.len())?;
        (to <= segment.len()).then(|| segment.slice(from..to))
    }

    /// After the iteration's flushes: drops the sealed segments once no connection holds a
    /// run (the usual case, since every connection with a run is flushed), so the log pins
    /// no memory beyond what queues still reference.
    pub(crate) fn release(&mut self, conns: &Slab<Conn>) {
        self.holders
            .retain(|&k| conns.get(k).is_some_and(|c| c.queued_runs() > 0));
        if self.holders.is_empty() {
            self.sealed.clear();
            if !self.open.is_empty() {
                // Unreferenced: nothing holds a run into it. Skip past it.
                self.open_base += self.open.len() as u64 + 1;
                self.open.clear();
            }
        }
    }
}

/// Names the topic of `header` as `alias` says: in full, in full with a new alias, or by the
/// alias alone.
pub(crate) fn apply_alias(header: &mut PublishHeader<'_>, alias: OutAlias) {
    match alias {
        OutAlias::Full => {}
        OutAlias::Set(a) => header.topic_alias = Some(a),
        OutAlias::Use(a) => {
            header.topic_alias = Some(a);
            header.topic = "";
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vireo_codec::{QoS, TopicName};

    fn msg(payload: &'static [u8]) -> Message {
        Message::new(
            TopicName::try_from("a/b").expect("valid topic"),
            Bytes::from_static(payload),
            QoS::AtMostOnce,
            false,
        )
    }

    #[test]
    fn consecutive_frames_are_contiguous_and_resolve_after_seal() {
        let mut log = FrameLog::default();
        let a = log.encode_qos0(&msg(b"x"), false);
        let b = log.encode_qos0(&msg(b"yz"), false);
        assert_eq!(a.end, b.start);
        assert_eq!(log.slice(a), None, "not sealed yet");
        log.seal();
        let run = log
            .slice(Span {
                start: a.start,
                end: b.end,
            })
            .expect("sealed");
        assert_eq!(&run[..], b"\x30\x06\x00\x03a/bx\x30\x07\x00\x03a/byz");
    }

    #[test]
    fn a_seal_leaves_a_gap_so_runs_never_span_segments() {
        let mut log = FrameLog::default();
        let a = log.encode_qos0(&msg(b"x"), false);
        log.seal();
        let b = log.encode_qos0(&msg(b"x"), true);
        assert_ne!(a.end, b.start);
        log.seal();
        assert_eq!(&log.slice(b).expect("sealed")[..], b"\x31\x06\x00\x03a/bx");
        assert_eq!(&log.slice(a).expect("sealed")[..], b"\x30\x06\x00\x03a/bx");
    }

    #[test]
    fn release_without_holders_drops_segments() {
        let mut log = FrameLog::default();
        let a = log.encode_qos0(&msg(b"x"), false);
        log.seal();
        log.release(&Slab::new());
        assert_eq!(log.slice(a), None);
        let b = log.encode_qos0(&msg(b"x"), false);
        assert!(b.start > a.end, "offsets are never reused");
    }
}
