//! DISCONNECT from the client, and the DISCONNECT the broker sends before it closes
//! (spec 3.14).

use vireo_codec::{Disconnect, Property, ReasonCode};

use super::Violation;

/// What a client's DISCONNECT decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// Publish the Will anyway: any reason but 0x00 (Normal disconnection), which alone
    /// discards it [MQTT-3.1.2-10] [MQTT-3.14.4-3]. 0x04 Disconnect with Will Message asks for
    /// it; an error reason (0x80 and up) is a close "without first sending a DISCONNECT packet
    /// with a Reason Code 0x00", which publishes it (5.0 §3.1.2.5).
    pub publish_will: bool,
    /// A new Session Expiry Interval, if the DISCONNECT sets one.
    pub session_expiry: Option<u32>,
}

/// Reads a client's DISCONNECT. Setting a non-zero Session Expiry Interval when CONNECT's was
/// 0 is a protocol error (spec 3.14.2.2.2): the Will is then published, as for any close
/// without a valid DISCONNECT.
pub fn on_disconnect(d: &Disconnect, connect_expiry: u32) -> Result<Ending, Violation> {
    let session_expiry = d.properties.find(|p| match p {
        Property::SessionExpiryInterval(s) => Some(s),
        _ => None,
    });
    if connect_expiry == 0 && session_expiry.is_some_and(|s| s != 0) {
        return Err(Violation::PROTOCOL);
    }
    Ok(Ending {
        publish_will: d.reason != ReasonCode::SUCCESS,
        session_expiry,
    })
}

/// The DISCONNECT the broker sends to a 5.0 client before closing for `reason`. Never with a
/// Session Expiry Interval [MQTT-3.14.2-2], nor reason strings.
pub fn server_disconnect(reason: Violation) -> Disconnect {
    Disconnect::new(reason.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn v5_mqtt_3_14_4_3_disconnect_reason_and_expiry() {
        let plain = Disconnect::new(ReasonCode::SUCCESS);
        assert_eq!(
            on_disconnect(&plain, 0),
            Ok(Ending {
                publish_will: false,
                session_expiry: None
            })
        );
        let with_will = Disconnect::new(ReasonCode::DISCONNECT_WITH_WILL);
        assert!(on_disconnect(&with_will, 0).unwrap().publish_will);
        let mut longer = Disconnect::new(ReasonCode::SUCCESS);
        longer.properties.push(Property::SessionExpiryInterval(60));
        assert_eq!(on_disconnect(&longer, 0), Err(Violation::PROTOCOL));
        assert_eq!(on_disconnect(&longer, 5).unwrap().session_expiry, Some(60));
        assert!(server_disconnect(Violation::PROTOCOL).properties.is_empty());
    }

    /// v5 [MQTT-3.1.2-10]: only DISCONNECT 0x00 discards the Will; one with an error reason
    /// publishes it like any other abnormal close (found by `tests/sequences.rs`: 0x80 used
    /// to discard it).
    #[test]
    fn v5_mqtt_3_1_2_10_only_normal_disconnection_discards_the_will() {
        for (reason, publish) in [(0x00, false), (0x04, true), (0x80, true), (0x83, true)] {
            let d = Disconnect::new(ReasonCode(reason));
            assert_eq!(
                on_disconnect(&d, 0).unwrap().publish_will,
                publish,
                "reason {reason:#04x}"
            );
        }
    }
}
