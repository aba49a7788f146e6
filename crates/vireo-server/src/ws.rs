//! MQTT over WebSocket (RFC 6455), on the workers' own event loops like plain TCP and TLS.
//!
//! tungstenite does the WebSocket work: it parses the HTTP upgrade request, derives the
//! accept key and writes the response; after the handshake its [`WebSocketContext`] reads
//! frames (unmasking them, joining fragments, answering pings and the close handshake). It
//! is driven sans-I/O: each read hands it the connection's byte stream (the socket, or TLS
//! plaintext under `wss`) for that call only, and whatever it writes itself (pongs, the
//! close reply, the handshake response) goes into a control buffer, not to the socket.
//!
//! Output takes a shorter road. A server's frames are not masked, so the payload of a
//! binary frame is the MQTT bytes as they are: each write puts one frame header (formatted
//! by tungstenite's [`FrameHeader`]) in front of the connection's queued frames and hands
//! both to one vectored write, with no copy. Frame and packet boundaries are independent
//! [MQTT-6.0.0-2], so one WebSocket frame carries everything queued when it starts. The
//! control buffer is written only between two data frames, so a pong never lands inside one.

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use bytes::BytesMut;
use mio::net::TcpStream;
use rustls::ServerConnection;
use tungstenite::Message;
use tungstenite::handshake::machine::TryParse;
use tungstenite::handshake::server::{Request, create_response, write_response};
use tungstenite::http::{HeaderValue, Response, StatusCode};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};

/// Subprotocols accepted, in order of preference: `mqtt` is the one the standard names
/// [MQTT-6.0.0-4]; `mqttv3.1` is what MQTT 3.1 clients (and some old libraries) offer.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];
/// Largest upgrade request accepted; browsers send well under 2 KiB.
const MAX_REQUEST: usize = 16 * 1024;
/// What tungstenite reads from the stream per call, and the buffer it keeps per connection.
/// Small, because it keeps it for the connection's life (an idle WebSocket client costs this
/// much more than a TCP one); MQTT over WebSocket is mostly small frames.
const READ_CHUNK: usize = 4 * 1024;
/// Binary frames read per call before returning to the worker's read loop, which decodes
/// and accounts for them.
const FRAMES_PER_READ: usize = 16;
/// Control frames (pings, pongs) handled per read call: a ping flood cannot hold the worker.
const CONTROL_PER_READ: usize = 64;
/// Pongs (and other control bytes) waiting for a socket the client does not read, at most:
/// past it the connection is closed, so a client that pings without reading cannot make the
/// broker hold its replies without bound.
const MAX_CONTROL: usize = 64 * 1024;

/// A WebSocket listener's settings, as each accepted connection needs them.
#[derive(Debug, Clone)]
pub(crate) struct WsListener {
    /// The request path served (`/mqtt` unless configured).
    pub path: Arc<str>,
    /// Largest WebSocket frame and message accepted.
    pub max_message: usize,
}

impl WsListener {
    pub(crate) fn accept(&self) -> WsSession {
        WsSession {
            state: State::Handshake(Vec::new()),
            listener: self.clone(),
            control: Vec::new(),
            header: [0; 10],
            header_len: 0,
            header_at: 0,
            payload_left: 0,
            partial: 0,
        }
    }
}

enum State {
    /// The upgrade request so far.
    Handshake(Vec<u8>),
    Open(Box<WebSocketContext>),
    /// The handshake was refused (its response is in the control buffer) or the close
    /// handshake is done: nothing more is read.
    Closed,
}

/// The WebSocket state of one connection.
pub(crate) struct WsSession {
    state: State,
    listener: WsListener,
    /// What tungstenite wrote (the handshake response, pongs, close frames), waiting for
    /// the end of the data frame being written.
    control: Vec<u8>,
    /// The header of the data frame being written, and how much of it is written.
    header: [u8; 10],
    header_len: u8,
    header_at: u8,
    /// Payload bytes of that frame still to write.
    payload_left: usize,
    /// Bytes read since the last complete message: what an unfinished frame holds.
    partial: usize,
}

impl std::fmt::Debug for WsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsSession")
            .field("open", &matches!(self.state, State::Open(_)))
            .field("control", &self.control.len())
            .field("payload_left", &self.payload_left)
            .finish_non_exhaustive()
    }
}

/// The byte stream under WebSocket: the socket, or TLS plaintext. Counts what it reads.
pub(crate) struct Io<'a> {
    pub stream: &'a mut TcpStream,
    pub tls: Option<&'a mut ServerConnection>,
    pub read: usize,
}

impl Read for Io<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.tls.as_deref_mut() {
            None => self.stream.read(buf)?,
            Some(tls) => crate::tls::read_slice(tls, self.stream, buf)?,
        };
        self.read += n;
        Ok(n)
    }
}

impl Io<'_> {
    fn write_vectored(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.tls.as_deref_mut() {
            None => self.stream.write_vectored(iov),
            Some(tls) => crate::tls::write_vectored(tls, self.stream, iov),
        }
    }
}

/// What tungstenite is given as its stream: reads come from the connection, writes go to
/// the control buffer.
struct Tap<'a, 'b> {
    io: &'a mut Io<'b>,
    control: &'a mut Vec<u8>,
}

impl Read for Tap<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.read(buf)
    }
}

impl Write for Tap<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.control.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn invalid(why: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

impl WsSession {
    /// Reads MQTT bytes (binary frame payloads) into `buf`. `Ok(n)`: `n` bytes were taken off
    /// the stream (some may wait in an unfinished frame); `Ok(0)` at the end of the stream or
    /// of the WebSocket (close frame, refused handshake); `WouldBlock` when the stream is
    /// drained. A text frame [MQTT-6.0.0-1] or any WebSocket protocol error is `InvalidData`.
    pub(crate) fn read(&mut self, io: &mut Io<'_>, buf: &mut BytesMut) -> io::Result<usize> {
        io.read = 0;
        match &mut self.state {
            State::Closed => Ok(0),
            State::Handshake(_) => self.read_handshake(io),
            State::Open(_) => self.read_frames(io, buf),
        }
    }

    fn read_handshake(&mut self, io: &mut Io<'_>) -> io::Result<usize> {
        let State::Handshake(request) = &mut self.state else {
            return Ok(0);
        };
        let start = request.len();
        request.resize(start + READ_CHUNK, 0);
        let n = io.read(&mut request[start..]);
        request.truncate(start + *n.as_ref().unwrap_or(&0));
        if request.is_empty() {
            // Nothing came (a readiness event without data): hold no buffer for it.
            *request = Vec::new();
        }
        if n? == 0 {
            return Ok(0);
        }
        let parsed = match Request::try_parse(request) {
            Ok(Some((len, req))) => Some((len, req)),
            Ok(None) if request.len() < MAX_REQUEST => None,
            Ok(None) => return self.refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade request unreadable");
                return self.refuse(StatusCode::BAD_REQUEST);
            }
        };
        let Some((len, req)) = parsed else {
            return Ok(io.read);
        };
        if req.uri().path() != &*self.listener.path {
            tracing::debug!(
                path = req.uri().path(),
                "WebSocket upgrade for another path"
            );
            return self.refuse(StatusCode::NOT_FOUND);
        }
        let Some(protocol) = chosen_subprotocol(&req) else {
            // The standard says clients offer `mqtt` [MQTT-6.0.0-3]; one that does not is
            // not an MQTT client (as EMQX decides by default).
            tracing::debug!("WebSocket upgrade without the mqtt subprotocol");
            return self.refuse(StatusCode::BAD_REQUEST);
        };
        let mut response = match create_response(&req) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade refused");
                return self.refuse(StatusCode::BAD_REQUEST);
            }
        };
        // [MQTT-6.0.0-4]
        response
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
        write_response(&mut self.control, &response).map_err(invalid)?;
        // Bytes after the request (a client that did not wait for the response) are the
        // first frames.
        let rest = request.split_off(len);
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_CHUNK)
            .write_buffer_size(0)
            .max_frame_size(Some(self.listener.max_message))
            .max_message_size(Some(self.listener.max_message));
        self.partial = rest.len();
        self.state = State::Open(Box::new(WebSocketContext::from_partially_read(
            rest,
            Role::Server,
            Some(config),
        )));
        Ok(io.read)
    }

    /// Ends a handshake with an HTTP error; the response goes out with the next flush,
    /// then the stream ends.
    fn refuse(&mut self, status: StatusCode) -> io::Result<usize> {
        self.state = State::Closed;
        let mut response = Response::new(());
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert("Connection", HeaderValue::from_static("close"));
        response
            .headers_mut()
            .insert("Content-Length", HeaderValue::from_static("0"));
        write_response(&mut self.control, &response).map_err(invalid)?;
        Ok(0)
    }

    fn read_frames(&mut self, io: &mut Io<'_>, buf: &mut BytesMut) -> io::Result<usize> {
        let State::Open(ctx) = &mut self.state else {
            return Ok(0);
        };
        let (mut frames, mut controls) = (0, 0);
        // What `io` had read when the last message was complete: bytes past it belong to an
        // unfinished frame.
        let mut at_message = 0;
        loop {
            let mut tap = Tap {
                io,
                control: &mut self.control,
            };
            match ctx.read(&mut tap) {
                Ok(Message::Binary(payload)) => {
                    buf.extend_from_slice(&payload);
                    (self.partial, at_message) = (0, io.read);
                    frames += 1;
                    if frames == FRAMES_PER_READ {
                        // At least 1: bytes were taken even if all came from tungstenite's
                        // buffer, and 0 would read as the end of the stream.
                        return Ok(io.read.max(1));
                    }
                }
                Ok(Message::Ping(_) | Message::Pong(_)) => {
                    if self.control.len() > MAX_CONTROL {
                        return Err(invalid("WebSocket pings while not reading the pongs"));
                    }
                    (self.partial, at_message) = (0, io.read);
                    controls += 1;
                    if controls == CONTROL_PER_READ {
                        return Ok(io.read.max(1));
                    }
                }
                // [MQTT-6.0.0-1]
                Ok(Message::Text(_)) => return Err(invalid("WebSocket text frame")),
                Ok(Message::Close(_)) => {
                    // tungstenite queued the reply; it goes out before the close.
                    let mut tap = Tap {
                        io,
                        control: &mut self.control,
                    };
                    let _ = ctx.flush(&mut tap);
                    self.state = State::Closed;
                    return Ok(0);
                }
                Ok(Message::Frame(_)) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.partial += io.read - at_message;
                    if frames > 0 || controls > 0 || io.read > 0 {
                        return Ok(io.read.max(1));
                    }
                    return Err(e);
                }
                Err(tungstenite::Error::Io(e)) => return Err(e),
                Err(
                    tungstenite::Error::ConnectionClosed
                    | tungstenite::Error::AlreadyClosed
                    | tungstenite::Error::Protocol(
                        tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                    ),
                ) => {
                    // The peer closed the stream, with or without the close handshake.
                    self.state = State::Closed;
                    return Ok(0);
                }
                Err(e) => return Err(invalid(e.to_string())),
            }
        }
    }

    /// Bytes an unfinished frame, or the upgrade request so far, holds (for the
    /// unfinished-packet budget and clock, as a partial CONNECT would count).
    pub(crate) fn partial(&self) -> usize {
        match &self.state {
            State::Handshake(request) => request.len(),
            _ => self.partial,
        }
    }

    /// Whether control bytes wait to be written.
    pub(crate) fn wants_write(&self) -> bool {
        !self.control.is_empty()
    }

    /// Writes `iov` (MQTT bytes) as a binary frame's payload: the payload bytes written, or
    /// `WouldBlock`. Control bytes waiting go first, when no data frame is half written.
    pub(crate) fn write_vectored(
        &mut self,
        io: &mut Io<'_>,
        iov: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        loop {
            if self.header_at == self.header_len && self.payload_left == 0 {
                self.write_control(io)?;
                let total: usize = iov.iter().map(|s| s.len()).sum();
                if total == 0 {
                    return Ok(0);
                }
                let header = FrameHeader {
                    opcode: OpCode::Data(Data::Binary),
                    ..FrameHeader::default()
                };
                let mut at = io::Cursor::new(&mut self.header[..]);
                header.format(total as u64, &mut at).map_err(invalid)?;
                self.header_len = at.position() as u8;
                self.header_at = 0;
                self.payload_left = total;
            }
            // The header and up to a whole flush's slices, on the stack: no allocation per write.
            let mut slices: smallvec::SmallVec<[IoSlice<'_>; crate::conn::MAX_IOVECS + 1]> =
                smallvec::SmallVec::new();
            let header = &self.header[usize::from(self.header_at)..usize::from(self.header_len)];
            if !header.is_empty() {
                slices.push(IoSlice::new(header));
            }
            let mut left = self.payload_left;
            for s in iov {
                if left == 0 {
                    break;
                }
                let take = s.len().min(left);
                slices.push(IoSlice::new(&s[..take]));
                left -= take;
            }
            let n = io.write_vectored(&slices)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let from_header = n.min(header.len());
            self.header_at += from_header as u8;
            let payload = n - from_header;
            self.payload_left -= payload;
            if payload > 0 {
                return Ok(payload);
            }
        }
    }

    /// Writes the control bytes waiting, if no data frame is half written: `Ok` once none
    /// wait (or they must wait for the frame), `WouldBlock` if the stream is full.
    pub(crate) fn write_control(&mut self, io: &mut Io<'_>) -> io::Result<()> {
        if self.header_at != self.header_len || self.payload_left != 0 {
            return Ok(());
        }
        while !self.control.is_empty() {
            let n = io.write_vectored(&[IoSlice::new(&self.control)])?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.control.drain(..n);
        }
        if self.control.capacity() > 0 {
            self.control = Vec::new();
        }
        Ok(())
    }

    /// Queues a close frame (normal closure), written after what is queued.
    pub(crate) fn close(&mut self, io: &mut Io<'_>) {
        if let State::Open(ctx) = &mut self.state {
            let mut tap = Tap {
                io,
                control: &mut self.control,
            };
            let _ = ctx.close(&mut tap, None);
        }
        self.state = State::Closed;
    }

    /// Whether the WebSocket has ended (a refused handshake, a close): once the control
    /// bytes are written, the connection closes.
    pub(crate) fn closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }
}

/// The subprotocol to answer with: the first of ours the client offers.
fn chosen_subprotocol(req: &Request) -> Option<&'static str> {
    let offered: Vec<&str> = req
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    SUBPROTOCOLS
        .into_iter()
        .find(|p| offered.iter().any(|o| o.eq_ignore_ascii_case(p)))
}
