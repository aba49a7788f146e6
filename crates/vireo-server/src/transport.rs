//! What lies between a connection's socket and its MQTT bytes: TLS, WebSocket, or both
//! (`wss`). A plain TCP connection has no [`Layers`] at all, and pays nothing for them.

use std::io::{self, IoSlice};

use bytes::BytesMut;
use mio::net::TcpStream;

use crate::tls::{self, TlsSession};
use crate::ws::{Io, WsSession};

/// A connection's layers, outermost (TLS, on the socket) first.
#[derive(Debug)]
pub(crate) struct Layers {
    pub tls: Option<TlsSession>,
    pub ws: Option<WsSession>,
}

impl Layers {
    fn io<'a>(stream: &'a mut TcpStream, tls: &'a mut Option<TlsSession>) -> Io<'a> {
        Io {
            stream,
            tls: tls.as_mut().map(|t| &mut t.session),
            read: 0,
        }
    }

    /// Reads MQTT bytes into `buf`, as a socket read would: `Ok(0)` at the end of the
    /// stream, `WouldBlock` when it is drained. A count above 0 says bytes were taken off
    /// the stream, not that `buf` grew by that much (some may wait in a layer).
    pub(crate) fn read(&mut self, stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
        match (&mut self.ws, &mut self.tls) {
            (Some(ws), tls) => ws.read(&mut Self::io(stream, tls), buf),
            (None, Some(tls)) => tls::read(&mut tls.session, stream, buf),
            (None, None) => Err(io::ErrorKind::Unsupported.into()),
        }
    }

    /// Takes MQTT bytes from `iov` as a socket write would: how many, or `WouldBlock`.
    pub(crate) fn write_vectored(
        &mut self,
        stream: &mut TcpStream,
        iov: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        match (&mut self.ws, &mut self.tls) {
            (Some(ws), tls) => ws.write_vectored(&mut Self::io(stream, tls), iov),
            (None, Some(tls)) => tls::write_vectored(&mut tls.session, stream, iov),
            (None, None) => Err(io::ErrorKind::Unsupported.into()),
        }
    }

    /// Writes what the layers hold themselves (WebSocket control frames, TLS records):
    /// `Ok` once nothing is left, `WouldBlock` if the socket is full.
    pub(crate) fn flush(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        if let Some(ws) = &mut self.ws {
            ws.write_control(&mut Self::io(stream, &mut self.tls))?;
        }
        if let Some(tls) = &mut self.tls {
            tls::flush(&mut tls.session, stream)?;
        }
        Ok(())
    }

    /// Whether a layer has bytes of its own to write.
    pub(crate) fn wants_write(&self) -> bool {
        self.ws.as_ref().is_some_and(WsSession::wants_write)
            || self.tls.as_ref().is_some_and(|t| t.session.wants_write())
    }

    /// Tells the peer the stream ends, after what is written: a WebSocket close frame, a
    /// TLS close_notify. Best effort.
    pub(crate) fn close(&mut self, stream: &mut TcpStream) {
        if let Some(ws) = &mut self.ws {
            let mut io = Self::io(stream, &mut self.tls);
            ws.close(&mut io);
            let _ = ws.write_control(&mut io);
        }
        if let Some(tls) = &mut self.tls {
            tls.session.send_close_notify();
            let _ = tls::flush(&mut tls.session, stream);
        }
    }

    /// What the connection speaks under MQTT, for its log lines.
    pub(crate) fn name(layers: Option<&Self>) -> &'static str {
        match layers.map(|l| (l.tls.is_some(), l.ws.is_some())) {
            None | Some((false, false)) => "tcp",
            Some((true, false)) => "tls",
            Some((false, true)) => "ws",
            Some((true, true)) => "wss",
        }
    }

    /// Bytes a layer holds of an unfinished frame.
    pub(crate) fn partial(&self) -> usize {
        self.ws.as_ref().map_or(0, WsSession::partial)
    }

    /// Whether the WebSocket ended (refused handshake, close frame) and the connection must
    /// close once its control bytes are out.
    pub(crate) fn ended(&self) -> bool {
        self.ws.as_ref().is_some_and(WsSession::closed)
    }
}
