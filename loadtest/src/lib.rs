//! # vireo-loadtest
//!
//! Vireo's load generator: drives any MQTT 3.1.1 broker with publishers and subscribers, and
//! reports throughput, end-to-end latency and message accounting.
//!
//! **Promise:** it builds only on `vireo-codec`, never on broker internals, so it measures
//! Vireo and Mosquitto alike, and it is built like the broker: a few threads each running a mio
//! event loop over many clients, one write per client per loop iteration, no allocation per
//! message.
//!
//! Every payload carries a stamp ([`payload::Stamp`]): publisher id, sequence number and send
//! time. Subscribers account each (subscriber, publisher) pair ([`tracker`]) for loss,
//! duplicates and reordering, and record end-to-end latency in per-thread HdrHistograms,
//! merged once a second. Rate-limited runs stamp the *intended* send time of their open-loop
//! schedule, which corrects for coordinated omission.
//!
//! Layout: [`config`] (what to run), `plan` (clients per thread), `client` (one connection),
//! `tls` (its rustls session, when the run speaks TLS), `ws` (its WebSocket framing, when the
//! run speaks MQTT over WebSocket), `worker` (one event loop), `controller` (phases: setup, run, drain, stop), `summary` (the
//! verdict), [`report`] and [`output`] (table, JSON, `.hgrm`, SVG), [`sink`] (a minimal relay
//! broker to measure the generator's own ceiling).

pub mod config;
pub mod error;
pub mod output;
pub mod payload;
pub mod report;
pub mod sink;
pub mod sys;
pub mod tracker;

mod client;
mod controller;
mod frame;
mod inflight;
mod plan;
mod shared;
mod summary;
mod timer;
mod tls;
mod worker;
mod ws;

pub use config::{Config, ConfigError, Scenario};
pub use controller::Snapshot;
pub use error::{ClientError, Error};
pub use report::{Failure, Report};
pub use shared::Phase;
pub use vireo_codec::QoS;

use controller::Controller;

/// Runs `config` to completion. A run that completes but fails its checks (loss at QoS 1/2,
/// dropped connections…) returns [`Error::Failed`] carrying the full report.
pub fn run(config: &Config) -> Result<Report, Error> {
    run_with(config, |_| {})
}

/// Like [`run`], calling `observe` once a second with live figures.
pub fn run_with(config: &Config, observe: impl FnMut(&Snapshot)) -> Result<Report, Error> {
    let addr = config.validate()?;
    let tls = config
        .tls
        .as_ref()
        .map(|t| tls::Connector::new(t, &config.host))
        .transpose()?;
    let ws = config
        .ws
        .as_ref()
        .map(|w| ws::Upgrader::new(w, &config.host, config.port))
        .transpose()?;
    let extra = summary::Extra {
        open_files_limit: sys::raise_open_files_limit(),
        rss_before_kib: config.broker_pid.and_then(sys::rss_kib),
    };
    let mut ctl = Controller::spawn(config, addr, tls, ws, observe)?;
    let measured = ctl.drive();
    let stopped = ctl.stop();
    let measured = measured?;
    stopped?;
    let report = summary::build(&mut ctl, measured, extra);
    if report.failures.is_empty() {
        Ok(report)
    } else {
        Err(Error::Failed(Box::new(report)))
    }
}
