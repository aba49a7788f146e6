//! The generator's errors: why a run could not start, why one client failed, and the verdict of
//! a run that completed but failed its checks (loss, drops), which carries the full report.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use vireo_codec::DecodeError;

use crate::config::ConfigError;
use crate::report::Report;

/// Why one client failed to set up, or was lost during the run.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection could not be made.
    #[error("TCP connect failed: {0}")]
    Connect(#[source] io::Error),
    /// The broker answered CONNECT with a non-zero return code.
    #[error("CONNACK refused with return code {code} ({})", connack_meaning(*code))]
    Refused {
        /// The 3.1.1 return code.
        code: u8,
    },
    /// The broker answered SUBSCRIBE with the failure code 0x80.
    #[error("SUBACK refused the subscription (0x80)")]
    SubscribeRefused,
    /// No CONNACK (or SUBACK) in time.
    #[error("no CONNACK/SUBACK within {0:?}")]
    Timeout(Duration),
    /// The broker closed the connection.
    #[error("connection closed by the broker")]
    Closed,
    /// Reading or writing failed.
    #[error("i/o error: {0}")]
    Io(#[source] io::Error),
    /// The TLS handshake failed (a certificate that does not verify…) or a record was bad.
    #[error("TLS: {0}")]
    Tls(#[source] rustls::Error),
    /// The WebSocket upgrade was refused or its response did not verify, or a frame was bad.
    #[error("WebSocket: {0}")]
    WebSocket(#[source] tungstenite::Error),
    /// The broker sent bytes that are not valid MQTT.
    #[error("malformed packet from the broker: {0}")]
    Decode(#[from] DecodeError),
    /// The broker sent a packet a client in this state does not expect.
    #[error("unexpected {0} from the broker")]
    Unexpected(&'static str),
}

/// The meaning of a 3.1.1 CONNACK return code.
pub fn connack_meaning(code: u8) -> &'static str {
    match code {
        0 => "accepted",
        1 => "unacceptable protocol version",
        2 => "identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "unknown return code",
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot run.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Nothing accepts connections at the broker address.
    #[error("broker unreachable at {addr}: {source}")]
    Unreachable {
        /// The address tried.
        addr: SocketAddr,
        /// The connect error.
        source: io::Error,
    },
    /// The broker refused a CONNECT.
    #[error("broker refused CONNECT from {client_id}: return code {code} ({})", connack_meaning(*code))]
    ConnackRefused {
        /// The client refused.
        client_id: String,
        /// The 3.1.1 return code.
        code: u8,
    },
    /// A client failed while setting up (before any publish).
    #[error("client {client_id} failed during setup: {source}")]
    Setup {
        /// The client.
        client_id: String,
        /// What happened.
        source: ClientError,
    },
    /// The generator could not start its threads or event loops.
    #[error("cannot start the generator: {0}")]
    Start(#[source] io::Error),
    /// A worker thread died or did not report back.
    #[error("generator thread {0} did not report its results")]
    WorkerLost(usize),
    /// Writing an output file failed.
    #[error("cannot write {path}: {source}")]
    Output {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The run completed but failed its checks; the report says why and has every figure.
    #[error("run failed: {}", .0.failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Failed(Box<Report>),
}

impl Error {
    /// The report, if the run got far enough to make one.
    pub fn report(&self) -> Option<&Report> {
        match self {
            Error::Failed(r) => Some(r),
            _ => None,
        }
    }

    /// Maps a client's setup failure to the clearest top-level error.
    pub(crate) fn from_setup(addr: SocketAddr, client_id: String, e: ClientError) -> Self {
        match e {
            ClientError::Connect(source) => Error::Unreachable { addr, source },
            ClientError::Refused { code } => Error::ConnackRefused { client_id, code },
            source => Error::Setup { client_id, source },
        }
    }
}
