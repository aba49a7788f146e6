//! Raw MQTT 5.0 frames, for tests that check bytes: builders for frames the codec will not
//! write (ill-formed strings, odd flags, over-long integers), decoders for what the broker
//! writes, and [`Raw`], a client socket that reads whole frames.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use vireo_codec::{BytesMut, ConnAck, Connect, Packet, Property, ProtocolVersion, decode};

use super::{Client, USER_PROPERTY, WAIT};

/// `n` as a minimal variable byte integer (spec 1.5.5).
pub fn vbi_bytes(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (n & 0x7F) as u8;
        n >>= 7;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return out;
        }
    }
}

/// The variable byte integer at the front of `b`: its value and length; `None` if incomplete.
pub fn vbi(b: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, &byte) in b.iter().take(4).enumerate() {
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// A whole frame: first byte, remaining length, body.
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    f.extend(vbi_bytes(body.len()));
    f.extend_from_slice(body);
    f
}

/// A length-prefixed string field holding exactly `bytes` (valid UTF-8 or not).
pub fn str_field(bytes: &[u8]) -> Vec<u8> {
    let mut f = (bytes.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(bytes);
    f
}

/// A CONNECT with this protocol name, level, flags and client id bytes; keep alive 60, an
/// empty property block (whatever the level), no Will or credentials.
pub fn raw_connect(name: &[u8], level: u8, flags: u8, client_id: &[u8]) -> Vec<u8> {
    let mut body = str_field(name);
    body.extend([level, flags, 0x00, 0x3C, 0x00]);
    body.extend(str_field(client_id));
    frame(0x10, &body)
}

/// A QoS 0 PUBLISH with this topic bytes, property block and payload.
pub fn raw_publish(topic_bytes: &[u8], props: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = str_field(topic_bytes);
    body.extend(vbi_bytes(props.len()));
    body.extend_from_slice(props);
    body.extend_from_slice(payload);
    frame(0x30, &body)
}

/// A SUBSCRIBE (id 1, no properties) of one filter with these bytes at QoS 0.
pub fn raw_subscribe(filter: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, 0x01, 0x00];
    body.extend(str_field(filter));
    body.push(0x00);
    frame(0x82, &body)
}

/// A User Property (0x26) with these key and value bytes.
pub fn raw_user_property(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut p = vec![USER_PROPERTY];
    p.extend(str_field(key));
    p.extend(str_field(value));
    p
}

/// `p` encoded as 5.0.
pub fn encode(p: &Packet) -> Vec<u8> {
    let mut buf = BytesMut::new();
    p.encode(ProtocolVersion::V5, &mut buf).unwrap();
    buf.to_vec()
}

/// Decodes one whole 5.0 frame the broker sent; fails on a malformed, partial or second packet.
pub fn parse(frame: &[u8]) -> Packet {
    let mut b = BytesMut::from(frame);
    let p = decode(&mut b, ProtocolVersion::V5, usize::MAX)
        .unwrap_or_else(|e| panic!("broker sent a malformed packet ({e}): {frame:02x?}"))
        .unwrap_or_else(|| panic!("incomplete frame {frame:02x?}"));
    assert!(b.is_empty(), "one packet per frame: {frame:02x?}");
    p
}

/// The CONNACK in a frame (fails on anything else).
pub fn connack_of(frame: &[u8]) -> ConnAck {
    match parse(frame) {
        Packet::ConnAck(a) => a,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// The reason code of the DISCONNECT in a frame (fails on anything else).
pub fn disconnect_reason(frame: &[u8]) -> u8 {
    match parse(frame) {
        Packet::Disconnect(d) => d.reason.0,
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}

/// A 5.0 client socket that reads what the broker writes as whole raw frames.
pub struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Frames read past by [`Raw::frame_of`], handed out first by the next read.
    pending: VecDeque<Vec<u8>>,
}

impl Raw {
    /// Opens a socket; sends nothing.
    pub fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: Vec::new(),
            pending: VecDeque::new(),
        }
    }

    /// Opens, sends `connect`; returns the socket and the first frame back (the CONNACK).
    pub fn connect(addr: SocketAddr, connect: Connect) -> (Self, Vec<u8>) {
        let mut r = Self::open(addr);
        r.send(&Packet::Connect(Box::new(connect)));
        let f = r.frame();
        (r, f)
    }

    /// Connects with 5.0 and these properties; asserts acceptance.
    pub fn v5(addr: SocketAddr, id: &str, props: &[Property]) -> Self {
        let (r, f) = Self::connect(addr, Client::v5(id, props));
        assert_eq!(connack_of(&f).code.0, 0, "CONNACK {f:02x?}");
        r
    }

    pub fn send(&mut self, p: &Packet) {
        self.send_raw(&encode(p));
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        // The broker may already have closed: tests then assert on what they read.
        let _ = self.stream.write_all(bytes);
    }

    /// The next whole frame within `wait`; `None` on EOF, error or timeout.
    pub fn frame_within(&mut self, wait: Duration) -> Option<Vec<u8>> {
        if let Some(f) = self.pending.pop_front() {
            return Some(f);
        }
        self.wire_frame(wait)
    }

    /// The next whole frame off the wire, ignoring `pending`.
    fn wire_frame(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some((len, n)) = self.buf.get(1..).and_then(vbi)
                && self.buf.len() >= 1 + n + len
            {
                return Some(self.buf.drain(..1 + n + len).collect());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next whole frame within [`WAIT`] (fails if none comes).
    pub fn frame(&mut self) -> Vec<u8> {
        self.frame_within(WAIT).expect("a packet from the broker")
    }

    /// The next frame whose packet type (high nibble) is `ty`, within [`WAIT`] each; frames of
    /// other types read on the way are kept for the next read.
    pub fn frame_of(&mut self, ty: u8) -> Vec<u8> {
        if let Some(i) = self.pending.iter().position(|f| f[0] >> 4 == ty) {
            return self.pending.remove(i).unwrap();
        }
        loop {
            let f = self.wire_frame(WAIT).unwrap_or_else(|| {
                panic!("expected packet type {ty:x}, have {:02x?}", self.pending)
            });
            if f[0] >> 4 == ty {
                return f;
            }
            self.pending.push_back(f);
        }
    }

    /// The next frame, decoded.
    pub fn packet(&mut self) -> Packet {
        parse(&self.frame())
    }

    /// Reads past acks and deliveries already queued to the DISCONNECT; returns its frame.
    pub fn disconnect_frame(&mut self) -> Vec<u8> {
        loop {
            let f = self.frame();
            match f[0] >> 4 {
                14 => return f,
                3 | 4 | 5 | 6 | 7 | 9 | 11 | 13 => {}
                _ => panic!("expected DISCONNECT, got {f:02x?}"),
            }
        }
    }

    /// Whether the broker closes within [`WAIT`] with nothing more sent (fails on any byte).
    pub fn closed(&mut self) -> bool {
        assert!(
            self.buf.is_empty() && self.pending.is_empty(),
            "unexpected bytes {:02x?} {:02x?}",
            self.pending,
            self.buf
        );
        self.stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => true,
            Ok(n) => panic!("expected the close, got bytes {:02x?}", &chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(_) => true, // a reset counts as closed
        }
    }

    /// Whether EOF (or a reset) comes within `wait`, whatever bytes arrive first (they are
    /// kept, unread).
    pub fn eof_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false;
                }
                Err(_) => return true,
            }
        }
    }
}
