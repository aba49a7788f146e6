//! The invariants of the `decode` fuzz target, shared with the test that replays its corpus in
//! CI (`crates/vireo-codec/tests/decode_corpus.rs`, which includes this file by `#[path]`).
//!
//! Arbitrary bytes are decoded as MQTT 3.1, 3.1.1 and 5.0, the way a connection's read loop
//! does. Beyond "no panic":
//! - every packet that decodes encodes again (`encoded_len` exact) and that encoding decodes to
//!   the same packet;
//! - the input fed in two pieces (split where its first byte says) gives the same packets and
//!   errors as the input fed whole.

use vireo_codec::{BytesMut, DecodeError, Packet, ProtocolVersion, decode};

/// Small enough that `PacketTooLarge` is reached, large enough for interesting packets.
const MAX_PACKET: usize = 4096;

type Outcome = Result<Packet, DecodeError>;

/// Decodes what `buf` holds; `true` once an error ends the stream, as it closes a connection.
fn drain(buf: &mut BytesMut, version: ProtocolVersion, out: &mut Vec<Outcome>) -> bool {
    loop {
        match decode(buf, version, MAX_PACKET) {
            Ok(Some(p)) => out.push(Ok(p)),
            Ok(None) => return false,
            Err(e) => {
                out.push(Err(e));
                return true;
            }
        }
    }
}

fn check_round_trip(p: &Packet, version: ProtocolVersion) {
    let mut encoded = BytesMut::new();
    p.encode(version, &mut encoded)
        .expect("a packet that decoded must encode");
    assert_eq!(
        encoded.len(),
        p.encoded_len(version),
        "encoded_len of {p:?}"
    );
    let again = decode(&mut encoded, version, usize::MAX)
        .expect("re-encoded packet must decode")
        .expect("re-encoded packet is complete");
    assert_eq!(&again, p, "round trip");
    assert!(encoded.is_empty(), "re-encoded packet fully consumed");
}

/// Checks `data` in every protocol version; panics on a broken invariant.
pub fn check(data: &[u8]) {
    for version in [
        ProtocolVersion::V31,
        ProtocolVersion::V311,
        ProtocolVersion::V5,
    ] {
        let mut whole_buf = BytesMut::from(data);
        let mut whole = Vec::new();
        let whole_failed = drain(&mut whole_buf, version, &mut whole);
        for p in whole.iter().flatten() {
            check_round_trip(p, version);
        }

        let cut = data
            .first()
            .map_or(0, |&b| usize::from(b) % (data.len() + 1));
        let mut split_buf = BytesMut::from(&data[..cut]);
        let mut split = Vec::new();
        let mut split_failed = drain(&mut split_buf, version, &mut split);
        if !split_failed {
            split_buf.extend_from_slice(&data[cut..]);
            split_failed = drain(&mut split_buf, version, &mut split);
        }
        assert_eq!(split, whole, "split at {cut} decodes like whole");
        assert_eq!(split_failed, whole_failed);
        if !whole_failed {
            assert_eq!(split_buf, whole_buf, "same bytes left waiting");
        }
    }
}
