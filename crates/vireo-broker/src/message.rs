//! An application message as the broker routes it.

use std::fmt;

use vireo_codec::{Bytes, Properties, QoS, TopicName};

/// One published message, shared (behind an `Arc`) by every session it is routed to: topic and
/// payload are the `Bytes` slices the codec cut from the publisher's read buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic name.
    pub topic: TopicName,
    /// Payload.
    pub payload: Bytes,
    /// QoS the publisher sent it with.
    pub qos: QoS,
    /// RETAIN as published.
    pub retain: bool,
    /// v5 properties to forward (empty for 3.1.1).
    pub properties: Properties,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic)
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl Message {
    /// Bytes this message pins in memory (topic + payload), for byte limits.
    pub fn weight(&self) -> usize {
        self.topic.len() + self.payload.len()
    }
}
