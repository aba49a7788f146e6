//! Password checks off the event loop.
//!
//! An argon2 check costs milliseconds of CPU by design; done on a worker it would stall every
//! other connection of that worker for as long. A CONNECT that needs one leaves the worker the
//! way a hand-over to the home worker does (`Adoption`): its socket, decoded CONNECT and
//! pipelined bytes go to a small pool of checker threads over a bounded channel, and the
//! checker hands the connection on to the client id's home worker with the verdict. While it
//! is away no worker polls its socket, so what the client sends meanwhile waits in the kernel.
//! A full channel (a flood of CONNECTs with passwords) refuses at once with 0x03 / 0x89 Server
//! busy rather than queueing without bound.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use vireo_broker::protocol::auth;

use crate::passwd::PasswordFile;
use crate::shared::{Adoption, Shared, WorkerMsg};
use parking_lot::RwLock;

/// CONNECTs waiting for a check, per checker thread, before new ones are refused as busy.
const QUEUE_PER_CHECKER: usize = 256;
/// How often an idle checker looks at the shutdown flag.
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);

/// A connection whose credentials need checking, and the worker it goes to next.
pub(crate) struct Check {
    pub adoption: Adoption,
    pub home: usize,
}

/// The checkers' side of the pool: the password file and the queue into it.
pub(crate) struct Checkers {
    /// Swapped whole by a reload (SIGHUP); a check in progress keeps the file it began with.
    pub passwords: RwLock<Arc<PasswordFile>>,
    queue: Sender<Check>,
}

impl Checkers {
    /// A pool of `threads` checkers, not started yet: [`Checkers::spawn`] starts them once the
    /// shared state (which they hand connections back through) exists.
    pub(crate) fn new(passwords: PasswordFile, threads: usize) -> (Self, Receiver<Check>) {
        let (queue, rx) = crossbeam_channel::bounded(QUEUE_PER_CHECKER * threads.max(1));
        let passwords = RwLock::new(Arc::new(passwords));
        (Self { passwords, queue }, rx)
    }

    /// Queues a check; gives the connection back if the queue is full.
    pub(crate) fn submit(&self, check: Check) -> Result<(), Box<Check>> {
        match self.queue.try_send(check) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(c) | TrySendError::Disconnected(c)) => Err(Box::new(c)),
        }
    }
}

/// Starts `threads` checker threads that take from `rx` until the broker shuts down.
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    rx: &Receiver<Check>,
    threads: usize,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..threads.max(1))
        .map(|i| {
            let (shared, rx) = (Arc::clone(shared), rx.clone());
            std::thread::Builder::new()
                .name(format!("vireo-auth-{i}"))
                .spawn(move || run(&shared, &rx))
        })
        .collect()
}

fn run(shared: &Shared, rx: &Receiver<Check>) {
    let Some(checkers) = &shared.checkers else {
        return;
    };
    loop {
        let Check { mut adoption, home } = match rx.recv_timeout(SHUTDOWN_POLL) {
            Ok(check) => check,
            Err(RecvTimeoutError::Timeout) if !shared.shutdown.load(Ordering::Relaxed) => {
                continue;
            }
            Err(_) => return,
        };
        let connect = &adoption.connect;
        let user = connect.username.as_deref().unwrap_or_default();
        let password = connect.password.as_deref().unwrap_or_default();
        let passwords = Arc::clone(&checkers.passwords.read());
        let ok = passwords.verify(user, password);
        if let Err(code) = auth::verdict(connect.protocol, ok) {
            shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            // The password is never logged; the user name is not a secret (Mosquitto logs
            // the client id, EMQX the user name too).
            tracing::info!(
                peer = %adoption.peer,
                client = %connect.client_id,
                user,
                "CONNECT refused: bad user name or password"
            );
            adoption.refused = Some(code);
        }
        shared.mailboxes[home].send(WorkerMsg::Adopt(Box::new(adoption)));
    }
}
