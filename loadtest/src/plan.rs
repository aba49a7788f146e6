//! Turns a [`Config`] into clients: who publishes where, who subscribes to what, which thread
//! serves each, when each connects and from which source address.

use bytes::Bytes;
use vireo_codec::{ByteString, PacketId, Publish, QosPid, TopicName};

use crate::client::{Client, Publisher, Role, Subscriber};
use crate::config::{Config, ConfigError, Scenario};
use crate::tracker::Tracker;

/// The clients of each worker, in the order they connect: subscribers first, so their
/// subscriptions are in place early, then publishers (the run only starts once all are ready).
pub fn clients(config: &Config, workers: usize) -> Result<Vec<Vec<Client>>, ConfigError> {
    let mut out: Vec<Vec<Client>> = (0..workers).map(|_| Vec::new()).collect();
    let mut global = 0usize;
    let mut push = |name: String, role: Role, connect_at_ns: u64| {
        let source = match config.source_ips.len() {
            0 => None,
            n => Some(config.source_ips[global % n]),
        };
        out[global % workers].push(Client::new(name, role, source, connect_at_ns));
        global += 1;
    };
    let prefix = &config.client_id_prefix;
    if let Scenario::Connections {
        connections,
        connect_rate,
    } = config.scenario
    {
        for i in 0..connections {
            let at = connect_rate.map_or(0, |r| (f64::from(i) * 1e9 / r) as u64);
            push(format!("{prefix}-conn-{i}"), Role::Idle, at);
        }
        return Ok(out);
    }
    let publishers = config.scenario.publishers();
    for i in 0..config.scenario.subscribers() {
        let (filter, tracker) = subscription(config, i);
        let sub = Subscriber {
            filter,
            qos: config.sub_qos,
            tracker,
        };
        push(
            format!("{prefix}-sub-{i}"),
            Role::Subscriber(Box::new(sub)),
            0,
        );
    }
    // One zeroed buffer sized like the payload, shared by every template: only its length is
    // used, the bytes on the wire are the stamp and padding written per message.
    let zeros = Bytes::from(vec![0u8; config.payload]);
    for i in 0..publishers {
        let mut template = Publish::new(topic(config, i)?, zeros.clone());
        template.qos = QosPid::new(config.qos, PacketId::MIN);
        let p = Publisher::new(i, template, config.rate, config.count, config.inflight);
        push(format!("{prefix}-pub-{i}"), Role::Publisher(Box::new(p)), 0);
    }
    Ok(out)
}

/// The topic publisher `i` publishes to.
fn topic(config: &Config, i: u32) -> Result<TopicName, ConfigError> {
    let p = &config.topic_prefix;
    let name = match config.scenario {
        Scenario::FanOut { .. } => format!("{p}/fan-out"),
        Scenario::P2p { .. } => format!("{p}/p2p/{i}"),
        _ => format!("{p}/{i}"),
    };
    TopicName::new(name).map_err(|_| ConfigError::TopicPrefix(p.clone()))
}

/// Subscriber `i`'s filter and the publishers it hears from.
fn subscription(config: &Config, i: u32) -> (ByteString, Tracker) {
    let p = &config.topic_prefix;
    let all = Tracker::new(0, config.scenario.publishers());
    match config.scenario {
        Scenario::FanOut { .. } => (format!("{p}/fan-out").into(), all),
        Scenario::P2p { .. } => (format!("{p}/p2p/{i}").into(), Tracker::new(i, 1)),
        _ => (format!("{p}/#").into(), all),
    }
}
