//! # vireo-server
//!
//! The runtime around `vireo-broker`: N worker threads, each pinned to a core and running its
//! own mio event loop over its own SO_REUSEPORT listener, its own slab of connections and the
//! sessions homed on it. Publishes cross workers in batches over crossbeam channels.
//!
//! Layout: `server` (start/stop), `worker` (the event loop, reads, writes, timers), `session`
//! (CONNECT, takeover, hand-over, close, Will), `routing` (packet handlers and fan-out),
//! `conn` (one connection's buffers), `shared` (cross-worker state), `config`.

mod auth;
mod bridge;
mod clients;
mod config;
mod conn;
mod frames;
mod holds;
mod latency;
mod metrics;
pub mod passwd;
mod per_ip;
mod routing;
mod server;
mod session;
mod shared;
mod store;
mod sys;
mod tls;
mod transport;
mod unfinished;
mod worker;
mod ws;

pub use bridge::{BridgeConfig, BridgeTopic, BridgeTransport, DirectionName};
pub use config::{Config, ConfigError, ListenerConfig, ListenerProtocol, LogFormat, Persistence};
pub use server::{Server, ServerHandle, StartError};
pub use shared::Stats;
