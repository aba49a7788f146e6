//! A publisher's QoS 1/2 in-flight window: packet ids handed out from a fixed pool, each slot
//! remembering which acknowledgement it waits for. No allocation after construction.

use std::collections::VecDeque;

use vireo_codec::PacketId;

/// What a slot waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Free,
    /// QoS 1: PUBACK.
    PubAck,
    /// QoS 2, first half: PUBREC.
    PubRec,
    /// QoS 2, second half: PUBCOMP (after our PUBREL).
    PubComp,
}

/// An acknowledgement that matches nothing in flight: a broker bug worth reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{packet} for packet id {id} which is not awaiting it")]
pub struct UnexpectedAck {
    /// The packet's name.
    pub packet: &'static str,
    /// Its packet id.
    pub id: u16,
}

/// Packet ids `1..=capacity`, at most `capacity` in flight.
#[derive(Debug)]
pub struct Inflight {
    slots: Vec<Slot>,
    /// Free ids, oldest released first, so ids advance like a counter when acks come in order.
    free: VecDeque<PacketId>,
}

impl Inflight {
    /// A window of `capacity` (1 to 65,535) ids.
    pub fn new(capacity: u16) -> Self {
        Self {
            slots: vec![Slot::Free; usize::from(capacity)],
            free: (1..=capacity).filter_map(PacketId::new).collect(),
        }
    }

    /// Messages awaiting acknowledgement.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether another message may be sent now.
    pub fn has_room(&self) -> bool {
        !self.free.is_empty()
    }

    /// Takes an id for a QoS 1 (`exactly_once == false`) or QoS 2 message.
    pub fn acquire(&mut self, exactly_once: bool) -> Option<PacketId> {
        let id = self.free.pop_front()?;
        self.slots[Self::index(id)] = if exactly_once {
            Slot::PubRec
        } else {
            Slot::PubAck
        };
        Some(id)
    }

    fn index(id: PacketId) -> usize {
        usize::from(id.get()) - 1
    }

    fn expect(
        &mut self,
        id: PacketId,
        want: Slot,
        packet: &'static str,
    ) -> Result<(), UnexpectedAck> {
        match self.slots.get_mut(Self::index(id)) {
            Some(slot) if *slot == want => {
                *slot = Slot::Free;
                Ok(())
            }
            _ => Err(UnexpectedAck {
                packet,
                id: id.get(),
            }),
        }
    }

    /// PUBACK: the QoS 1 message is done and its id free again.
    pub fn on_puback(&mut self, id: PacketId) -> Result<(), UnexpectedAck> {
        self.expect(id, Slot::PubAck, "PUBACK")?;
        self.free.push_back(id);
        Ok(())
    }

    /// PUBREC: the caller sends PUBREL; the id stays taken until PUBCOMP.
    pub fn on_pubrec(&mut self, id: PacketId) -> Result<(), UnexpectedAck> {
        self.expect(id, Slot::PubRec, "PUBREC")?;
        self.slots[Self::index(id)] = Slot::PubComp;
        Ok(())
    }

    /// PUBCOMP: the QoS 2 message is done.
    pub fn on_pubcomp(&mut self, id: PacketId) -> Result<(), UnexpectedAck> {
        self.expect(id, Slot::PubComp, "PUBCOMP")?;
        self.free.push_back(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos1_window_fills_and_frees() {
        let mut w = Inflight::new(2);
        let a = w.acquire(false).map(PacketId::get);
        let b = w.acquire(false).map(PacketId::get);
        assert_eq!((a, b), (Some(1), Some(2)));
        assert!(!w.has_room());
        assert_eq!(w.acquire(false), None);
        let one = PacketId::new(1).expect("non-zero");
        assert_eq!(w.on_puback(one), Ok(()));
        assert!(w.on_puback(one).is_err(), "second PUBACK for the same id");
        assert_eq!(w.acquire(false).map(PacketId::get), Some(1));
    }

    #[test]
    fn qos2_needs_pubrec_then_pubcomp() {
        let mut w = Inflight::new(4);
        let id = w.acquire(true).expect("room");
        assert!(w.on_pubcomp(id).is_err(), "PUBCOMP before PUBREC");
        assert!(w.on_puback(id).is_err(), "PUBACK for a QoS 2 id");
        assert_eq!(w.on_pubrec(id), Ok(()));
        assert_eq!(w.len(), 1);
        assert_eq!(w.on_pubcomp(id), Ok(()));
        assert_eq!(w.len(), 0);
    }
}
