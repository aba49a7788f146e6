//! # vireo-broker
//!
//! The broker's logic with no sockets: the subscription index, the retained store, sessions and
//! their QoS state machines, wills and limits.
//!
//! **Promise:** no sockets, no threads of its own, no clock. Time is passed in, effects are
//! returned; `mio` is not a dependency. Shared structures (the subscription index, the retained
//! store) are `Sync` and guarded by `parking_lot` locks so that the server's workers can share them.
//! The one exception to "no I/O" is `store`, the durable log, which reads and writes files (on
//! the thread the server gives it).

pub mod bridge;
mod ids;
mod index;
mod message;
pub mod protocol;
mod retained;
mod session;
mod shared;
pub mod store;

pub use ids::SessionId;
pub use index::{Recipient, Recipients, SubscriptionIndex};
pub use message::Message;
pub use retained::{RetainOutcome, RetainedStore};
pub use session::{
    AckOutcome, Change, Enqueued, Journal, Loaded, Outgoing, Restored, Session, SessionLimits,
    Subscribed, Subscriptions,
};
pub use shared::SharedSubscriptions;
