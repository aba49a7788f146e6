//! What a case is made of: the broker's configuration, the clients, and the steps, all drawn
//! from one seed. Steps are plain data (indices into pools, choices), interpreted against the
//! state they meet when they run, so a failing sequence can be shrunk by dropping steps.

use std::time::Duration;

use vireo_broker::SessionLimits;
use vireo_broker::protocol::Limits;
use vireo_codec::{ProtocolVersion, QoS};

/// splitmix64: small, fast, and good enough to draw test cases from.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn small(&mut self, n: u8) -> u8 {
        self.below(u64::from(n)) as u8
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// The seed of case `i` of a run started from `base`.
pub fn case_seed(base: u64, i: u64) -> u64 {
    Rng::new(base ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

/// Topic names clients publish to. The last two break the per-case length and depth limits
/// when those are low (see `Broker`); `$s/x` is a `$` topic that `#` and `+` never match.
pub const TOPICS: &[&str] = &[
    "a",
    "a/b",
    "a/c",
    "b",
    "$s/x",
    "a/b/c/d/e/f",
    "l/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];

/// Filters clients subscribe to: plain, wildcard, shared, and invalid ones (`a/#/b`, `a+`,
/// `$share/g`, `$share//a`), and one too long when the length limit is low.
pub const FILTERS: &[&str] = &[
    "a",
    "a/b",
    "a/+",
    "a/#",
    "#",
    "+/b",
    "+",
    "$s/#",
    "+/+",
    "$share/g/a/#",
    "$share/g/#",
    "$share/h/a/b",
    "a/#/b",
    "a+",
    "$share/g",
    "$share//a",
    "l/#",
    "l/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];

/// Session Expiry Interval a 5.0 CONNECT asks for (`None`: no property, i.e. 0).
pub const EXPIRIES: &[Option<u32>] = &[None, Some(0), Some(5), Some(30), Some(300), Some(u32::MAX)];
pub const KEEP_ALIVES: &[u16] = &[0, 0, 0, 2, 10, 60];
pub const WILL_DELAYS: &[u32] = &[0, 3, 20, 1000];
/// Clock advances, in milliseconds: below, at and past keep-alive, will delay and expiry
/// boundaries.
pub const ADVANCES: &[u64] = &[
    100, 500, 1000, 1000, 2000, 3000, 5000, 16_000, 31_000, 61_000, 400_000,
];
/// Message Expiry Intervals (seconds).
pub const MESSAGE_EXPIRIES: &[u32] = &[1, 4, 100];

/// The broker's settings for one case: small limits, so that windows fill, queues overflow and
/// limits are hit within a few dozen steps.
#[derive(Debug, Clone)]
pub struct Broker {
    pub limits: Limits,
    pub session: SessionLimits,
    /// The server's `session_expiry_secs` as `persistent_session_expiry` turns it (3.1.1).
    pub persistent_expiry: u32,
    pub connect_timeout: Duration,
    pub packet_timeout: Duration,
    pub max_retained_messages: usize,
}

/// One client identity: its id and what its CONNECTs announce. Fixed for the case, so that
/// the window a session's deliveries must respect does not change between connections.
#[derive(Debug, Clone)]
pub struct ClientCfg {
    pub id: String,
    /// Sends an empty client id (the broker assigns one: a new session every time).
    pub anonymous: bool,
    pub version: ProtocolVersion,
    /// 5.0 Receive Maximum sent in CONNECT (`None`: not sent, 65,535).
    pub receive_maximum: Option<u16>,
    /// 5.0 Maximum Packet Size sent in CONNECT (0: not sent).
    pub maximum_packet_size: u32,
    /// 5.0 Topic Alias Maximum sent in CONNECT.
    pub topic_alias_maximum: u16,
}

#[derive(Debug, Clone, Copy)]
pub struct WillSpec {
    pub topic: u8,
    pub qos: u8,
    pub retain: bool,
    pub delay: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// The message's tag.
    Tag,
    /// Payload Format Indicator 1 and a payload that is not UTF-8.
    NotUtf8,
    /// Empty: deletes a retained message.
    Empty,
    /// Bigger than a small Maximum Packet Size.
    Large,
}

/// How a 5.0 PUBLISH uses a Topic Alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alias {
    None,
    /// Sets alias n (1, 2, 0 or past the maximum).
    Set(u16),
    /// Names its topic by alias n alone (an unknown one, sometimes).
    Use(u16),
}

/// A property a client must not send in a PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadProp {
    SubscriptionIdentifier,
    WildcardResponseTopic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// The one the delivery's state calls for.
    Right,
    PubAck,
    PubRec,
    /// 5.0 PUBREC 0x80.
    PubRecFailed,
    PubComp,
}

/// One packet a client sends.
#[derive(Debug, Clone)]
pub enum Pkt {
    Publish {
        topic: u8,
        qos: u8,
        retain: bool,
        payload: Payload,
        alias: Alias,
        expiry: Option<u8>,
        bad: Option<BadProp>,
        /// Reuses the packet id of a QoS 1/2 PUBLISH of this client still in flight.
        reuse_pid: bool,
    },
    /// The `k`th QoS 1/2 PUBLISH of this client not yet acknowledged, again with DUP.
    Republish {
        k: u8,
    },
    /// PUBREL for the `k`th QoS 2 PUBLISH of this client that got its PUBREC (an unknown id
    /// when there is none).
    PubRel {
        k: u8,
    },
    /// An acknowledgement of the `k`th delivery this client has not completed (an unknown id
    /// when there is none).
    Ack {
        kind: AckKind,
        k: u8,
    },
    Subscribe {
        /// (filter, QoS, No Local, Retain As Published, Retain Handling)
        filters: Vec<(u8, u8, bool, bool, u8)>,
        sub_id: Option<u8>,
    },
    Unsubscribe {
        filters: Vec<u8>,
    },
    Ping,
    Disconnect {
        reason: u8,
        expiry: Option<u8>,
    },
    /// A second CONNECT [MQTT-3.1.0-2].
    Connect,
    /// AUTH with no exchange under way.
    Auth,
    /// A packet only a server sends: CONNACK, SUBACK, PINGRESP.
    ServerOnly(u8),
    /// Bytes that do not decode (see `harness::GARBAGE`).
    Garbage(u8),
}

/// The first bytes of a connection that does not start with a valid CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFirst {
    /// Nothing at all: the CONNECT timeout closes it.
    Silent,
    PublishFirst,
    PingFirst,
    Garbage,
    UnsupportedLevel,
    ReservedConnectFlag,
    BadProtocolName,
}

#[derive(Debug, Clone)]
pub enum Step {
    /// A new connection from the client, with its CONNECT (`split`: only that many bytes of
    /// it for now).
    Connect {
        client: u8,
        clean: bool,
        expiry: u8,
        keep_alive: u8,
        will: Option<WillSpec>,
        split: Option<u8>,
    },
    Raw {
        client: u8,
        first: RawFirst,
    },
    /// Packets on the client's newest open connection, in one read.
    Send {
        client: u8,
        packets: Vec<Pkt>,
        split: Option<u8>,
    },
    /// The rest of a packet sent in part.
    Rest {
        client: u8,
    },
    /// The client answers everything it owes: acks for deliveries, PUBREL for its own.
    AckAll {
        client: u8,
    },
    /// The client's socket goes away (EOF, or a reset).
    Close {
        client: u8,
        io: bool,
    },
    Advance {
        ms: u64,
    },
}

impl Broker {
    pub fn draw(rng: &mut Rng) -> Self {
        let receive_maximum = rng.pick(&[2, 3, 4, 1024]);
        let limits = Limits {
            receive_maximum,
            maximum_qos: if rng.chance(85) {
                QoS::ExactlyOnce
            } else {
                QoS::AtLeastOnce
            },
            retain_available: rng.chance(90),
            maximum_packet_size: rng.pick(&[200, 4096]),
            topic_alias_maximum: rng.pick(&[0, 2, 3]),
            outbound_topic_alias_maximum: rng.pick(&[0, 0, 1, 2]),
            wildcard_available: rng.chance(90),
            shared_available: rng.chance(85),
            max_keep_alive: rng.pick(&[0, 0, 0, 4, 30]),
            max_session_expiry: rng.pick(&[u32::MAX, u32::MAX, 20, 100]),
            max_topic_length: rng.pick(&[32, 65_535]),
            max_topic_levels: rng.pick(&[4, 128]),
            max_subscriptions: rng.pick(&[2, 4, 1024]),
        };
        let session = SessionLimits {
            max_inflight: rng.pick(&[1, 2, 3, 1024]),
            max_queued_messages: rng.pick(&[2, 4, 10_000]),
            max_queued_bytes: rng.pick(&[60, 1 << 20]),
            drop_oldest: rng.chance(50),
            // As the server's `Config::session_limits` sets it.
            max_incoming_qos2: usize::from(receive_maximum),
            ..SessionLimits::default()
        };
        Self {
            limits,
            session,
            persistent_expiry: rng.pick(&[u32::MAX, 30, 120]),
            connect_timeout: Duration::from_secs(10),
            packet_timeout: Duration::from_secs(10),
            max_retained_messages: rng.pick(&[2, 1000]),
        }
    }
}

impl ClientCfg {
    pub fn draw(rng: &mut Rng, i: usize) -> Self {
        let version = if rng.chance(50) {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        };
        let v5 = version.is_v5();
        Self {
            id: format!("c{i}"),
            anonymous: rng.chance(8),
            version,
            receive_maximum: (v5 && rng.chance(60)).then(|| rng.pick(&[1, 2, 3])),
            maximum_packet_size: if v5 && rng.chance(30) { 60 } else { 0 },
            topic_alias_maximum: if v5 { rng.pick(&[0, 0, 1, 2]) } else { 0 },
        }
    }
}

/// Filters and topics: most from the first few (the ones that match each other), the rest
/// from the whole pool, invalid and oversized included.
fn topic(rng: &mut Rng, chaos: bool) -> u8 {
    let wide = chaos && rng.chance(30);
    rng.small(if wide { TOPICS.len() as u8 } else { 5 })
}

fn filter(rng: &mut Rng, chaos: bool) -> u8 {
    let wide = chaos && rng.chance(50);
    rng.small(if wide { FILTERS.len() as u8 } else { 12 })
}

/// A packet; `chaos` in 100 draws come out invalid in some way (or valid but odd: a wrong
/// ack, an unknown id, an error reason).
fn packet(rng: &mut Rng, chaos: u64) -> Pkt {
    let bad = rng.chance(chaos);
    match rng.below(100) {
        0..=34 => Pkt::Publish {
            topic: topic(rng, bad),
            qos: rng.pick(&[0, 1, 1, 2, 2, 2]),
            retain: rng.chance(20),
            payload: match rng.below(100) {
                0..=29 if bad => Payload::NotUtf8,
                30..=49 if bad => Payload::Large,
                0..=4 => Payload::Empty,
                _ => Payload::Tag,
            },
            alias: match rng.below(100) {
                0..=29 if bad => Alias::Set(rng.pick(&[0, 7])),
                30..=59 if bad => Alias::Use(rng.pick(&[1, 2, 3])),
                0..=9 => Alias::Set(rng.pick(&[1, 2])),
                10..=19 => Alias::Use(rng.pick(&[1, 2])),
                _ => Alias::None,
            },
            expiry: rng
                .chance(10)
                .then(|| rng.small(MESSAGE_EXPIRIES.len() as u8)),
            bad: match rng.below(100) {
                0..=14 if bad => Some(BadProp::SubscriptionIdentifier),
                15..=29 if bad => Some(BadProp::WildcardResponseTopic),
                _ => None,
            },
            reuse_pid: bad && rng.chance(20),
        },
        35..=41 => Pkt::Republish { k: rng.small(3) },
        42..=47 => Pkt::PubRel { k: rng.small(3) },
        48..=66 => Pkt::Ack {
            kind: if bad {
                rng.pick(&[
                    AckKind::PubAck,
                    AckKind::PubRec,
                    AckKind::PubRecFailed,
                    AckKind::PubComp,
                ])
            } else {
                AckKind::Right
            },
            k: rng.small(3),
        },
        67..=81 => {
            let n = 1 + rng.small(3);
            Pkt::Subscribe {
                filters: (0..n)
                    .map(|_| {
                        (
                            filter(rng, bad),
                            rng.pick(&[0, 1, 2, 2]),
                            rng.chance(10),
                            rng.chance(20),
                            rng.pick(&[0, 0, 1, 2]),
                        )
                    })
                    .collect(),
                sub_id: rng.chance(20).then(|| 1 + rng.small(3)),
            }
        }
        82..=86 => Pkt::Unsubscribe {
            filters: (0..1 + rng.small(2)).map(|_| filter(rng, false)).collect(),
        },
        87..=91 => Pkt::Ping,
        92..=94 => Pkt::Disconnect {
            reason: if bad {
                0x80
            } else {
                rng.pick(&[0x00, 0x00, 0x04])
            },
            expiry: rng.chance(25).then(|| rng.small(EXPIRIES.len() as u8)),
        },
        _ if !bad => Pkt::Ping,
        95 => Pkt::Connect,
        96 => Pkt::Auth,
        97 => Pkt::ServerOnly(rng.small(3)),
        _ => Pkt::Garbage(rng.small(super::harness::GARBAGE.len() as u8)),
    }
}

fn connect(rng: &mut Rng, client: u8, split: bool) -> Step {
    Step::Connect {
        client,
        clean: rng.chance(40),
        expiry: rng.small(EXPIRIES.len() as u8),
        keep_alive: rng.small(KEEP_ALIVES.len() as u8),
        will: rng.chance(40).then(|| WillSpec {
            topic: rng.small(5),
            qos: rng.pick(&[0, 1, 2]),
            retain: rng.chance(20),
            delay: rng.small(WILL_DELAYS.len() as u8),
        }),
        split: (split && rng.chance(5)).then(|| rng.small(12)),
    }
}

/// `n` steps for `clients` clients; `chaos` in 100 packets are invalid.
pub fn steps(rng: &mut Rng, clients: usize, n: usize, chaos: u64) -> Vec<Step> {
    let client = |rng: &mut Rng| rng.small(clients as u8);
    (0..n)
        .map(|_| match rng.below(100) {
            0..=4 => {
                let c = client(rng);
                connect(rng, c, true)
            }
            5 => Step::Raw {
                client: client(rng),
                first: rng.pick(&[
                    RawFirst::Silent,
                    RawFirst::PublishFirst,
                    RawFirst::PingFirst,
                    RawFirst::Garbage,
                    RawFirst::UnsupportedLevel,
                    RawFirst::ReservedConnectFlag,
                    RawFirst::BadProtocolName,
                ]),
            },
            6..=62 => {
                // Mostly one packet a read; sometimes several, which a close in the middle
                // cuts short.
                let n = if rng.chance(80) { 1 } else { 2 + rng.below(3) };
                Step::Send {
                    client: client(rng),
                    packets: (0..n).map(|_| packet(rng, chaos)).collect(),
                    split: rng.chance(4).then(|| rng.small(6)),
                }
            }
            63..=65 => Step::Rest {
                client: client(rng),
            },
            66..=81 => Step::AckAll {
                client: client(rng),
            },
            82..=85 => Step::Close {
                client: client(rng),
                io: rng.chance(30),
            },
            _ => Step::Advance {
                ms: rng.pick(ADVANCES),
            },
        })
        .collect()
}

/// Everything one case runs.
#[derive(Debug, Clone)]
pub struct Case {
    pub broker: Broker,
    pub clients: Vec<ClientCfg>,
    pub steps: Vec<Step>,
}

impl Case {
    pub fn draw(seed: u64, max_steps: usize) -> Self {
        let mut rng = Rng::new(seed);
        let broker = Broker::draw(&mut rng);
        let n = 2 + rng.below(3) as usize;
        let clients = (0..n).map(|i| ClientCfg::draw(&mut rng, i)).collect();
        // Most cases keep to valid traffic, so that sessions live long enough to fill windows
        // and queues; some are mostly abuse.
        let chaos = rng.pick(&[2, 5, 10, 30]);
        let mut steps: Vec<Step> = Vec::with_capacity(max_steps);
        // Most cases start with everyone connected, so that the first steps already route.
        if rng.chance(80) {
            for c in 0..n.min(max_steps) {
                steps.push(connect(&mut rng, c as u8, false));
            }
            for c in 0..n.min(max_steps - steps.len()) {
                if rng.chance(70) {
                    let filters = vec![(rng.small(12), rng.pick(&[0, 1, 2, 2]), false, false, 0)];
                    steps.push(Step::Send {
                        client: c as u8,
                        packets: vec![Pkt::Subscribe {
                            filters,
                            sub_id: None,
                        }],
                        split: None,
                    });
                }
            }
        }
        let len = 1 + rng.below(max_steps.saturating_sub(steps.len()).max(1) as u64) as usize;
        steps.extend(self::steps(&mut rng, n, len, chaos));
        Self {
            broker,
            clients,
            steps,
        }
    }
}
