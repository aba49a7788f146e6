//! MQTT over WebSocket (RFC 6455) on the generator's own event loops, like TLS: no thread per
//! connection, no blocking handshake. A client that speaks WebSocket has a [`WsSession`]
//! beside its socket (and under `--tls`, above its rustls session: wss).
//!
//! tungstenite does the WebSocket work it does well, sans-I/O: it builds the upgrade request
//! (with a fresh Sec-WebSocket-Key per connection), parses the broker's 101 response, derives
//! the Sec-WebSocket-Accept to check, formats and parses frame headers, and formats (and
//! masks) the control frames. What is left is the loop around it:
//!
//! - CONNECT is queued as soon as TCP connects, but stays in the client's write buffer until
//!   the 101 has arrived (a client sends nothing after its upgrade request before the response,
//!   RFC 6455 §4.1), so the connect latency (TCP connect to CONNACK) includes the upgrade.
//! - Each flush turns everything queued into one binary frame: MQTT packet boundaries and
//!   frame boundaries are independent [MQTT-6.0.0-2], and one frame per flush keeps the
//!   framing cost per write, not per message. Client frames must be masked (RFC 6455 §5.3).
//! - The broker's frames are unmasked; their payloads go, where they lie in the read buffer,
//!   to the MQTT parser the plain path uses, which already copes with packets split anywhere.
//!   A ping is answered with a pong, a close ends the connection.
//!
//! Frames leave through [`WsSession::out`], which only ever holds whole frames (and, before
//! them, the upgrade request): a pong is appended after the data frame being written, never
//! inside it, and the same buffer goes to the socket or to rustls.

use std::io::Cursor;

use bytes::{BufMut, BytesMut};
use tungstenite::client::IntoClientRequest;
use tungstenite::error::{Error as WsError, ProtocolError, SubProtocolError};
use tungstenite::handshake::client::{Response, generate_request};
use tungstenite::handshake::derive_accept_key;
use tungstenite::handshake::machine::TryParse;
use tungstenite::http::header::{HeaderName, HeaderValue};
use tungstenite::http::{StatusCode, Uri};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};

use crate::config::{ConfigError, WsConfig};
use crate::error::ClientError;

/// The subprotocol every client offers and requires [MQTT-6.0.0-3], [MQTT-6.0.0-4].
pub const SUBPROTOCOL: &str = "mqtt";
/// Longest 101 response accepted: brokers send a few hundred bytes.
const MAX_RESPONSE: usize = 16 * 1024;
/// Longest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEADER: usize = 14;
/// Largest control frame payload (RFC 6455 §5.5).
const MAX_CONTROL: u64 = 125;

/// What every WebSocket client of a run shares: the URI its upgrade requests name.
#[derive(Debug, Clone)]
pub struct Upgrader {
    uri: Uri,
}

impl Upgrader {
    /// Upgrade requests for `ws.path` on the broker at `host`:`port` (the Host header).
    pub fn new(ws: &WsConfig, host: &str, port: u16) -> Result<Self, ConfigError> {
        let bad = || ConfigError::WsPath(ws.path.clone());
        if !ws.path.starts_with('/') {
            return Err(bad());
        }
        let host = if host.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let uri: Uri = format!("ws://{host}:{port}{}", ws.path)
            .parse()
            .map_err(|_| bad())?;
        // Fail here, not in every connection, if tungstenite cannot make a request of it.
        Self { uri: uri.clone() }.request().map_err(|_| bad())?;
        Ok(Self { uri })
    }

    /// The upgrade request's bytes, with a fresh key, and the key.
    fn request(&self) -> Result<(Vec<u8>, String), WsError> {
        let mut request = (&self.uri).into_client_request()?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        generate_request(request)
    }

    /// A session for a connection whose TCP connect just completed; its upgrade request is
    /// queued.
    pub(crate) fn connect(&self) -> Result<Box<WsSession>, ClientError> {
        let (request, key) = self.request().map_err(ClientError::WebSocket)?;
        // The mask generator starts from the key, which tungstenite drew at random.
        let seed = key.bytes().fold(0xCBF2_9CE4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
        }) | 1;
        Ok(Box::new(WsSession {
            state: State::Upgrading {
                accept: derive_accept_key(key.as_bytes()),
                response: Vec::new(),
            },
            out: BytesMut::from(&request[..]),
            reading: Reading::Header,
            head: [0; MAX_HEADER],
            head_len: 0,
            fragmented: false,
            control: Vec::new(),
            rng: seed,
        }))
    }
}

#[derive(Debug)]
enum State {
    /// Upgrade request sent; the response so far, and the accept key it must carry.
    Upgrading { accept: String, response: Vec<u8> },
    /// 101 received: frames both ways.
    Open,
    /// Our close frame is queued: nothing more is framed.
    Closing,
}

/// What the bytes being read belong to.
#[derive(Debug, Clone, Copy)]
enum Reading {
    /// A frame header (its start may wait in `head`).
    Header,
    /// A data frame's payload, MQTT bytes: this many still to come.
    Data(u64),
    /// A control frame's payload, collected in `control`: this many still to come.
    Control(Control, u64),
}

/// The WebSocket state of one connection.
#[derive(Debug)]
pub(crate) struct WsSession {
    state: State,
    /// Bytes for the stream (socket or rustls): the upgrade request, then whole frames.
    out: BytesMut,
    reading: Reading,
    /// The start of a frame header that a read split.
    head: [u8; MAX_HEADER],
    head_len: usize,
    /// A data frame without FIN was read: continuation frames follow.
    fragmented: bool,
    /// The payload of the control frame being read.
    control: Vec<u8>,
    /// xorshift64 state for the masks.
    rng: u64,
}

impl WsSession {
    /// Whether the upgrade is done, so that MQTT bytes may be framed.
    pub(crate) fn is_open(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// Whether frames (or the upgrade request) wait for the stream.
    pub(crate) fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// What the stream should take next; it advances the buffer by what it wrote.
    pub(crate) fn out(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// Once open, moves everything `wbuf` holds into `out` as one masked binary frame.
    ///
    /// The payload is masked while copied into `out`, by [`apply_mask`] rather than
    /// tungstenite's `Frame::format`, which copies it into a fresh `Vec` per frame (its own
    /// mask function is private). The copy is what lets pongs queue between frames and lets
    /// the same buffer go to rustls.
    pub(crate) fn frame(&mut self, wbuf: &mut BytesMut) {
        if wbuf.is_empty() || !self.is_open() {
            return;
        }
        let mask = self.next_mask();
        let header = FrameHeader {
            opcode: OpCode::Data(Data::Binary),
            mask: Some(mask),
            ..FrameHeader::default()
        };
        let len = wbuf.len() as u64;
        self.out.reserve(header.len(len) + wbuf.len());
        // Formatting into memory cannot fail.
        let _ = header.format(len, &mut (&mut self.out).writer());
        let start = self.out.len();
        self.out.extend_from_slice(wbuf);
        apply_mask(&mut self.out[start..], mask);
        wbuf.clear();
    }

    /// Queues a close frame (1000, normal closure) at the end of the run; nothing is framed
    /// after it.
    pub(crate) fn close(&mut self) {
        if self.is_open() {
            let frame = Frame::close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }));
            self.queue_control(frame);
            self.state = State::Closing;
        }
    }

    /// Handles `data`, just read from the stream: the 101 response, then frames. The payload
    /// of each data frame goes to `on_mqtt` in order, in as few slices as the reads allow.
    /// `Closed` once the broker's close frame has arrived.
    pub(crate) fn read(
        &mut self,
        data: &[u8],
        mut on_mqtt: impl FnMut(&[u8]) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        let State::Upgrading { accept, response } = &mut self.state else {
            return self.read_frames(data, &mut on_mqtt);
        };
        response.extend_from_slice(data);
        let parsed = Response::try_parse(response).map_err(ClientError::WebSocket)?;
        let Some((len, head)) = parsed else {
            if response.len() > MAX_RESPONSE {
                return Err(ClientError::Unexpected(
                    "WebSocket upgrade response too long",
                ));
            }
            return Ok(());
        };
        verify(&head, accept).map_err(ClientError::WebSocket)?;
        // Bytes after the response are the first frames.
        let rest = response.split_off(len);
        self.state = State::Open;
        self.read_frames(&rest, &mut on_mqtt)
    }

    fn read_frames(
        &mut self,
        mut data: &[u8],
        on_mqtt: &mut impl FnMut(&[u8]) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        while !data.is_empty() {
            match self.reading {
                Reading::Data(left) => {
                    let n = data.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    on_mqtt(&data[..n])?;
                    data = &data[n..];
                    self.reading = match left - n as u64 {
                        0 => Reading::Header,
                        left => Reading::Data(left),
                    };
                }
                Reading::Control(op, left) => {
                    // `left` is at most 125 here.
                    let n = data.len().min(left as usize);
                    self.control.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    self.reading = Reading::Control(op, left - n as u64);
                    if left == n as u64 {
                        self.end_control(op)?;
                    }
                }
                Reading::Header => {
                    let Some((header, len, used)) = self.parse_header(data)? else {
                        return Ok(());
                    };
                    data = &data[used..];
                    self.start_frame(&header, len)?;
                }
            }
        }
        Ok(())
    }

    /// Parses the header at the start of `data` (after what `head` holds from earlier reads):
    /// the header, its payload length and the bytes of `data` it took. `None` when `data` ends
    /// first; the bytes are kept in `head`.
    fn parse_header(
        &mut self,
        data: &[u8],
    ) -> Result<Option<(FrameHeader, u64, usize)>, ClientError> {
        let held = self.head_len;
        if held == 0 {
            let mut cursor = Cursor::new(data);
            if let Some((header, len)) =
                FrameHeader::parse(&mut cursor).map_err(ClientError::WebSocket)?
            {
                return Ok(Some((header, len, cursor.position() as usize)));
            }
            // Incomplete, so shorter than the longest header.
            self.head[..data.len()].copy_from_slice(data);
            self.head_len = data.len();
            return Ok(None);
        }
        let take = data.len().min(MAX_HEADER - held);
        self.head[held..held + take].copy_from_slice(&data[..take]);
        let mut cursor = Cursor::new(&self.head[..held + take]);
        match FrameHeader::parse(&mut cursor).map_err(ClientError::WebSocket)? {
            Some((header, len)) => {
                let used = cursor.position() as usize - held;
                self.head_len = 0;
                Ok(Some((header, len, used)))
            }
            None => {
                self.head_len = held + take;
                Ok(None)
            }
        }
    }

    /// Checks a header from the broker and starts reading its payload.
    fn start_frame(&mut self, header: &FrameHeader, len: u64) -> Result<(), ClientError> {
        let protocol = |e| Err(ClientError::WebSocket(WsError::Protocol(e)));
        if header.mask.is_some() {
            return protocol(ProtocolError::MaskedFrameFromServer);
        }
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return protocol(ProtocolError::NonZeroReservedBits);
        }
        match header.opcode {
            OpCode::Data(Data::Binary) if self.fragmented => {
                return protocol(ProtocolError::ExpectedFragment(Data::Binary));
            }
            OpCode::Data(Data::Continue) if !self.fragmented => {
                return protocol(ProtocolError::UnexpectedContinueFrame);
            }
            OpCode::Data(Data::Binary | Data::Continue) => {
                self.fragmented = !header.is_final;
                if len > 0 {
                    self.reading = Reading::Data(len);
                }
            }
            // [MQTT-6.0.0-1]
            OpCode::Data(_) => return Err(ClientError::Unexpected("WebSocket text frame")),
            OpCode::Control(_) if !header.is_final => {
                return protocol(ProtocolError::FragmentedControlFrame);
            }
            OpCode::Control(_) if len > MAX_CONTROL => {
                return protocol(ProtocolError::ControlFrameTooBig);
            }
            OpCode::Control(op) => {
                self.control.clear();
                self.reading = Reading::Control(op, len);
                if len == 0 {
                    self.end_control(op)?;
                }
            }
        }
        Ok(())
    }

    /// A control frame's payload is complete.
    fn end_control(&mut self, op: Control) -> Result<(), ClientError> {
        self.reading = Reading::Header;
        match op {
            Control::Ping => {
                // After our close frame, nothing more may be sent.
                if self.is_open() {
                    let payload = std::mem::take(&mut self.control);
                    self.queue_control(Frame::pong(payload));
                }
                Ok(())
            }
            Control::Pong => Ok(()),
            Control::Close => Err(ClientError::Closed),
            Control::Reserved(code) => Err(ClientError::WebSocket(WsError::Protocol(
                ProtocolError::UnknownControlFrameType(code),
            ))),
        }
    }

    /// Masks `frame` and appends it to `out`, after the frames already there.
    fn queue_control(&mut self, mut frame: Frame) {
        frame.header_mut().mask = Some(self.next_mask());
        // Formatting into memory cannot fail.
        let _ = frame.format(&mut (&mut self.out).writer());
    }

    /// A fresh mask per frame, from xorshift64. Masks exist so that a browser's script cannot
    /// make a WebSocket frame look like another protocol to a proxy (RFC 6455 §10.3); a load
    /// generator needs only to send masked frames, not unpredictable ones, so a cheap
    /// generator does (tungstenite's draws from the thread's CSPRNG).
    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x as u32).to_ne_bytes()
    }
}

/// Checks the broker's answer to the upgrade request, as RFC 6455 §4.1 asks of a client:
/// 101, `Upgrade: websocket`, `Connection: Upgrade`, the accept key derived from ours, no
/// extension (none was offered) and the `mqtt` subprotocol.
fn verify(response: &Response, accept: &str) -> Result<(), WsError> {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let mut refused = Response::new(None);
        *refused.status_mut() = response.status();
        return Err(WsError::Http(Box::new(refused)));
    }
    let headers = response.headers();
    let has_token = |name: &str, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let protocol = |e| Err(WsError::Protocol(e));
    if !has_token("Upgrade", "websocket") {
        return protocol(ProtocolError::MissingUpgradeWebSocketHeader);
    }
    if !has_token("Connection", "upgrade") {
        return protocol(ProtocolError::MissingConnectionUpgradeHeader);
    }
    if headers
        .get("Sec-WebSocket-Accept")
        .map(HeaderValue::as_bytes)
        != Some(accept.as_bytes())
    {
        return protocol(ProtocolError::SecWebSocketAcceptKeyMismatch);
    }
    if headers.contains_key("Sec-WebSocket-Extensions") {
        return protocol(ProtocolError::InvalidHeader(Box::new(
            HeaderName::from_static("sec-websocket-extensions"),
        )));
    }
    match headers.get("Sec-WebSocket-Protocol") {
        None => protocol(ProtocolError::SecWebSocketSubProtocolError(
            SubProtocolError::NoSubProtocol,
        )),
        Some(p) if p.as_bytes() != SUBPROTOCOL.as_bytes() => protocol(
            ProtocolError::SecWebSocketSubProtocolError(SubProtocolError::InvalidSubProtocol),
        ),
        Some(_) => Ok(()),
    }
}

/// XORs `buf` with `mask` repeated (RFC 6455 §5.3), eight bytes at a time.
fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let [a, b, c, d] = mask;
    let wide = u64::from_ne_bytes([a, b, c, d, a, b, c, d]);
    let mut words = buf.chunks_exact_mut(8);
    for word in &mut words {
        let mut w = [0; 8];
        w.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    // The tail starts at a multiple of 8, so at mask byte 0.
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::{self, Read, Write};

    use tungstenite::Message;
    use tungstenite::handshake::server::{Request, create_response, write_response};
    use tungstenite::protocol::{Role, WebSocketContext};

    use super::*;

    /// What a tungstenite server reads from and writes to: `input`, then nothing.
    struct Pipe {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.input.read(buf)? {
                0 => Err(io::ErrorKind::WouldBlock.into()),
                n => Ok(n),
            }
        }
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn upgrader() -> Upgrader {
        Upgrader::new(&WsConfig::default(), "127.0.0.1", 1883).unwrap()
    }

    /// What tungstenite's server side answers to `session`'s upgrade request, with `edit`
    /// applied to the response.
    fn answer(session: &mut WsSession, edit: impl FnOnce(&mut Response)) -> Vec<u8> {
        let request = session.out.split().to_vec();
        let (len, req) = Request::try_parse(&request).unwrap().unwrap();
        assert_eq!(len, request.len());
        assert_eq!(req.uri().path(), "/mqtt");
        assert_eq!(req.headers()["Host"], "127.0.0.1:1883");
        assert_eq!(req.headers()["Sec-WebSocket-Protocol"], SUBPROTOCOL);
        let mut response = create_response(&req).unwrap().map(|()| None);
        response.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        edit(&mut response);
        let mut bytes = Vec::new();
        write_response(&mut bytes, &response.map(|_| ())).unwrap();
        bytes
    }

    /// An unmasked frame, as a broker sends it.
    fn server_frame(out: &mut Vec<u8>, opcode: OpCode, is_final: bool, payload: &[u8]) {
        let header = FrameHeader {
            is_final,
            opcode,
            ..FrameHeader::default()
        };
        header.format(payload.len() as u64, out).unwrap();
        out.extend_from_slice(payload);
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    /// Feeds `chunks` to a fresh session (after its own 101) and returns the MQTT bytes, the
    /// error that ended it and what it queued to send.
    fn feed<'a>(
        frames: impl IntoIterator<Item = &'a [u8]>,
        split_response: bool,
    ) -> (Vec<u8>, String, Vec<Vec<u8>>) {
        let mut s = upgrader().connect().unwrap();
        let response = answer(&mut s, |_| {});
        let mut mqtt = Vec::new();
        let mut error = String::new();
        let mut on = |b: &[u8]| {
            mqtt.extend_from_slice(b);
            Ok(())
        };
        let (a, b) = response.split_at(if split_response { 7 } else { response.len() });
        for chunk in [a, b] {
            s.read(chunk, &mut on).unwrap();
        }
        for chunk in frames {
            if let Err(e) = s.read(chunk, &mut on) {
                error = e.to_string();
                break;
            }
        }
        assert!(s.is_open(), "{error}");
        (mqtt, error, pongs(&s.out))
    }

    /// The payloads of the pongs in `out`, as tungstenite's server reads them (each frame has
    /// its own random mask, so the bytes differ from run to run).
    fn pongs(out: &[u8]) -> Vec<Vec<u8>> {
        let mut server = WebSocketContext::new(Role::Server, None);
        let mut pipe = Pipe {
            input: Cursor::new(out.to_vec()),
            output: Vec::new(),
        };
        let mut pongs = Vec::new();
        // tungstenite reads ahead: the pipe's WouldBlock, not its position, says it is done.
        loop {
            match server.read(&mut pipe) {
                Ok(Message::Pong(p)) => pongs.push(p.to_vec()),
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                other => panic!("{other:?}"),
            }
        }
        pongs
    }

    /// Our frames (several sizes, each length encoding), pongs and close, as tungstenite's
    /// server reads them: masked, each with its own mask, payloads intact.
    #[test]
    fn what_we_send_reads_back_through_tungstenite() {
        let mut s = upgrader().connect().unwrap();
        let response = answer(&mut s, |_| {});
        s.read(&response, |_| Ok(())).unwrap();
        let sizes = [1, 2, 7, 125, 126, 65_535, 65_536, 100_003];
        let mut masks = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            let mut wbuf = BytesMut::from(&pattern(len, i as u8)[..]);
            let at = s.out.len();
            s.frame(&mut wbuf);
            assert!(wbuf.is_empty());
            let (header, n) = FrameHeader::parse(&mut Cursor::new(&s.out[at..]))
                .unwrap()
                .unwrap();
            assert_eq!(n, len as u64);
            masks.push(header.mask.unwrap());
        }
        masks.sort_unstable();
        masks.dedup();
        assert_eq!(masks.len(), sizes.len(), "a mask was reused");
        // Nothing to frame: nothing sent.
        let before = s.out.len();
        s.frame(&mut BytesMut::new());
        assert_eq!(s.out.len(), before);
        let mut ping = Vec::new();
        server_frame(
            &mut ping,
            OpCode::Control(Control::Ping),
            true,
            b"are you there",
        );
        s.read(&ping, |_| panic!("a ping is not MQTT")).unwrap();
        s.close();
        let closed = s.out.len();
        s.frame(&mut BytesMut::from(&b"after close"[..]));
        s.read(&ping, |_| Ok(())).unwrap();
        assert_eq!(s.out.len(), closed, "sent after the close frame");

        let mut server = WebSocketContext::new(Role::Server, None);
        let mut pipe = Pipe {
            input: Cursor::new(s.out.to_vec()),
            output: Vec::new(),
        };
        for (i, &len) in sizes.iter().enumerate() {
            match server.read(&mut pipe).unwrap() {
                Message::Binary(b) => assert_eq!(b[..], pattern(len, i as u8)[..], "{len}"),
                other => panic!("{other:?}"),
            }
        }
        match server.read(&mut pipe).unwrap() {
            Message::Pong(p) => assert_eq!(&p[..], b"are you there"),
            other => panic!("{other:?}"),
        }
        match server.read(&mut pipe).unwrap() {
            Message::Close(Some(c)) => assert_eq!(c.code, CloseCode::Normal),
            other => panic!("{other:?}"),
        }
    }

    /// A broker's frames (fragmented, with a ping between the fragments, every length
    /// encoding) split at every byte give the same MQTT bytes and the same pong.
    #[test]
    fn what_the_broker_sends_split_anywhere_gives_the_same_mqtt_bytes() {
        let parts = [
            pattern(10, 1),
            pattern(300, 2),
            pattern(70_000, 3),
            pattern(0, 4),
        ];
        let mut wire = Vec::new();
        server_frame(&mut wire, OpCode::Data(Data::Binary), false, &parts[0]);
        server_frame(&mut wire, OpCode::Control(Control::Ping), true, b"p");
        server_frame(&mut wire, OpCode::Data(Data::Continue), true, &parts[1]);
        server_frame(&mut wire, OpCode::Control(Control::Pong), true, b"ignored");
        server_frame(&mut wire, OpCode::Data(Data::Binary), true, &parts[2]);
        server_frame(&mut wire, OpCode::Data(Data::Binary), true, &parts[3]);
        server_frame(&mut wire, OpCode::Control(Control::Ping), true, b"");
        let end = wire.len();
        server_frame(
            &mut wire,
            OpCode::Control(Control::Close),
            true,
            &[0x03, 0xE8],
        );
        let mqtt: Vec<u8> = parts.concat();

        let whole = feed([&wire[..]], false);
        assert_eq!(whole.0, mqtt);
        assert_eq!(whole.1, ClientError::Closed.to_string());
        assert_eq!(whole.2, [b"p".to_vec(), Vec::new()]);
        // Cuts around every header; the long payload only at a few places.
        let cuts = (0..400).chain([end - 20_000, end - 3, end - 1, end]);
        for cut in cuts {
            let split = feed([&wire[..cut], &wire[cut..]], true);
            assert_eq!(split.0, mqtt, "cut at {cut}");
            assert_eq!((&split.1, &split.2), (&whole.1, &whole.2), "cut at {cut}");
        }
        for size in 1..=15 {
            let (bytes, error, out) = feed(wire.chunks(size), false);
            assert_eq!((bytes, error, out), whole.clone(), "chunks of {size}");
        }
    }

    #[test]
    fn responses_that_do_not_verify_are_refused() {
        type Edit = fn(&mut Response);
        let cases: [(&str, Edit); 5] = [
            ("HTTP error: 404", |r| {
                *r.status_mut() = StatusCode::NOT_FOUND
            }),
            ("Key mismatch", |r| {
                r.headers_mut().insert(
                    "Sec-WebSocket-Accept",
                    HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                );
            }),
            ("Server sent no subprotocol", |r| {
                r.headers_mut().remove("Sec-WebSocket-Protocol");
            }),
            ("invalid subprotocol", |r| {
                r.headers_mut().insert(
                    "Sec-WebSocket-Protocol",
                    HeaderValue::from_static("mqttv3.1"),
                );
            }),
            ("No \"Upgrade: websocket\"", |r| {
                r.headers_mut().remove("Upgrade");
            }),
        ];
        for (want, edit) in cases {
            let mut s = upgrader().connect().unwrap();
            let response = answer(&mut s, edit);
            let e = s.read(&response, |_| Ok(())).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        let mut s = upgrader().connect().unwrap();
        let e = s.read(&vec![b'x'; MAX_RESPONSE + 1], |_| Ok(()));
        assert!(e.is_err());
        assert!(
            Upgrader::new(
                &WsConfig {
                    path: "mqtt".into()
                },
                "h",
                1
            )
            .is_err()
        );
        let v6 = Upgrader::new(&WsConfig::default(), "::1", 1883).unwrap();
        assert_eq!(v6.uri.to_string(), "ws://[::1]:1883/mqtt");
    }

    #[test]
    fn frames_a_broker_may_not_send_fail_the_client() {
        let masked = {
            let mut f = Vec::new();
            let header = FrameHeader {
                opcode: OpCode::Data(Data::Binary),
                mask: Some([1, 2, 3, 4]),
                ..FrameHeader::default()
            };
            header.format(1, &mut f).unwrap();
            f.push(0);
            f
        };
        let frame = |op, fin, len: usize| {
            let mut f = Vec::new();
            server_frame(&mut f, op, fin, &vec![0; len]);
            f
        };
        let binary = OpCode::Data(Data::Binary);
        let cases = [
            (masked, "masked frame from server"),
            (frame(OpCode::Data(Data::Text), true, 4), "text frame"),
            (
                frame(OpCode::Data(Data::Continue), true, 4),
                "nothing to continue",
            ),
            (
                [frame(binary, false, 1), frame(binary, true, 1)].concat(),
                "waiting for more fragments",
            ),
            (
                frame(OpCode::Control(Control::Ping), false, 1),
                "Fragmented",
            ),
            (frame(OpCode::Control(Control::Ping), true, 126), "too big"),
            (vec![0x83, 0x00], "invalid opcode"),
            (vec![0xC2, 0x00], "Reserved bits"),
        ];
        for (wire, want) in cases {
            let (_, error, _) = feed([&wire[..]], false);
            assert!(error.contains(want), "{want}: {error}");
        }
    }

    #[test]
    fn masking_matches_the_byte_by_byte_definition() {
        let mask = [0xA1, 0x02, 0xF3, 0x44];
        for len in 0..40 {
            let plain = pattern(len, 9);
            let mut masked = plain.clone();
            apply_mask(&mut masked, mask);
            let want: Vec<u8> = plain
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(masked, want, "{len}");
        }
    }
}
