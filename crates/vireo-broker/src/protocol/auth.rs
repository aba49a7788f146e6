//! MQTT 5.0 enhanced authentication (spec 4.12): the hook.
//!
//! No authentication method is configured yet, so every CONNECT that names one is refused with
//! 0x8C Bad authentication method and closed [MQTT-4.12.0-1], and an AUTH packet (which can
//! only follow such a CONNECT) is a protocol error. A method (SCRAM, say) plugs in here: it
//! answers CONNECT's Authentication Data with [`AuthStep::Continue`] (AUTH 0x18
//! [MQTT-4.12.0-2]) until it can say [`AuthStep::Success`] (CONNACK 0x00 carrying the same
//! method [MQTT-4.12.0-5]) or [`AuthStep::Failure`].

use vireo_codec::{Connect, Property, ReasonCode};

use super::Violation;

/// One step of an enhanced authentication exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// Send AUTH 0x18 with this Authentication Data and wait for the client's answer.
    Continue(Vec<u8>),
    /// Authenticated: CONNACK 0x00 (or AUTH 0x00 for a re-authentication).
    Success,
    /// Refused with this reason code (CONNACK, or DISCONNECT for a re-authentication).
    Failure(ReasonCode),
}

/// The Authentication Method a CONNECT names, if any.
pub fn method(connect: &Connect) -> Option<vireo_codec::ByteString> {
    connect.properties.find(|p| match p {
        Property::AuthenticationMethod(m) => Some(m),
        _ => None,
    })
}

/// CONNECT: a named method must be one the broker has; none is configured, so any is refused.
pub fn check_connect(connect: &Connect) -> Result<(), ReasonCode> {
    match method(connect) {
        None => Ok(()),
        Some(_) => Err(ReasonCode::BAD_AUTHENTICATION_METHOD),
    }
}

/// An AUTH packet on a connection that did not start enhanced authentication: a protocol
/// error (spec 4.12: AUTH needs the method of the CONNECT) [MQTT-4.12.0-6 for the server side].
pub fn on_auth_without_method() -> Violation {
    Violation::PROTOCOL
}
