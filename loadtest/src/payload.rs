//! The measurement stamp every payload carries: run magic, publisher id, sequence number and the
//! (intended) send time, then zero padding up to the configured payload size.
//!
//! Layout, big-endian: `magic u32 | publisher u32 | seq u64 | sent_ns u64 | padding`. The magic
//! differs per run, so a message left over from an earlier run (a persistent session, a retained
//! message) is counted as unrecognised instead of corrupting the counts.

use bytes::BufMut;

/// Bytes the stamp takes; `--payload` may not be smaller.
pub const STAMP_LEN: usize = 4 + 4 + 8 + 8;

/// What a subscriber learns from one payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Index of the publisher, dense from 0.
    pub publisher: u32,
    /// The publisher's sequence number, from 0.
    pub seq: u64,
    /// Send time in nanoseconds since the run's epoch: the *intended* time of the open-loop
    /// schedule when rate-limited (coordinated-omission correction), the encode time otherwise.
    pub sent_ns: u64,
}

impl Stamp {
    /// Appends the stamp and `padding` zero bytes to `buf`, without allocating if `buf` has room.
    pub fn write(&self, magic: u32, padding: usize, buf: &mut impl BufMut) {
        buf.put_u32(magic);
        buf.put_u32(self.publisher);
        buf.put_u64(self.seq);
        buf.put_u64(self.sent_ns);
        buf.put_bytes(0, padding);
    }

    /// Reads a stamp from the front of a payload; `None` if it is too short or from another run.
    pub fn read(magic: u32, payload: &[u8]) -> Option<Self> {
        let head: &[u8; STAMP_LEN] = payload.get(..STAMP_LEN)?.try_into().ok()?;
        let u32_at =
            |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
        if u32_at(0) != magic {
            return None;
        }
        Some(Self {
            publisher: u32_at(4),
            seq: u64_at(8),
            sent_ns: u64_at(16),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_padding() {
        let stamp = Stamp {
            publisher: 7,
            seq: 0x0102_0304_0506_0708,
            sent_ns: 99,
        };
        let mut buf = Vec::new();
        stamp.write(0xCAFE_F00D, 10, &mut buf);
        assert_eq!(buf.len(), STAMP_LEN + 10);
        assert_eq!(&buf[..8], &[0xCA, 0xFE, 0xF0, 0x0D, 0, 0, 0, 7]);
        assert_eq!(Stamp::read(0xCAFE_F00D, &buf), Some(stamp));
    }

    #[test]
    fn rejects_other_runs_and_short_payloads() {
        let mut buf = Vec::new();
        Stamp {
            publisher: 1,
            seq: 2,
            sent_ns: 3,
        }
        .write(1, 0, &mut buf);
        assert_eq!(Stamp::read(2, &buf), None);
        assert_eq!(Stamp::read(1, &buf[..STAMP_LEN - 1]), None);
    }
}
