//! DISCONNECT from the client, and the DISCONNECT the broker sends before it closes
//! (spec 3.14).

use vireo_codec::{Disconnect, Property, ReasonCode};

use super::Violation;

/// What a client's DISCONNECT decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// Reason 0x04 Disconnect with Will Message: publish the Will anyway; otherwise it is
    /// discarded [MQTT-3.14.4-3].
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
        publish_will: d.reason == ReasonCode::DISCONNECT_WITH_WILL,
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
}
