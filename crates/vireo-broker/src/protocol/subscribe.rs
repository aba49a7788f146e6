//! SUBSCRIBE and UNSUBSCRIBE: what each filter is granted, or why not (spec 3.8 - 3.11).

use vireo_codec::{
    ProtocolVersion, ReasonCode, SubscriptionOptions, has_wildcard, parse_shared,
    validate_topic_filter,
};

use super::{Limits, Violation};
use crate::{Recipient, Subscribed};

/// A filter as the broker subscribes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter<'a> {
    /// An ordinary filter.
    Plain(&'a str),
    /// `$share/{group}/{filter}`: the whole string, and the filter the group shares.
    Shared {
        /// `$share/{group}/{filter}`, the key of the membership.
        share: &'a str,
        /// What topics it matches.
        filter: &'a str,
    },
}

impl<'a> Filter<'a> {
    /// The filter that says which topics it matches (a shared one's inner filter).
    pub fn matching(&self) -> &'a str {
        match *self {
            Filter::Plain(f) => f,
            Filter::Shared { filter, .. } => filter,
        }
    }
}

/// What one filter of a SUBSCRIBE is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant<'a> {
    /// Where it goes in the index.
    pub filter: Filter<'a>,
    /// QoS, options and identifier as the index and the session keep them.
    pub subscribed: Subscribed,
    /// v5 Retain Handling: 0 send retained messages, 1 only for a new subscription, 2 never
    /// [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11]. 3.1.1: 0.
    pub retain_handling: u8,
}

impl Grant<'_> {
    /// The SUBACK code: the granted QoS [MQTT-3.8.4-7].
    pub fn code(&self) -> ReasonCode {
        ReasonCode::granted(self.subscribed.qos)
    }

    /// Whether retained messages are sent for it now, given whether the session already had
    /// this subscription. Never for a shared subscription (spec 4.8.2).
    pub fn sends_retained(&self, existed: bool) -> bool {
        !matches!(self.filter, Filter::Shared { .. })
            && match self.retain_handling {
                0 => true,
                1 => !existed,
                _ => false,
            }
    }

    /// For a 3.1 / 3.1.1 client that said it is a bridge (the protocol level's top bit):
    /// what a 5.0 bridge asks for itself. No Local, so what it publishes does not go back
    /// to it round a rule that forwards both ways, and Retain As Published, so a retained
    /// message stays retained on the far side, as Mosquitto does for its bridges. Not for a
    /// shared subscription, where No Local has no meaning [MQTT-3.8.3-4].
    pub fn as_bridge(&mut self) {
        if matches!(self.filter, Filter::Plain(_)) {
            self.subscribed.flags |= Recipient::NO_LOCAL | Recipient::RETAIN_AS_PUBLISHED;
        }
    }
}

/// Why a filter is not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This filter's SUBACK code; the others are still served [MQTT-3.8.4-5].
    Code(ReasonCode),
    /// The whole SUBSCRIBE is a protocol violation: close.
    Close(Violation),
}

/// Decides one filter. `sub_id` is the SUBSCRIBE's Subscription Identifier (0: none);
/// `room` whether the session may hold one more subscription (or already holds this one).
pub fn grant<'a>(
    filter: &'a str,
    options: &SubscriptionOptions,
    sub_id: u32,
    version: ProtocolVersion,
    limits: &Limits,
    room: bool,
) -> Result<Grant<'a>, Refusal> {
    let v5 = version.is_v5();
    let code = |v5_code: ReasonCode| {
        Refusal::Code(if v5 {
            v5_code
        } else {
            ReasonCode::V3_SUBSCRIBE_FAILURE
        })
    };
    let invalid = code(ReasonCode::TOPIC_FILTER_INVALID);
    let shared = match parse_shared(filter) {
        Ok(shared) => shared,
        Err(_) => return Err(invalid),
    };
    let inner = shared.map_or(filter, |(_, inner)| inner);
    if validate_topic_filter(inner).is_err()
        || filter.len() > limits.max_topic_length
        || inner.split('/').count() > limits.max_topic_levels
    {
        return Err(invalid);
    }
    if shared.is_some() {
        if !limits.shared_available {
            return Err(code(ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED));
        }
        // [MQTT-3.8.3-4] No Local on a shared subscription is a protocol error.
        if options.no_local {
            return Err(Refusal::Close(Violation::PROTOCOL));
        }
    }
    if !limits.wildcard_available && has_wildcard(inner) {
        return Err(code(ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED));
    }
    if !room {
        return Err(code(ReasonCode::QUOTA_EXCEEDED));
    }
    let mut flags = 0;
    if v5 && options.no_local {
        flags |= Recipient::NO_LOCAL;
    }
    if v5 && options.retain_as_published {
        flags |= Recipient::RETAIN_AS_PUBLISHED;
    }
    Ok(Grant {
        filter: match shared {
            Some((_, inner)) => Filter::Shared {
                share: filter,
                filter: inner,
            },
            None => Filter::Plain(filter),
        },
        subscribed: Subscribed {
            // Granted at most the broker's maximum, never refused for asking more
            // [MQTT-3.2.2-10].
            qos: options.qos.min(limits.maximum_qos),
            flags,
            sub_id,
        },
        retain_handling: if v5 { options.retain_handling } else { 0 },
    })
}

/// The UNSUBACK code for one filter: 5.0 says whether it existed [MQTT-3.11.3-1]; 3.1.1
/// UNSUBACK has no codes.
pub fn unsubscribe_code(existed: bool) -> ReasonCode {
    if existed {
        ReasonCode::SUCCESS
    } else {
        ReasonCode::NO_SUBSCRIPTION_EXISTED
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vireo_codec::QoS;

    const V5: ProtocolVersion = ProtocolVersion::V5;

    #[test]
    fn a_311_bridge_gets_no_local_and_retain_as_published() {
        let l = Limits::default();
        let v3 = ProtocolVersion::V311;
        let mut g = grant("a/#", &opts(QoS::AtLeastOnce), 0, v3, &l, true).unwrap();
        assert_eq!(
            g.subscribed.flags, 0,
            "an ordinary 3.1.1 client gets neither"
        );
        g.as_bridge();
        assert_eq!(
            g.subscribed.flags,
            Recipient::NO_LOCAL | Recipient::RETAIN_AS_PUBLISHED
        );
        let mut shared = grant("$share/g/a", &opts(QoS::AtLeastOnce), 0, v3, &l, true).unwrap();
        shared.as_bridge();
        assert_eq!(shared.subscribed.flags, 0);
    }

    fn opts(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions::qos(qos)
    }

    /// v5 [MQTT-3.9.3-2] codes from the table: 0x8F invalid filter (shared ones too
    /// [MQTT-4.8.2-1] [MQTT-4.8.2-2]), 0x97 quota, 0x9E / 0xA2 when switched off; 3.1.1 0x80.
    #[test]
    fn v5_mqtt_3_9_3_2_refusal_codes() {
        let l = Limits::default();
        let g = |f: &'static str| grant(f, &opts(QoS::AtMostOnce), 0, V5, &l, true);
        assert_eq!(g("a/#/b"), Err(Refusal::Code(ReasonCode(0x8F))));
        for bad in ["$share//t", "$share/g+/t", "$share/g", "$share/g/"] {
            assert_eq!(g(bad), Err(Refusal::Code(ReasonCode(0x8F))), "{bad}");
        }
        let shared = g("$share/g/a/+").unwrap();
        assert_eq!(
            shared.filter,
            Filter::Shared {
                share: "$share/g/a/+",
                filter: "a/+"
            }
        );
        assert!(!shared.sends_retained(false));
        let full = grant("t", &opts(QoS::AtMostOnce), 0, V5, &l, false);
        assert_eq!(full, Err(Refusal::Code(ReasonCode(0x97))));
        let off = Limits {
            shared_available: false,
            wildcard_available: false,
            ..l
        };
        let g = |f: &'static str| grant(f, &opts(QoS::AtMostOnce), 0, V5, &off, true);
        assert_eq!(g("$share/g/t"), Err(Refusal::Code(ReasonCode(0x9E))));
        assert_eq!(g("a/+"), Err(Refusal::Code(ReasonCode(0xA2))));
        let v3 = grant(
            "a/#/b",
            &opts(QoS::AtMostOnce),
            0,
            ProtocolVersion::V311,
            &l,
            true,
        );
        assert_eq!(v3, Err(Refusal::Code(ReasonCode(0x80))));
    }

    /// v5 [MQTT-3.8.3-4] No Local on a shared subscription closes; options and identifier
    /// are kept; retain handling decides retained delivery [MQTT-3.3.1-10].
    #[test]
    fn v5_mqtt_3_8_3_4_options() {
        let l = Limits {
            maximum_qos: QoS::AtLeastOnce,
            ..Limits::default()
        };
        let mut o = opts(QoS::ExactlyOnce);
        o.no_local = true;
        assert_eq!(
            grant("$share/g/t", &o, 0, V5, &l, true),
            Err(Refusal::Close(Violation::PROTOCOL))
        );
        o.retain_as_published = true;
        o.retain_handling = 1;
        let g = grant("t", &o, 7, V5, &l, true).unwrap();
        assert_eq!(
            g.code(),
            ReasonCode(0x01),
            "[MQTT-3.2.2-10] granted at most the maximum"
        );
        assert_eq!(
            g.subscribed.flags,
            Recipient::NO_LOCAL | Recipient::RETAIN_AS_PUBLISHED
        );
        assert_eq!(g.subscribed.sub_id, 7);
        assert!(g.sends_retained(false) && !g.sends_retained(true));
    }
}
