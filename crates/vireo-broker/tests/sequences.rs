//! A packet-sequence fuzzer for the protocol core: random valid and invalid packet sequences
//! from two to four clients (3.1.1 and 5.0), on virtual time, through a broker model that
//! applies the core's decisions as the server's worker does.
//!
//! - `sequences/cases.rs`: a case (broker limits, clients, steps) drawn from one seed. Steps:
//!   CONNECTs (clean or persistent, Wills with delays, keep alives), packets valid and not
//!   (wrong or unknown packet ids, PUBREL for unknown ids, repeated QoS 2 PUBLISHes, bad
//!   filters, packets before CONNECT, a second CONNECT, oversized topics, unknown or invalid
//!   topic aliases, malformed bytes), packets cut in two, closes, clock advances.
//! - `sequences/broker.rs`, `sequences/routing.rs`: the broker model, one server worker with
//!   byte queues for sockets (what it leaves out is listed there).
//! - `sequences/client.rs`, `sequences/harness.rs`, `sequences/reads.rs`: clients that send
//!   the steps and read what comes back as client libraries do, and the checks.
//! - `sequences/oracle.rs`: what the spec says should have happened, kept apart from the model.
//!
//! Checked after every step:
//! - no panic, in the core or in the session;
//! - a session's QoS 1/2 deliveries in flight never exceed its window: the broker's
//!   `max_inflight` and the Receive Maximum its client announced (counted by the broker and,
//!   from what arrives, by the client); inbound QoS 2 ids never exceed the broker's Receive
//!   Maximum;
//! - every message handed to a session matches a subscription the session was granted at that
//!   moment (from the SUBACK decisions, not the index), at a QoS it granted, and not its own
//!   under No Local; every PUBLISH a client gets was handed to its session, at that QoS or
//!   more;
//! - QoS 2: the application gets a message at most as many times as it was handed to the
//!   session (the client counts as a client does, by packet id, spec 4.3.3); an inbound QoS 2
//!   PUBLISH repeated before PUBREL is routed once;
//! - sessions: Session Present exactly when Clean Start is 0 and a session is stored and not
//!   expired;
//! - Wills: published only after a close other than a valid DISCONNECT 0x00, once their delay
//!   ran out or their session ended, never after the session resumed in time, exactly once;
//! - on the wire: CONNACK first, nothing after a refusing CONNACK or after a DISCONNECT,
//!   DISCONNECT only to 5.0 clients, every answer to a request of the client, each PUBLISH
//!   within the client's Maximum Packet Size and Topic Alias Maximum, no packet id reused
//!   while in flight;
//! - at the end, once every connected client has answered everything: nothing left in flight,
//!   queued or owed.
//!
//! `VIREO_SEQUENCES` sets the number of cases (default below), `VIREO_SEQUENCES_STEPS` the
//! most steps per case (64), `VIREO_SEQUENCES_BASE` the seed cases are drawn from. A failure
//! prints its case seed, shrunk steps and how to replay it: `VIREO_SEQUENCES_SEED=<seed>`
//! runs that case alone. Library-internal hash orders are not seeded, so where the order of a
//! map could change what the model does it sorts (see `broker.rs`).

#![allow(clippy::unwrap_used)]

#[path = "sequences/broker.rs"]
mod broker;
#[path = "sequences/cases.rs"]
mod cases;
#[path = "sequences/client.rs"]
mod client;
#[path = "sequences/harness.rs"]
mod harness;
#[path = "sequences/oracle.rs"]
mod oracle;

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cases::Case;
use harness::{Harness, Stats};

/// Cases per run by default (CI): about 12 s of a debug build under nextest on two cores.
const DEFAULT_CASES: u64 = 60_000;
const DEFAULT_STEPS: usize = 64;
const DEFAULT_BASE: u64 = 0x5EED_5EC5;

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    let value = std::env::var(name).ok()?;
    let value = value.trim();
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?.to_string().parse().ok(),
        None => value.parse().ok(),
    };
    assert!(parsed.is_some(), "{name}={value} does not parse");
    parsed
}

fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panic".to_owned())
}

/// Runs `case`; its panic message if it fails.
fn failure(case: &Case) -> Option<String> {
    panic::catch_unwind(AssertUnwindSafe(|| Harness::run(case)))
        .err()
        .map(|p| message(&*p))
}

/// Drops steps while the case still fails: halves, then quarters, down to single steps.
fn shrink(mut case: Case) -> Case {
    let mut chunk = case.steps.len().div_ceil(2);
    while chunk > 0 {
        let mut at = 0;
        while at < case.steps.len() {
            let mut smaller = case.clone();
            let end = (at + chunk).min(smaller.steps.len());
            smaller.steps.drain(at..end);
            if failure(&smaller).is_some() {
                case = smaller;
            } else {
                at += chunk;
            }
        }
        chunk /= 2;
    }
    case
}

/// Shrinks a failing case and panics with how to replay it.
fn report(seed: u64, steps: usize) -> ! {
    let case = Case::draw(seed, steps);
    // Quiet while shrinking: every attempt that still fails would print its panic.
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let first = failure(&case);
    let small = shrink(case);
    let last = failure(&small);
    panic::set_hook(hook);
    let mut trace = String::new();
    for (i, step) in small.steps.iter().enumerate() {
        trace.push_str(&format!("  {i:2}: {step:?}\n"));
    }
    panic!(
        "case {seed:#x} fails: {}\nshrunk to {} steps, failing with: {}\nbroker: {:?}\nclients: \
         {:?}\nsteps:\n{trace}replay: VIREO_SEQUENCES_SEED={seed:#x} cargo test -p vireo-broker \
         --test sequences",
        first.as_deref().unwrap_or("(passed when replayed)"),
        small.steps.len(),
        last.as_deref().unwrap_or("(passed)"),
        small.broker,
        small.clients,
    );
}

#[test]
fn packet_sequences() {
    let steps = env("VIREO_SEQUENCES_STEPS").unwrap_or(DEFAULT_STEPS);
    if let Some(seed) = env::<u64>("VIREO_SEQUENCES_SEED") {
        if failure(&Case::draw(seed, steps)).is_some() {
            report(seed, steps);
        }
        return;
    }
    let cases: u64 = env("VIREO_SEQUENCES").unwrap_or(DEFAULT_CASES);
    let base: u64 = env("VIREO_SEQUENCES_BASE").unwrap_or(DEFAULT_BASE);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(Mutex::new(None::<u64>));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (next, done, stop, failed) = (
                Arc::clone(&next),
                Arc::clone(&done),
                Arc::clone(&stop),
                Arc::clone(&failed),
            );
            std::thread::spawn(move || {
                let mut stats = Stats::default();
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= cases {
                        break;
                    }
                    let seed = cases::case_seed(base, i);
                    let case = Case::draw(seed, steps);
                    match panic::catch_unwind(AssertUnwindSafe(|| Harness::run(&case))) {
                        Ok(s) => stats.add(&s),
                        Err(_) => {
                            stop.store(true, Ordering::Relaxed);
                            failed.lock().unwrap().get_or_insert(seed);
                            break;
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                stats
            })
        })
        .collect();
    let mut stats = Stats::default();
    for w in workers {
        stats.add(&w.join().unwrap());
    }
    if let Some(seed) = *failed.lock().unwrap() {
        report(seed, steps);
    }
    let done = done.load(Ordering::Relaxed);
    assert_eq!(done, cases);
    eprintln!(
        "{done} sequences of up to {steps} steps (base seed {base:#x}) in {:.1?} on {threads} \
         threads: {stats:?}",
        start.elapsed()
    );
}

/// Found by this fuzzer: a 5.0 DISCONNECT with an error reason (0x80) discarded the Will,
/// which only reason 0x00 may do [MQTT-3.1.2-10]; the oracle wants it out at once (no delay).
#[test]
fn regression_disconnect_with_an_error_publishes_the_will() {
    use cases::{Broker, ClientCfg, Pkt, Step, WillSpec};
    use std::time::Duration;
    use vireo_broker::SessionLimits;
    use vireo_broker::protocol::Limits;
    use vireo_codec::ProtocolVersion;

    let client = ClientCfg {
        id: "c0".into(),
        anonymous: false,
        version: ProtocolVersion::V5,
        receive_maximum: None,
        maximum_packet_size: 0,
        topic_alias_maximum: 0,
    };
    for reason in [0x00, 0x04, 0x80] {
        let case = Case {
            broker: Broker {
                limits: Limits::default(),
                session: SessionLimits::default(),
                persistent_expiry: u32::MAX,
                connect_timeout: Duration::from_secs(10),
                packet_timeout: Duration::from_secs(10),
                max_retained_messages: 1000,
            },
            clients: vec![client.clone()],
            steps: vec![
                Step::Connect {
                    client: 0,
                    clean: true,
                    expiry: 0,
                    keep_alive: 0,
                    will: Some(WillSpec {
                        topic: 0,
                        qos: 1,
                        retain: false,
                        delay: 0,
                    }),
                    split: None,
                },
                Step::Send {
                    client: 0,
                    packets: vec![Pkt::Disconnect {
                        reason,
                        expiry: None,
                    }],
                    split: None,
                },
            ],
        };
        let stats = Harness::run(&case);
        assert_eq!(
            stats.wills,
            u64::from(reason != 0x00),
            "reason {reason:#04x}"
        );
    }
}
