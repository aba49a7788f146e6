//! PUBACK, PUBREC, PUBREL, PUBCOMP from the client (spec 3.4 - 3.7, 4.3).

use vireo_codec::{Ack, PacketId, ProtocolVersion, ReasonCode};

use super::Violation;
use crate::AckOutcome;

/// What to do about an acknowledgement of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckAction {
    /// It completed a delivery: the window has room again.
    Progress,
    /// A late or repeated ack: nothing to do.
    Ignore,
    /// The wrong ack for the delivery's QoS or step: close (5.0: DISCONNECT 0x82), as
    /// Mosquitto does.
    Close(Violation),
}

/// PUBACK or PUBCOMP for an outbound delivery.
pub fn completion(outcome: AckOutcome) -> AckAction {
    match outcome {
        AckOutcome::Matched => AckAction::Progress,
        AckOutcome::Unknown => AckAction::Ignore,
        AckOutcome::WrongStep => AckAction::Close(Violation::PROTOCOL),
    }
}

/// Whether a PUBREC ends the delivery instead of moving it on to PUBREL: a 5.0 reason of 0x80
/// or more [MQTT-4.3.3-4] [MQTT-4.4.0-2].
pub fn pubrec_failed(ack: &Ack) -> bool {
    ack.reason.is_error()
}

/// The PUBREL that answers a PUBREC: for an unknown id too, so the client can finish; 5.0
/// says 0x92 Packet Identifier not found then [MQTT-3.6.2-1].
pub fn pubrel(pid: PacketId, outcome: AckOutcome, version: ProtocolVersion) -> Ack {
    let mut rel = Ack::new(pid);
    if version.is_v5() && outcome == AckOutcome::Unknown {
        rel.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
    }
    rel
}

/// The PUBCOMP that answers a PUBREL, sent whether or not the id was awaiting release (a
/// repeat after a reconnect is legitimate, and Mosquitto answers it too); 5.0 says 0x92 for an
/// id it did not know [MQTT-3.7.2-1].
pub fn pubcomp(pid: PacketId, known: bool, version: ProtocolVersion) -> Ack {
    let mut comp = Ack::new(pid);
    if version.is_v5() && !known {
        comp.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
    }
    comp
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn v5_mqtt_3_7_2_1_unknown_ids_get_0x92() {
        let pid = PacketId::new(9).unwrap();
        assert_eq!(pubcomp(pid, false, ProtocolVersion::V5).reason.0, 0x92);
        assert_eq!(pubcomp(pid, true, ProtocolVersion::V5).reason.0, 0x00);
        assert_eq!(pubcomp(pid, false, ProtocolVersion::V311).reason.0, 0x00);
        let rel = pubrel(pid, AckOutcome::Unknown, ProtocolVersion::V5);
        assert_eq!(rel.reason.0, 0x92);
        assert_eq!(
            completion(AckOutcome::WrongStep),
            AckAction::Close(Violation::PROTOCOL)
        );
    }
}
