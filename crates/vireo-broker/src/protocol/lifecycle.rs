//! A connection's life on the clock: the deadline it must meet (CONNECT, then keep alive),
//! what its end means for its Will and its session, and which of those timers are due.
//!
//! Time is passed in as `Instant`s, so the tests drive it on virtual time (see
//! `tests/virtual_time.rs`): no sleeps, no sockets. The server keeps one [`Liveness`] per
//! connection and asks [`after_close`] and [`due`] what to do; it does the doing.

use std::time::{Duration, Instant};

use super::Violation;
use vireo_codec::ReasonCode;

/// How long a connection may stay silent: before CONNECT, the broker's CONNECT timeout; once
/// connected, 1.5 × the keep alive granted ([MQTT-3.1.2-24], 5.0 [MQTT-3.1.2-22]); with keep
/// alive 0, forever.
///
/// Only the deadline is kept here (16 bytes, in every idle connection); the keep alive granted
/// lives beside it in the connection and is passed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    deadline: Option<Instant>,
}

impl Liveness {
    /// A connection just accepted: it has `connect_timeout` to send CONNECT.
    pub fn awaiting_connect(now: Instant, connect_timeout: Duration) -> Self {
        Self {
            deadline: now.checked_add(connect_timeout),
        }
    }

    /// CONNECT accepted with `keep_alive` seconds granted (the client's, or the Server Keep
    /// Alive that replaced it).
    pub fn connected(&mut self, now: Instant, keep_alive: u16) {
        self.deadline = timeout(keep_alive).and_then(|t| now.checked_add(t));
    }

    /// After a decode pass: `progressed` if it took at least one whole packet, `partial` if an
    /// unfinished one is left in the buffer. A packet restarts the keep-alive clock (the rule
    /// counts Control Packets, not bytes [MQTT-3.1.2-24]); bytes of an unfinished packet do
    /// not, and a packet left unfinished for `packet_timeout` ends the connection whatever
    /// the keep alive, so a client trickling a packet (or never finishing one) cannot hold
    /// its buffer forever.
    #[inline]
    pub fn on_decoded(
        &mut self,
        now: Instant,
        keep_alive: u16,
        progressed: bool,
        partial: bool,
        packet_timeout: Duration,
    ) {
        if progressed {
            self.deadline = timeout(keep_alive).and_then(|t| now.checked_add(t));
        }
        if partial && let Some(limit) = now.checked_add(packet_timeout) {
            // The earliest wins: once set, a later pass cannot push the limit back.
            self.deadline = Some(self.deadline.map_or(limit, |d| d.min(limit)));
        }
    }

    /// When the connection must have spoken by.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether the deadline has passed: the connection is closed; a connected 5.0 client is
    /// told [`KEEP_ALIVE_EXPIRED`] first, one awaiting CONNECT nothing (there is no CONNACK
    /// for a DISCONNECT to follow [MQTT-3.14.0-1]).
    pub fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }
}

/// The silence a keep alive of `keep_alive` seconds allows: 1.5 × it; none for 0.
#[inline]
pub fn timeout(keep_alive: u16) -> Option<Duration> {
    (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500))
}

/// The DISCONNECT reason a connected 5.0 client gets when its keep alive runs out: 0x8D.
pub const KEEP_ALIVE_EXPIRED: Violation = Violation(ReasonCode::KEEP_ALIVE_TIMEOUT);

/// What becomes of a connected client's Will once its connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WillFate {
    /// None was set, or the client ended with DISCONNECT (reason 0x00) [MQTT-3.1.2-10].
    Dropped,
    /// Published now [MQTT-3.1.2-8].
    Now,
    /// Published at this instant unless the session resumes first (5.0 Will Delay Interval,
    /// [MQTT-3.1.3-9]).
    At(Instant),
}

/// What becomes of the session once its connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionFate {
    /// Session Expiry Interval 0 (3.1.1: Clean Session 1): it ends with the connection.
    EndsNow,
    /// Kept until this instant unless a client resumes it.
    ExpiresAt(Instant),
    /// 0xFFFFFFFF: kept until a client discards it.
    Kept,
}

/// Both fates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Afterlife {
    /// The Will's.
    pub will: WillFate,
    /// The session's.
    pub session: SessionFate,
}

/// Decides, when a connected client's connection ends at `now`, what happens to its Will and
/// its session. `will_published`: whether this close publishes a Will at all (anything but a
/// normal DISCONNECT); `will_delay` and `session_expiry` in seconds, as negotiated (and as
/// DISCONNECT may have changed the expiry).
///
/// The Will goes out when its delay or the session ends, whichever is first [MQTT-3.1.2-8]
/// (5.0 §3.1.3.2): a session that ends now takes its Will with it at once.
pub fn after_close(
    now: Instant,
    will_published: bool,
    will_delay: u32,
    session_expiry: u32,
) -> Afterlife {
    let later = |secs: u32| now.checked_add(Duration::from_secs(u64::from(secs)));
    let session = match session_expiry {
        0 => SessionFate::EndsNow,
        u32::MAX => SessionFate::Kept,
        secs => later(secs).map_or(SessionFate::Kept, SessionFate::ExpiresAt),
    };
    let will = if !will_published {
        WillFate::Dropped
    } else if will_delay == 0 || session_expiry == 0 {
        WillFate::Now
    } else {
        later(will_delay.min(session_expiry)).map_or(WillFate::Now, WillFate::At)
    };
    Afterlife { will, session }
}

/// An offline session's timers that are due at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Due {
    /// Its delayed Will is to be published.
    pub will: bool,
    /// It is to be discarded (its Will, if still pending, goes out with it).
    pub expired: bool,
}

/// Which of a session's timers are due: `will_at` from [`WillFate::At`], `expires` from
/// [`SessionFate::ExpiresAt`]; `online` sessions never expire: the interval counts from the
/// close (5.0 [MQTT-3.1.2-23]).
pub fn due(now: Instant, online: bool, will_at: Option<Instant>, expires: Option<Instant>) -> Due {
    Due {
        will: will_at.is_some_and(|at| at <= now),
        expired: !online && expires.is_some_and(|at| at <= now),
    }
}

/// How a CONNECT meets the session stored under its client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// None stored: a new one; Session Present 0.
    Fresh,
    /// One stored but Clean Start / Clean Session asks for a new one: it is discarded
    /// (5.0 [MQTT-3.1.2-4], 3.1.1 [MQTT-3.1.2-6]); Session Present 0.
    Discard,
    /// Resumed: Session Present 1 (5.0 [MQTT-3.1.2-5], 3.1.1 [MQTT-3.2.2-2]); a delayed Will
    /// is cancelled [MQTT-3.1.3-9].
    Resume,
}

/// See [`Resume`]. A connection that still serves the session is taken over first, whatever
/// the answer ([`TAKEN_OVER`]).
pub fn resume(stored: bool, clean_start: bool) -> Resume {
    match (stored, clean_start) {
        (false, _) => Resume::Fresh,
        (true, true) => Resume::Discard,
        (true, false) => Resume::Resume,
    }
}

/// What the connection that served a client id is told when a new CONNECT takes its session
/// over: 5.0 DISCONNECT 0x8E [MQTT-3.1.4-3]; a 3.1.1 one is just closed [MQTT-3.1.4-2].
pub const TAKEN_OVER: Violation = Violation(ReasonCode::SESSION_TAKEN_OVER);

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn connect_deadline_does_not_move_with_input() {
        let now = t0();
        let mut l = Liveness::awaiting_connect(now, Duration::from_secs(10));
        // Bytes of an unfinished CONNECT do not move the CONNECT deadline.
        l.on_decoded(
            now + Duration::from_secs(9),
            0,
            false,
            true,
            Duration::from_secs(30),
        );
        assert!(l.expired(now + Duration::from_secs(10)));
    }

    #[test]
    fn keep_alive_is_one_and_a_half_times() {
        let now = t0();
        let mut l = Liveness::awaiting_connect(now, Duration::from_secs(10));
        l.connected(now, 2);
        assert!(!l.expired(now + Duration::from_millis(2999)));
        assert!(l.expired(now + Duration::from_millis(3000)));
        l.on_decoded(now + Duration::from_secs(2), 2, true, false, Duration::ZERO);
        assert!(!l.expired(now + Duration::from_millis(4999)));
        assert!(l.expired(now + Duration::from_millis(5000)));
    }

    /// A packet trickled in (or never finished) ends the connection `packet_timeout` after
    /// it began, whatever the keep alive; a finished packet restarts the clock.
    #[test]
    fn unfinished_packet_times_out_whatever_the_keep_alive() {
        let now = t0();
        let limit = Duration::from_secs(10);
        let at = |s| now + Duration::from_secs(s);
        let mut l = Liveness::awaiting_connect(now, Duration::from_secs(10));
        l.connected(now, 0); // keep alive off: no deadline at all
        l.on_decoded(at(1), 0, false, true, limit);
        for s in 2..11 {
            l.on_decoded(at(s), 0, false, true, limit); // one byte a second
        }
        assert!(!l.expired(now + Duration::from_millis(10_999)));
        assert!(l.expired(at(11)), "10 s after the packet began");
        // Finished in time: the clock goes back to the keep alive (none).
        let mut l = Liveness::awaiting_connect(now, Duration::from_secs(10));
        l.connected(now, 0);
        l.on_decoded(at(1), 0, false, true, limit);
        l.on_decoded(at(5), 0, true, false, limit);
        assert_eq!(l.deadline(), None);
        // With a long keep alive the packet limit still applies; with a short one, the
        // keep alive comes first.
        let mut l = Liveness::awaiting_connect(now, Duration::from_secs(10));
        l.connected(now, 600);
        l.on_decoded(at(1), 600, false, true, limit);
        assert_eq!(l.deadline(), Some(at(11)));
        let mut l = Liveness::awaiting_connect(now, Duration::from_secs(10));
        l.connected(now, 2);
        l.on_decoded(at(1), 2, false, true, limit);
        assert_eq!(
            l.deadline(),
            Some(at(3)),
            "bytes alone do not restart the keep alive"
        );
    }

    #[test]
    fn keep_alive_zero_never_expires() {
        let now = t0();
        let mut l = Liveness::awaiting_connect(now, Duration::from_secs(1));
        l.connected(now, 0);
        assert_eq!(l.deadline(), None);
        assert!(!l.expired(now + Duration::from_secs(1_000_000)));
    }

    #[test]
    fn will_waits_for_the_shorter_of_delay_and_expiry() {
        let now = t0();
        let s = |n| now + Duration::from_secs(n);
        assert_eq!(after_close(now, true, 10, 5).will, WillFate::At(s(5)));
        assert_eq!(after_close(now, true, 5, 10).will, WillFate::At(s(5)));
        assert_eq!(after_close(now, true, 5, 0).will, WillFate::Now);
        assert_eq!(after_close(now, true, 0, 60).will, WillFate::Now);
        assert_eq!(after_close(now, false, 5, 60).will, WillFate::Dropped);
        assert_eq!(after_close(now, true, 5, u32::MAX).will, WillFate::At(s(5)));
    }

    #[test]
    fn session_fate_follows_the_expiry_interval() {
        let now = t0();
        assert_eq!(after_close(now, false, 0, 0).session, SessionFate::EndsNow);
        assert_eq!(
            after_close(now, false, 0, u32::MAX).session,
            SessionFate::Kept
        );
        assert_eq!(
            after_close(now, false, 0, 7).session,
            SessionFate::ExpiresAt(now + Duration::from_secs(7))
        );
    }

    #[test]
    fn online_sessions_do_not_expire() {
        let now = t0();
        assert!(!due(now, true, None, Some(now)).expired);
        assert!(due(now, false, None, Some(now)).expired);
        assert!(due(now, true, Some(now), None).will);
        assert_eq!(
            due(now, false, None, Some(now + Duration::from_secs(1))),
            Due::default()
        );
    }

    #[test]
    fn clean_start_discards_what_is_stored() {
        assert_eq!(resume(false, false), Resume::Fresh);
        assert_eq!(resume(false, true), Resume::Fresh);
        assert_eq!(resume(true, true), Resume::Discard);
        assert_eq!(resume(true, false), Resume::Resume);
    }
}
