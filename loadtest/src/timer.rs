//! Sub-millisecond wake-ups for the open-loop schedule.
//!
//! epoll's timeout has millisecond granularity: waking on it alone sends a rate-limited message
//! up to 1 ms late, and since latency is measured from the intended send time, the generator
//! would add that to every message. On Linux a `timerfd` registered in the same poll wakes the
//! loop at the due nanosecond instead; elsewhere the loop falls back to the poll timeout.

use std::io;

use mio::{Registry, Token};

/// A one-shot timer that makes the worker's poll readable at a deadline.
#[derive(Debug)]
pub struct Timer {
    #[cfg(target_os = "linux")]
    fd: rustix::fd::OwnedFd,
    /// The deadline armed, nanoseconds on the run clock.
    armed: Option<u64>,
}

impl Timer {
    /// Creates the timer and registers it under `token`.
    #[cfg(target_os = "linux")]
    pub fn new(registry: &Registry, token: Token) -> io::Result<Self> {
        use rustix::fd::AsRawFd;
        use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        registry.register(
            &mut mio::unix::SourceFd(&fd.as_raw_fd()),
            token,
            mio::Interest::READABLE,
        )?;
        Ok(Self { fd, armed: None })
    }

    /// Without timerfd the poll timeout does the job.
    #[cfg(not(target_os = "linux"))]
    pub fn new(_registry: &Registry, _token: Token) -> io::Result<Self> {
        Ok(Self { armed: None })
    }

    /// Makes the poll wake at `deadline_ns` (run clock), `now_ns` being the current time.
    /// Re-arming for the deadline already armed costs nothing.
    pub fn arm(&mut self, deadline_ns: u64, now_ns: u64) {
        if self.armed == Some(deadline_ns) {
            return;
        }
        self.armed = Some(deadline_ns);
        #[cfg(target_os = "linux")]
        {
            use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
            // Zero would disarm the timer: a deadline already passed fires after 1 ns.
            let delta = deadline_ns.saturating_sub(now_ns).max(1);
            let spec = Itimerspec {
                it_interval: Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: Timespec {
                    tv_sec: (delta / 1_000_000_000) as i64,
                    tv_nsec: (delta % 1_000_000_000) as i64,
                },
            };
            if timerfd_settime(&self.fd, TimerfdTimerFlags::empty(), &spec).is_err() {
                self.armed = None;
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = now_ns;
    }

    /// Whether a timerfd backs this timer (otherwise the caller keeps a precise poll timeout).
    pub fn is_precise(&self) -> bool {
        cfg!(target_os = "linux")
    }

    /// After the timer's readiness event: consumes the expiration.
    pub fn on_fire(&mut self) {
        self.armed = None;
        #[cfg(target_os = "linux")]
        {
            let mut buf = [0u8; 8];
            // Nothing to read means a stale event; either way the timer is now disarmed.
            let _ = rustix::io::read(&self.fd, &mut buf);
        }
    }
}
