//! What the spec says should have happened, kept apart from the broker model: the
//! subscriptions each session was granted (from the SUBACK decisions, not the index), what was
//! offered to each session, and when each Will is due. Each check panics with what broke.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use vireo_broker::{Message, SessionId};
use vireo_codec::{Disconnect, Property, QoS, SubscriptionOptions, parse_shared, topic_matches};

/// The tag a test payload carries: `#` and a number at its end. Empty payloads (retained
/// deletes) have none.
pub fn tag_of(payload: &[u8]) -> Option<u64> {
    let at = payload.iter().rposition(|&b| b == b'#')?;
    std::str::from_utf8(&payload[at + 1..]).ok()?.parse().ok()
}

#[derive(Debug, Default, Clone, Copy)]
struct Offers {
    any: u32,
    qos2: u32,
    max_qos: Option<QoS>,
    /// The message's expiry (the same for every copy of a tag).
    expires: Option<Instant>,
}

/// A connection's CONNECT as far as its Will goes.
#[derive(Debug, Clone)]
pub struct ConnWill {
    /// The client id it was accepted under (`None`: not accepted).
    client_id: Option<String>,
    /// Tag and Will Delay Interval.
    will: Option<(u64, u32)>,
    /// The Session Expiry Interval in force, in seconds.
    expiry: u32,
    /// The DISCONNECT the client ended with, if it did.
    disconnect: Option<Disconnect>,
    clean_start: bool,
}

/// Whether a session is stored under a client id, as the spec has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// Served by connection `key`.
    Online(usize),
    /// Kept after its connection closed, until this instant (`None`: forever).
    Offline(Option<Instant>),
}

#[derive(Debug)]
struct WillTrack {
    tag: u64,
    client_id: String,
    /// When it must be out by: the Will Delay or the session's end, whichever is first
    /// (`None`: never, by time).
    due: Option<Instant>,
    published: bool,
    cancelled: bool,
    /// Published before `due`: only right if its session ended there and then.
    early: bool,
}

#[derive(Debug, Default)]
pub struct Oracle {
    /// Per session: the filters granted (filter, options, granted QoS).
    shadow: HashMap<SessionId, Vec<(String, SubscriptionOptions, QoS)>>,
    offers: HashMap<(SessionId, u64), Offers>,
    app_qos2: HashMap<(SessionId, u64), u32>,
    routed_qos2: HashMap<u64, u32>,
    conns: HashMap<usize, ConnWill>,
    wills: Vec<WillTrack>,
    sessions: HashMap<String, Stored>,
}

impl Oracle {
    // ---- subscriptions and deliveries -----------------------------------------------------

    pub fn subscribed(
        &mut self,
        sid: SessionId,
        filter: &str,
        options: SubscriptionOptions,
        granted: Option<QoS>,
    ) {
        let Some(qos) = granted else {
            return;
        };
        let subs = self.shadow.entry(sid).or_default();
        subs.retain(|(f, _, _)| f != filter);
        subs.push((filter.to_owned(), options, qos));
    }

    pub fn unsubscribed(&mut self, sid: SessionId, filter: &str) {
        if let Some(subs) = self.shadow.get_mut(&sid) {
            subs.retain(|(f, _, _)| f != filter);
        }
    }

    /// A message handed to session `sid` at `qos`: the session must hold a matching
    /// subscription granting at least that QoS, No Local must not exclude it (live
    /// deliveries), and `qos` is at most what it was published with (5.0 [MQTT-3.8.4-8]).
    pub fn offered(&mut self, sid: SessionId, msg: &Message, qos: QoS, retained: bool) {
        let (topic, payload, published, origin) =
            (msg.topic.as_str(), &msg.payload[..], msg.qos, msg.origin);
        assert!(
            qos <= published,
            "offered at {qos:?}, published at {published:?}"
        );
        let subs = self.shadow.get(&sid).map_or(&[][..], Vec::as_slice);
        let matching = || {
            subs.iter().filter(|(filter, _, _)| {
                let inner = match parse_shared(filter) {
                    Ok(Some((_, inner))) => inner,
                    _ => filter,
                };
                topic_matches(inner, topic)
            })
        };
        let wanted =
            |options: &SubscriptionOptions| retained || !(options.no_local && origin == sid);
        let ok = matching().any(|(_, options, granted)| qos <= *granted && wanted(options));
        assert!(
            ok,
            "{topic} offered to {sid:?} at {qos:?}, which holds no subscription for it: {subs:?}"
        );
        if let Some(tag) = tag_of(payload) {
            let o = self.offers.entry((sid, tag)).or_default();
            o.any += 1;
            o.qos2 += u32::from(qos == QoS::ExactlyOnce);
            o.max_qos = o.max_qos.max(Some(qos));
            o.expires = msg.expires;
        }
    }

    /// A PUBLISH reached the client serving `sid` at `now`: it was offered to that session, at
    /// least at the QoS it arrived with, and a first send is not past the message's expiry
    /// (5.0 [MQTT-3.3.2-5]; a re-send may be, once onward delivery has begun).
    pub fn received(&self, sid: SessionId, payload: &[u8], qos: QoS, dup: bool, now: Instant) {
        let Some(tag) = tag_of(payload) else {
            return;
        };
        let o = self.offers.get(&(sid, tag)).copied().unwrap_or_default();
        assert!(
            o.any > 0,
            "message #{tag} reached {sid:?}, which it was never routed to"
        );
        assert!(
            o.max_qos >= Some(qos),
            "message #{tag} reached {sid:?} at {qos:?}, offered at {:?}",
            o.max_qos
        );
        assert!(
            dup || o.expires.is_none_or(|at| now < at),
            "message #{tag} sent to {sid:?} after it expired"
        );
    }

    /// A QoS 2 message handed to the application of the client serving `sid`: at most once
    /// per time it was offered to that session.
    pub fn delivered_qos2(&mut self, sid: SessionId, payload: &[u8]) {
        let Some(tag) = tag_of(payload) else {
            return;
        };
        let n = self.app_qos2.entry((sid, tag)).or_default();
        *n += 1;
        let offered = self.offers.get(&(sid, tag)).map_or(0, |o| o.qos2);
        assert!(
            *n <= offered,
            "QoS 2 message #{tag} delivered {n} times to {sid:?}, offered {offered} times"
        );
    }

    /// An inbound QoS 2 PUBLISH routed: a repeat of the same packet before PUBREL is not
    /// routed again (3.1.1 [MQTT-4.3.3-2], 5.0 [MQTT-4.3.3-10]). (Clients re-send a tag only with its packet id, DUP,
    /// before they see PUBREC.)
    pub fn routed(&mut self, payload: &[u8], qos: QoS) {
        if qos != QoS::ExactlyOnce {
            return;
        }
        let Some(tag) = tag_of(payload) else {
            return;
        };
        let n = self.routed_qos2.entry(tag).or_default();
        *n += 1;
        assert!(*n <= 1, "QoS 2 message #{tag} routed {n} times");
    }

    // ---- wills ------------------------------------------------------------------------------

    /// The CONNECT sent as the first packet of connection `key`: `will` its tag and Will
    /// Delay, `expiry` the Session Expiry Interval it gets (capped as the spec lets the
    /// broker cap it).
    pub fn connecting(
        &mut self,
        key: usize,
        will: Option<(u64, u32)>,
        expiry: u32,
        clean_start: bool,
    ) {
        self.conns.insert(
            key,
            ConnWill {
                client_id: None,
                will,
                expiry,
                disconnect: None,
                clean_start,
            },
        );
    }

    /// CONNACK 0x00 for `client_id` on `key`, with Session Present `present`: 1 exactly when
    /// Clean Start is 0 and a session is stored, not expired (5.0 [MQTT-3.2.2-2]
    /// [MQTT-3.2.2-3], 3.1.1 [MQTT-3.2.2-1] to [MQTT-3.2.2-3]). A pending Will of that id is
    /// cancelled by a resumed session [MQTT-3.1.3-9]; a new session means the old one ended,
    /// so its Will must already be out [MQTT-3.1.2-8].
    pub fn accepted(&mut self, key: usize, client_id: &str, present: bool, now: Instant) {
        let clean_start = self.conns.get(&key).is_some_and(|c| c.clean_start);
        let stored = match self.sessions.get(client_id) {
            None => false,
            Some(Stored::Online(_)) => true,
            Some(Stored::Offline(until)) => until.is_none_or(|at| now < at),
        };
        assert_eq!(
            present,
            stored && !clean_start,
            "{client_id}: Session Present {present} with Clean Start {clean_start}, a session \
             stored: {stored}"
        );
        self.sessions
            .insert(client_id.to_owned(), Stored::Online(key));
        for w in self.wills.iter_mut().filter(|w| w.client_id == client_id) {
            if w.published {
                w.early = false;
            } else if !w.cancelled {
                assert!(
                    present,
                    "{client_id}: a new session replaced the old one, whose Will #{} is not out",
                    w.tag
                );
                w.cancelled = true;
            }
        }
        if let Some(c) = self.conns.get_mut(&key) {
            c.client_id = Some(client_id.to_owned());
        }
    }

    pub fn disconnect(&mut self, key: usize, d: &Disconnect) {
        if let Some(c) = self.conns.get_mut(&key) {
            c.disconnect = Some(d.clone());
        }
    }

    /// The broker closed `key` at `now`. Only a valid DISCONNECT with reason 0x00 keeps the
    /// Will back [MQTT-3.1.2-10] [MQTT-3.14.4-3]: any other end publishes it (5.0 §3.1.2.5:
    /// "the Client closes the Network Connection without first sending a DISCONNECT packet
    /// with a Reason Code 0x00"), once its delay or the session is over [MQTT-3.1.2-8].
    pub fn closing(&mut self, key: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        let Some(client_id) = c.client_id.clone() else {
            return;
        };
        let mut normal = false;
        if let Some(d) = &c.disconnect {
            let expiry = d.properties.find(|p| match p {
                Property::SessionExpiryInterval(s) => Some(s),
                _ => None,
            });
            // Spec 3.14.2.2.2: 0 cannot become non-zero; that DISCONNECT is a protocol error.
            let valid = !(c.expiry == 0 && expiry.is_some_and(|e| e != 0));
            if valid {
                c.expiry = expiry.unwrap_or(c.expiry);
                normal = d.reason.0 == 0x00;
            }
        }
        if self.sessions.get(&client_id) == Some(&Stored::Online(key)) {
            // The interval counts from the close [MQTT-3.1.2-23]; 0 ends the session now.
            let stored = match c.expiry {
                0 => None,
                u32::MAX => Some(Stored::Offline(None)),
                secs => Some(Stored::Offline(
                    now.checked_add(Duration::from_secs(u64::from(secs))),
                )),
            };
            match stored {
                Some(s) => self.sessions.insert(client_id.clone(), s),
                None => self.sessions.remove(&client_id),
            };
        }
        let Some((tag, delay)) = c.will.take() else {
            return;
        };
        if normal {
            return;
        }
        let wait = if delay == 0 || c.expiry == 0 {
            Some(Duration::ZERO)
        } else {
            Some(Duration::from_secs(u64::from(delay.min(c.expiry))))
        };
        self.wills.push(WillTrack {
            tag,
            client_id,
            due: wait.and_then(|w| now.checked_add(w)),
            published: false,
            cancelled: false,
            early: false,
        });
    }

    pub fn will_published(&mut self, payload: &[u8], now: Instant) {
        let tag = tag_of(payload);
        let w = self.wills.iter_mut().find(|w| Some(w.tag) == tag);
        let Some(w) = w else {
            panic!("Will #{tag:?} published, but no close called for it");
        };
        assert!(!w.published, "Will #{} published twice", w.tag);
        assert!(
            !w.cancelled,
            "Will #{} published after its session resumed",
            w.tag
        );
        w.published = true;
        w.early = w.due.is_none_or(|due| now < due);
    }

    /// After a step, at `now`: every Will due is out, and none went out early without its
    /// session ending.
    pub fn settle(&self, now: Instant) {
        for w in &self.wills {
            assert!(
                w.published || w.cancelled || w.due.is_none_or(|due| now < due),
                "Will #{} of {} due and not published",
                w.tag,
                w.client_id
            );
            assert!(
                !w.early,
                "Will #{} of {} published before its delay, its session still there",
                w.tag, w.client_id
            );
        }
    }
}
