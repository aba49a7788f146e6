//! Runs a case: the clients turn steps into bytes for the broker model, read what it writes
//! back as a client would, and every invariant is checked after every step.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use vireo_broker::SessionId;
use vireo_codec::{
    Ack, Bytes, BytesMut, ConnAck, Connect, Disconnect, LastWill, Packet, PacketId, Properties,
    Property, ProtocolVersion, Publish, QoS, QosPid, ReasonCode, SubAck, Subscribe,
    SubscriptionOptions, TopicName, Unsubscribe,
};

use super::broker::World;
use super::cases::{
    AckKind, Alias, BadProp, Case, EXPIRIES, FILTERS, KEEP_ALIVES, MESSAGE_EXPIRIES, Payload, Pkt,
    RawFirst, Step, TOPICS, WILL_DELAYS, WillSpec,
};
use super::client::{Client, ClientConn, DState, Delivery, Own, OwnStage, SessionState};
use super::oracle::Oracle;

#[path = "reads.rs"]
mod reads;

/// Bytes that do not decode, each for its own reason.
pub const GARBAGE: &[&[u8]] = &[
    &[0x00, 0x00],                               // reserved packet type 0
    &[0x60, 0x02, 0x00, 0x01],                   // PUBREL with flags 0 [MQTT-3.6.1-1]
    &[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01], // PUBLISH at QoS 3 [MQTT-3.3.1-4]
    &[0x82, 0x02, 0x00, 0x01],                   // SUBSCRIBE without a filter [MQTT-3.8.3-3]
    &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],       // a five-byte remaining length
    &[0x40, 0x02, 0x00, 0x00],                   // packet id 0 [MQTT-2.3.1-1]
    &[0x30, 0x04, 0x00, 0x01, b'#', b'x'],       // a wildcard in a topic name [MQTT-3.3.2-2]
    &[0x30, 0x02, 0x00, 0x05],                   // a string longer than its packet
    &[0x30, 0xFF, 0x7F],                         // 16 KiB: past the Maximum Packet Size
    &[0xF0, 0x00],                               // AUTH (a reserved type before 5.0)
    &[0xE1, 0x00],                               // DISCONNECT with a reserved flag
];

/// Packet ids no client or broker hands out in a case: acks and PUBRELs for unknown ids.
const UNKNOWN_PID: u16 = 60_000;
/// SUBSCRIBE / UNSUBSCRIBE packet ids start here, clear of PUBLISH ids.
const SUBSCRIBE_PID: u16 = 50_000;
/// Ids of PUBLISHes sent before CONNACK start here.
const EARLY_PID: u16 = 40_000;

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn encode(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    packet.encode(version, &mut buf).unwrap();
    buf.to_vec()
}

/// What a run exercised, summed over its cases: printed so that a generator that stopped
/// reaching something shows.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub steps: u64,
    /// Closes by reason.
    pub closed: BTreeMap<String, u64>,
    pub accepted: u64,
    pub resumed: u64,
    pub refused: u64,
    pub closes: u64,
    pub server_disconnects: u64,
    pub publishes: [u64; 3],
    pub qos2_delivered: u64,
    pub offers: u64,
    pub retained_offers: u64,
    pub wills: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.steps += o.steps;
        for (k, v) in &o.closed {
            *self.closed.entry(k.clone()).or_default() += v;
        }
        self.accepted += o.accepted;
        self.resumed += o.resumed;
        self.refused += o.refused;
        self.closes += o.closes;
        self.server_disconnects += o.server_disconnects;
        for q in 0..3 {
            self.publishes[q] += o.publishes[q];
        }
        self.qos2_delivered += o.qos2_delivered;
        self.offers += o.offers;
        self.retained_offers += o.retained_offers;
        self.wills += o.wills;
    }
}

pub struct Harness {
    pub world: World,
    clients: Vec<Client>,
    /// Per world connection key.
    conns: Vec<ClientConn>,
    oracle: Oracle,
    next_tag: u64,
    next_sub_pid: u16,
    next_early_pid: u16,
    /// Which client each session belongs to.
    owners: HashMap<SessionId, usize>,
    pub stats: Stats,
}

impl Harness {
    pub fn new(case: &Case) -> Self {
        Self {
            // The one reading of the real clock: every later instant is this plus what the
            // steps advanced.
            world: World::new(case.broker.clone(), Instant::now()),
            clients: case.clients.iter().cloned().map(Client::new).collect(),
            conns: Vec::new(),
            oracle: Oracle::default(),
            next_tag: 0,
            next_sub_pid: SUBSCRIBE_PID,
            next_early_pid: EARLY_PID,
            owners: HashMap::new(),
            stats: Stats::default(),
        }
    }

    /// Runs every step, then lets the clients answer everything and checks that nothing is
    /// left stuck.
    pub fn run(case: &Case) -> Stats {
        let mut h = Self::new(case);
        for step in &case.steps {
            h.step(step);
        }
        h.drain();
        h.stats.steps = case.steps.len() as u64;
        std::mem::take(&mut h.stats)
    }

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    /// The client's newest connection still open.
    fn current(&self, c: usize) -> Option<usize> {
        self.clients[c]
            .conns
            .iter()
            .rev()
            .copied()
            .find(|&k| self.world.conns[k].open)
    }

    pub fn step(&mut self, step: &Step) {
        let n = self.clients.len();
        match *step {
            Step::Connect {
                client,
                clean,
                expiry,
                keep_alive,
                will,
                split,
            } => self.connect(
                usize::from(client) % n,
                clean,
                expiry,
                keep_alive,
                will,
                split,
            ),
            Step::Raw { client, first } => self.raw(usize::from(client) % n, first),
            Step::Send {
                client,
                ref packets,
                split,
            } => {
                let c = usize::from(client) % n;
                if let Some(key) = self.current(c) {
                    let mut bytes = Vec::new();
                    for p in packets {
                        bytes.extend(self.build(c, key, p));
                    }
                    self.send(key, bytes, split);
                }
            }
            Step::Rest { client } => {
                let c = usize::from(client) % n;
                if let Some(key) = self.current(c) {
                    self.send(key, Vec::new(), None);
                }
            }
            Step::AckAll { client } => {
                let c = usize::from(client) % n;
                if let Some(key) = self.current(c) {
                    let bytes = self.answers(c, key, false);
                    self.send(key, bytes, None);
                }
            }
            Step::Close { client, io } => {
                if let Some(key) = self.current(usize::from(client) % n) {
                    self.world.socket_gone(key, io);
                }
            }
            Step::Advance { ms } => {
                self.world.now += Duration::from_millis(ms);
                self.world.sweep();
            }
        }
        self.world.flush();
        self.apply();
        self.check();
    }

    /// Sends `bytes` on `key` after what is left of a packet sent in part on it; keeps all
    /// but the first `split` bytes back when asked.
    fn send(&mut self, key: usize, mut bytes: Vec<u8>, split: Option<u8>) {
        let cc = &mut self.conns[key];
        bytes.splice(0..0, std::mem::take(&mut cc.unsent));
        if let Some(n) = split.map(usize::from)
            && n < bytes.len()
        {
            cc.unsent = bytes.split_off(n);
        }
        self.world.receive(key, &bytes);
    }

    fn open(&mut self, c: usize, version: ProtocolVersion) -> usize {
        let key = self.world.accept();
        assert_eq!(key, self.conns.len());
        self.conns.push(ClientConn::new(c, version));
        self.clients[c].conns.push(key);
        key
    }

    fn connect_packet(&mut self, c: usize, clean: bool, expiry: u8, keep_alive: u8) -> Connect {
        let cfg = &self.clients[c].cfg;
        let mut connect = Connect::new(if cfg.anonymous { "" } else { cfg.id.as_str() });
        connect.protocol = cfg.version;
        connect.clean_start = clean;
        connect.keep_alive = KEEP_ALIVES[usize::from(keep_alive) % KEEP_ALIVES.len()];
        if cfg.version.is_v5() {
            if let Some(e) = EXPIRIES[usize::from(expiry) % EXPIRIES.len()] {
                connect.properties.push(Property::SessionExpiryInterval(e));
            }
            if let Some(r) = cfg.receive_maximum {
                connect.properties.push(Property::ReceiveMaximum(r));
            }
            if cfg.maximum_packet_size > 0 {
                connect
                    .properties
                    .push(Property::MaximumPacketSize(cfg.maximum_packet_size));
            }
            if cfg.topic_alias_maximum > 0 {
                connect
                    .properties
                    .push(Property::TopicAliasMaximum(cfg.topic_alias_maximum));
            }
        }
        connect
    }

    fn connect(
        &mut self,
        c: usize,
        clean: bool,
        expiry: u8,
        keep_alive: u8,
        will: Option<WillSpec>,
        split: Option<u8>,
    ) {
        let mut connect = self.connect_packet(c, clean, expiry, keep_alive);
        let version = connect.protocol;
        let mut will_tag = None;
        if let Some(w) = will {
            let tag = self.tag();
            let delay = if version.is_v5() {
                WILL_DELAYS[usize::from(w.delay) % WILL_DELAYS.len()]
            } else {
                0
            };
            let mut properties = Properties::new();
            if delay > 0 {
                properties.push(Property::WillDelayInterval(delay));
            }
            connect.will = Some(LastWill {
                topic: TopicName::new(TOPICS[usize::from(w.topic) % TOPICS.len()]).unwrap(),
                payload: Bytes::from(format!("will#{tag}")),
                qos: QoS::try_from(w.qos % 3).unwrap(),
                retain: w.retain,
                properties,
            });
            will_tag = Some((tag, delay));
        }
        let key = self.open(c, version);
        let bytes = self.first_connect(key, connect, will_tag);
        self.send(key, bytes, split);
    }

    /// The bytes of the CONNECT that opens `key`, noting what the oracle needs of it.
    fn first_connect(&mut self, key: usize, connect: Connect, will: Option<(u64, u32)>) -> Vec<u8> {
        // The Session Expiry Interval the spec gives it: 5.0 its property (0 when absent),
        // lowered to the broker's maximum; 3.1.1 0 for a clean session, else the broker's.
        let version = connect.protocol;
        let expiry = if version.is_v5() {
            connect
                .properties
                .find(|p| match p {
                    Property::SessionExpiryInterval(s) => Some(s),
                    _ => None,
                })
                .unwrap_or(0)
                .min(self.world.cfg.limits.max_session_expiry)
        } else if connect.clean_start {
            0
        } else {
            self.world.cfg.persistent_expiry
        };
        self.oracle
            .connecting(key, will, expiry, connect.clean_start);
        let bytes = encode(&Packet::Connect(Box::new(connect.clone())), version);
        let cc = &mut self.conns[key];
        cc.version = version;
        cc.connect = Some(connect);
        bytes
    }

    fn raw(&mut self, c: usize, first: RawFirst) {
        let key = self.open(c, ProtocolVersion::V311);
        let bytes: &[u8] = match first {
            RawFirst::Silent => &[],
            RawFirst::PublishFirst => &[0x30, 0x03, 0x00, 0x01, b'a'],
            RawFirst::PingFirst => &[0xC0, 0x00],
            RawFirst::Garbage => &[0x00, 0x00],
            // Level 7, then a valid 3.1.1 layout.
            RawFirst::UnsupportedLevel => &[
                0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x07, 0x02, 0x00, 0x3C, 0x00, 0x00,
            ],
            // Reserved flag bit 0 set [MQTT-3.1.2-3].
            RawFirst::ReservedConnectFlag => &[
                0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x03, 0x00, 0x3C, 0x00, 0x00,
            ],
            RawFirst::BadProtocolName => &[
                0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'X', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00,
            ],
        };
        self.world.receive(key, bytes);
    }

    // ---- what clients send ------------------------------------------------------------------

    /// The bytes of `p` from client `c` on `key`, recording what the client keeps of it.
    fn build(&mut self, c: usize, key: usize, p: &Pkt) -> Vec<u8> {
        let version = self.conns[key].version;
        let v5 = version.is_v5();
        let sid = self.conns[key].sid;
        match *p {
            Pkt::Publish {
                topic,
                qos,
                retain,
                payload,
                alias,
                expiry,
                bad,
                reuse_pid,
            } => {
                let tag = self.tag();
                let topic = TOPICS[usize::from(topic) % TOPICS.len()];
                let qos = QoS::try_from(qos % 3).unwrap();
                let body: Vec<u8> = match payload {
                    Payload::Tag => format!("#{tag}").into_bytes(),
                    Payload::NotUtf8 => [&[0xFF][..], format!("#{tag}").as_bytes()].concat(),
                    Payload::Empty => Vec::new(),
                    Payload::Large => format!("{}#{tag}", "x".repeat(100)).into_bytes(),
                };
                let early = self.early_pid();
                let state = self.clients[c].state(sid);
                let mut publish = Publish::new(TopicName::new(topic).unwrap(), body);
                publish.retain = retain;
                let reused = state
                    .own
                    .iter()
                    .find(|o| o.publish.qos.qos() == qos)
                    .map(|o| o.pid)
                    .filter(|_| reuse_pid);
                // Sent before the CONNECT is accepted (pipelined): kept nowhere, with an id of
                // its own, since no session state is known yet to keep it in.
                let packet_id = match sid {
                    None => early,
                    Some(_) => reused.unwrap_or_else(|| state.fresh_pid()),
                };
                publish.qos = QosPid::new(qos, packet_id);
                if v5 {
                    let props = &mut publish.properties;
                    match alias {
                        Alias::None => {}
                        Alias::Set(a) => props.push(Property::TopicAlias(a)),
                        Alias::Use(a) => props.push(Property::TopicAlias(a)),
                    }
                    if payload == Payload::NotUtf8 {
                        props.push(Property::PayloadFormatIndicator(1));
                    }
                    if let Some(e) = expiry {
                        let secs = MESSAGE_EXPIRIES[usize::from(e) % MESSAGE_EXPIRIES.len()];
                        props.push(Property::MessageExpiryInterval(secs));
                    }
                    match bad {
                        Some(BadProp::SubscriptionIdentifier) => {
                            props.push(Property::SubscriptionIdentifier(1))
                        }
                        Some(BadProp::WildcardResponseTopic) => {
                            props.push(Property::ResponseTopic("r/#".into()))
                        }
                        None => {}
                    }
                }
                let mut wire = publish.clone();
                if v5 && matches!(alias, Alias::Use(_)) {
                    wire.topic = TopicName::empty();
                }
                if qos != QoS::AtMostOnce && reused.is_none() && sid.is_some() {
                    // Kept to re-send, with its topic in full: aliases do not outlive the
                    // connection [MQTT-3.3.2-7].
                    publish.properties = publish.properties.without(|id| id == 0x23);
                    state.own.push(Own {
                        pid: packet_id,
                        publish,
                        stage: OwnStage::Sent,
                    });
                }
                encode(&Packet::Publish(wire), version)
            }
            Pkt::Republish { k } => {
                let state = self.clients[c].state(sid);
                let sent: Vec<&Own> = state
                    .own
                    .iter()
                    .filter(|o| o.stage == OwnStage::Sent)
                    .collect();
                if sent.is_empty() {
                    return Vec::new();
                }
                let mut again = sent[usize::from(k) % sent.len()].publish.clone();
                again.dup = true;
                encode(&Packet::Publish(again), version)
            }
            Pkt::PubRel { k } => {
                let state = self.clients[c].state(sid);
                let released: Vec<PacketId> = state
                    .own
                    .iter()
                    .filter(|o| o.stage == OwnStage::Released)
                    .map(|o| o.pid)
                    .collect();
                let id = if released.is_empty() {
                    pid(UNKNOWN_PID + u16::from(k))
                } else {
                    released[usize::from(k) % released.len()]
                };
                encode(&Packet::PubRel(Ack::new(id)), version)
            }
            Pkt::Ack { kind, k } => {
                let state = self.clients[c].state(sid);
                if state.deliveries.is_empty() {
                    let id = pid(UNKNOWN_PID + u16::from(k));
                    let packet = match kind {
                        AckKind::Right | AckKind::PubAck => Packet::PubAck(Ack::new(id)),
                        AckKind::PubRec | AckKind::PubRecFailed => Packet::PubRec(Ack::new(id)),
                        AckKind::PubComp => Packet::PubComp(Ack::new(id)),
                    };
                    return encode(&packet, version);
                }
                let d = state.deliveries[usize::from(k) % state.deliveries.len()];
                encode(&ack(state, d, kind, v5), version)
            }
            Pkt::Subscribe {
                ref filters,
                sub_id,
            } => {
                let packet_id = self.sub_pid();
                let mut sub = Subscribe {
                    packet_id: pid(packet_id),
                    properties: Properties::new(),
                    filters: Vec::new(),
                };
                for &(f, qos, no_local, rap, rh) in filters {
                    let mut options = SubscriptionOptions::qos(QoS::try_from(qos % 3).unwrap());
                    if v5 {
                        options.no_local = no_local;
                        options.retain_as_published = rap;
                        options.retain_handling = rh % 3;
                    }
                    let filter = FILTERS[usize::from(f) % FILTERS.len()];
                    sub.filters.push((filter.into(), options));
                }
                if v5 && let Some(id) = sub_id {
                    sub.properties
                        .push(Property::SubscriptionIdentifier(u32::from(id)));
                }
                self.conns[key]
                    .pending_subs
                    .push((packet_id, sub.filters.len()));
                encode(&Packet::Subscribe(sub), version)
            }
            Pkt::Unsubscribe { ref filters } => {
                let packet_id = self.sub_pid();
                let unsub = Unsubscribe {
                    packet_id: pid(packet_id),
                    properties: Properties::new(),
                    filters: filters
                        .iter()
                        .map(|&f| FILTERS[usize::from(f) % FILTERS.len()].into())
                        .collect(),
                };
                self.conns[key]
                    .pending_unsubs
                    .push((packet_id, unsub.filters.len()));
                encode(&Packet::Unsubscribe(unsub), version)
            }
            Pkt::Ping => {
                self.conns[key].pings += 1;
                vec![0xC0, 0x00]
            }
            Pkt::Disconnect { reason, expiry } => {
                let mut d = Disconnect::new(ReasonCode(reason));
                if let Some(e) = expiry {
                    let e = EXPIRIES[usize::from(e) % EXPIRIES.len()].unwrap_or(0);
                    d.properties.push(Property::SessionExpiryInterval(e));
                }
                encode(&Packet::Disconnect(d), version)
            }
            Pkt::Connect => {
                let connect = self.connect_packet(c, false, 0, 0);
                if self.conns[key].connect.is_none() {
                    // The first packet of a connection that sent nothing yet.
                    return self.first_connect(key, connect, None);
                }
                encode(&Packet::Connect(Box::new(connect)), version)
            }
            Pkt::Auth if v5 => encode(&Packet::Auth(Disconnect::new(ReasonCode(0x18))), version),
            Pkt::Auth => vec![0xF0, 0x00],
            Pkt::ServerOnly(n) => {
                let packet = match n % 3 {
                    0 => Packet::PingResp,
                    1 => Packet::ConnAck(ConnAck::new(false, ReasonCode::SUCCESS)),
                    _ => Packet::SubAck(SubAck::new(pid(1), vec![ReasonCode::SUCCESS])),
                };
                encode(&packet, version)
            }
            Pkt::Garbage(n) => GARBAGE[usize::from(n) % GARBAGE.len()].to_vec(),
        }
    }

    fn early_pid(&mut self) -> PacketId {
        self.next_early_pid = self.next_early_pid.wrapping_add(1).max(EARLY_PID);
        pid(self.next_early_pid)
    }

    fn sub_pid(&mut self) -> u16 {
        self.next_sub_pid = self.next_sub_pid.wrapping_add(1).max(SUBSCRIBE_PID);
        self.next_sub_pid
    }

    /// Everything client `c` owes on `key`: the ack each delivery's state calls for, PUBREL
    /// for its own PUBLISHes that got PUBREC, and (`resend`) its own not yet acknowledged.
    fn answers(&mut self, c: usize, key: usize, resend: bool) -> Vec<u8> {
        let version = self.conns[key].version;
        let sid = self.conns[key].sid;
        let state = self.clients[c].state(sid);
        let mut bytes = Vec::new();
        for d in state.deliveries.clone() {
            if !matches!(d.state, DState::Qos2Recd | DState::Qos2Done) {
                bytes.extend(encode(
                    &ack(state, d, AckKind::Right, version.is_v5()),
                    version,
                ));
            }
        }
        for id in std::mem::take(&mut state.stray_rels) {
            bytes.extend(encode(&Packet::PubComp(Ack::new(id)), version));
        }
        for o in &state.own {
            match o.stage {
                OwnStage::Released => {
                    bytes.extend(encode(&Packet::PubRel(Ack::new(o.pid)), version));
                }
                OwnStage::Sent if resend => {
                    let mut again = o.publish.clone();
                    again.dup = true;
                    bytes.extend(encode(&Packet::Publish(again), version));
                }
                OwnStage::Sent => {}
            }
        }
        bytes
    }

    /// The most QoS 1/2 deliveries client `c` may have unacknowledged: the broker's
    /// `max_inflight`, and the Receive Maximum a 5.0 client announced (65,535 when it
    /// announced none).
    fn window(&self, c: usize) -> usize {
        let cfg = &self.clients[c].cfg;
        let max = self.world.cfg.session.max_inflight;
        if cfg.version.is_v5() {
            max.min(usize::from(cfg.receive_maximum.unwrap_or(u16::MAX)))
        } else {
            max
        }
    }

    // ---- invariants -------------------------------------------------------------------------

    fn check(&self) {
        self.oracle.settle(self.world.now);
        let limits = &self.world.cfg.limits;
        for slot in self.world.sessions.iter().flatten() {
            let s = &slot.session;
            let Some(&c) = self.owners.get(&s.id) else {
                continue;
            };
            assert!(
                s.inflight_len() <= self.window(c),
                "session {:?} has {} in flight, window {}",
                s.id,
                s.inflight_len(),
                self.window(c)
            );
            assert!(
                s.incoming_qos2_len() <= usize::from(limits.receive_maximum),
                "session {:?} holds {} inbound QoS 2 ids, Receive Maximum {}",
                s.id,
                s.incoming_qos2_len(),
                limits.receive_maximum
            );
        }
    }

    /// Every client still connected answers what it owes (and re-sends its own PUBLISHes)
    /// until nothing moves; then nothing may be left in flight or queued for them: a window
    /// that never reopens or a message that never goes out would show here.
    fn drain(&mut self) {
        for _ in 0..10_000 {
            let mut sent = false;
            for c in 0..self.clients.len() {
                let Some(key) = self.current(c) else {
                    continue;
                };
                if !self.conns[key].accepted() {
                    continue;
                }
                let mut bytes = self.answers(c, key, true);
                let rest = !self.conns[key].unsent.is_empty();
                // Known and reported, not fixed here: the server's `refill` stops at an owed
                // retained message the session queue drops (larger than `max_queued_bytes`)
                // and nothing calls it again until the connection's next packet; a client
                // that keeps its keep alive going gets the rest then.
                if self.world.owed_on(key) > 0 {
                    self.conns[key].pings += 1;
                    bytes.extend([0xC0, 0x00]);
                }
                if !bytes.is_empty() || rest {
                    sent = true;
                    self.send(key, bytes, None);
                }
            }
            self.world.flush();
            self.apply();
            self.check();
            if !sent {
                break;
            }
        }
        for c in 0..self.clients.len() {
            let Some(key) = self.current(c) else {
                continue;
            };
            let Some(skey) = self.world.session_of(key) else {
                continue;
            };
            let session = &self.world.slot(skey).unwrap().session;
            assert_eq!(
                session.inflight_len(),
                0,
                "{:?}: stuck in flight",
                session.id
            );
            assert_eq!(
                session.queued_len(),
                0,
                "{:?}: stuck in the queue",
                session.id
            );
            let state = self.clients[c].state(self.conns[key].sid);
            assert!(
                state.deliveries.iter().all(|d| !d.state.counts()),
                "{c}: deliveries left: {:?}",
                state.deliveries
            );
            assert!(state.stray_rels.is_empty(), "{c}: PUBCOMPs owed");
            assert_eq!(
                self.world.owed_on(key),
                0,
                "{c}: retained messages still owed"
            );
            assert!(state.own.is_empty(), "{c}: own PUBLISHes never completed");
        }
    }
}

/// The ack `kind` for delivery `d`, and what the client's state becomes once it is sent.
fn ack(state: &mut SessionState, d: Delivery, kind: AckKind, v5: bool) -> Packet {
    let right = match d.state {
        DState::Qos1 => AckKind::PubAck,
        DState::Qos2 | DState::Qos2Recd | DState::Qos2Done => AckKind::PubRec,
        DState::Qos2Released => AckKind::PubComp,
    };
    let kind = match kind {
        AckKind::Right => right,
        // 3.1.1 has no reason codes: a plain PUBREC.
        AckKind::PubRecFailed if !v5 => AckKind::PubRec,
        k => k,
    };
    let a = Ack::new(d.pid);
    match (kind, d.state) {
        (AckKind::PubAck, DState::Qos1) | (AckKind::PubComp, DState::Qos2Released) => {
            state.forget_delivery(d.pid);
        }
        (AckKind::PubRec, DState::Qos2) => {
            if let Some(d) = state.delivery(d.pid) {
                d.state = DState::Qos2Recd;
            }
        }
        // PUBCOMP before PUBREL came (the broker takes it once it has the PUBREC), or a
        // failed PUBREC, which ends the delivery [MQTT-4.3.3-4].
        (AckKind::PubComp, DState::Qos2Recd) | (AckKind::PubRecFailed, DState::Qos2) => {
            if let Some(d) = state.delivery(d.pid) {
                d.state = DState::Qos2Done;
            }
        }
        // The wrong ack for the state: the broker closes or ignores it; the client's state
        // stays.
        _ => {}
    }
    match kind {
        AckKind::PubAck | AckKind::Right => Packet::PubAck(a),
        AckKind::PubRec => Packet::PubRec(a),
        AckKind::PubRecFailed => {
            let mut a = a;
            a.reason = ReasonCode(0x80);
            Packet::PubRec(a)
        }
        AckKind::PubComp => Packet::PubComp(a),
    }
}
