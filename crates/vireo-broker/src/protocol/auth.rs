//! MQTT 5.0 enhanced authentication (spec 4.12): the hook.
//!
//! No authentication method is configured yet, so every CONNECT that names one is refused with
//! 0x8C Bad authentication method and closed [MQTT-4.12.0-1], and an AUTH packet (which can
//! only follow such a CONNECT) is a protocol error. A method (SCRAM, say) plugs in here: it
//! answers CONNECT's Authentication Data with [`AuthStep::Continue`] (AUTH 0x18
//! [MQTT-4.12.0-2]) until it can say [`AuthStep::Success`] (CONNACK 0x00 carrying the same
//! method [MQTT-4.12.0-5]) or [`AuthStep::Failure`].

use vireo_codec::{Connect, Property, ProtocolVersion, ReasonCode};

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

/// Who may connect with a user name and password (CONNECT's credentials, spec 3.1.3.5 and
/// 3.1.3.6), as Mosquitto decides it: with a password file, a CONNECT that names a user must
/// give that user's password; one that names none is anonymous, let in only when anonymous
/// clients are allowed. Without a password file, any user name is taken as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// A password file is configured.
    pub passwords: bool,
    /// A CONNECT without a user name is accepted.
    pub allow_anonymous: bool,
}

/// What [`PasswordPolicy::check`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordStep {
    /// Accept without checking a hash.
    Accept,
    /// Check the user name and password against the password file, then [`verdict`].
    Verify,
    /// Refuse with this CONNACK code.
    Refuse(ReasonCode),
}

impl PasswordPolicy {
    /// The first step for a CONNECT that passed [`super::connect::check`].
    pub fn check(&self, connect: &Connect) -> PasswordStep {
        match (&connect.username, self.passwords) {
            (Some(_), true) => PasswordStep::Verify,
            (Some(_), false) => PasswordStep::Accept,
            (None, _) if self.allow_anonymous => PasswordStep::Accept,
            // 3.1.1: 0x05 Not authorized; 5.0: 0x87 (Mosquitto answers the same).
            (None, _) => PasswordStep::Refuse(not_authorized(connect.protocol)),
        }
    }
}

/// The outcome of a password check: a wrong password or an unknown user is 0x04 Bad user
/// name or password (5.0: 0x86), never telling which of the two it was.
pub fn verdict(version: ProtocolVersion, ok: bool) -> Result<(), ReasonCode> {
    match (ok, version) {
        (true, _) => Ok(()),
        (false, ProtocolVersion::V5) => Err(ReasonCode::BAD_USERNAME_OR_PASSWORD),
        (false, _) => Err(ReasonCode::V3_BAD_USERNAME_OR_PASSWORD),
    }
}

/// 0x05 Not authorized (5.0: 0x87), in the client's version.
pub fn not_authorized(version: ProtocolVersion) -> ReasonCode {
    match version {
        ProtocolVersion::V5 => ReasonCode::NOT_AUTHORIZED,
        _ => ReasonCode::V3_NOT_AUTHORIZED,
    }
}

/// 0x03 Server unavailable (5.0: 0x89 Server busy): the password checks are backed up.
pub fn busy(version: ProtocolVersion) -> ReasonCode {
    match version {
        ProtocolVersion::V5 => ReasonCode::SERVER_BUSY,
        _ => ReasonCode::V3_SERVER_UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vireo_codec::ByteString;

    fn connect(version: ProtocolVersion, user: Option<&str>) -> Connect {
        let mut c = Connect::new("c");
        c.protocol = version;
        c.username = user.map(ByteString::from);
        c
    }

    #[test]
    fn password_file_makes_named_users_prove_themselves() {
        let policy = PasswordPolicy {
            passwords: true,
            allow_anonymous: true,
        };
        let named = connect(ProtocolVersion::V311, Some("u"));
        assert_eq!(policy.check(&named), PasswordStep::Verify);
        let anonymous = connect(ProtocolVersion::V311, None);
        assert_eq!(policy.check(&anonymous), PasswordStep::Accept);
    }

    #[test]
    fn anonymous_refused_when_not_allowed() {
        let policy = PasswordPolicy {
            passwords: true,
            allow_anonymous: false,
        };
        let v3 = connect(ProtocolVersion::V311, None);
        assert_eq!(policy.check(&v3), PasswordStep::Refuse(ReasonCode(0x05)));
        let v5 = connect(ProtocolVersion::V5, None);
        assert_eq!(policy.check(&v5), PasswordStep::Refuse(ReasonCode(0x87)));
    }

    #[test]
    fn without_a_password_file_names_are_taken_as_given() {
        let policy = PasswordPolicy {
            passwords: false,
            allow_anonymous: false,
        };
        let named = connect(ProtocolVersion::V5, Some("u"));
        assert_eq!(policy.check(&named), PasswordStep::Accept);
    }

    #[test]
    fn wrong_credentials_codes_per_version() {
        assert_eq!(verdict(ProtocolVersion::V5, true), Ok(()));
        assert_eq!(verdict(ProtocolVersion::V311, false), Err(ReasonCode(0x04)));
        assert_eq!(verdict(ProtocolVersion::V31, false), Err(ReasonCode(0x04)));
        assert_eq!(verdict(ProtocolVersion::V5, false), Err(ReasonCode(0x86)));
    }
}
