//! The daemon's signals: TERM and INT stop, HUP reloads, USR1 asks for a pass.
//!
//! A signal-hook thread rather than `tokio::signal` streams, for one reason: until
//! the daemon's loop reads signals (`serving`), TERM and INT end the process from
//! this thread. Start-up may be busy (a repair, a slow disk, a FIFO planted where a
//! certificate should be), and a signal queued where nobody reads it is an ignored
//! SIGTERM. Every write is atomic, so stopping there loses nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use tokio::sync::mpsc;

/// What a signal asks the daemon to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Signal {
    /// TERM or INT (the number, for the log).
    Stop(i32),
    /// HUP: read the configuration again.
    Reload,
    /// USR1: a pass now.
    PassNow,
}

impl Signal {
    fn from_number(s: i32) -> Signal {
        match s {
            SIGHUP => Signal::Reload,
            SIGUSR1 => Signal::PassNow,
            other => Signal::Stop(other),
        }
    }
}

/// Starts the signal thread; the daemon's loop reads the receiver once it sets
/// `serving`.
pub(super) fn forward(serving: Arc<AtomicBool>) -> std::io::Result<mpsc::Receiver<Signal>> {
    let mut sigs = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])?;
    let (tx, rx) = mpsc::channel(16);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for s in sigs.forever() {
                if matches!(s, SIGTERM | SIGINT) && !serving.load(Ordering::SeqCst) {
                    eprintln!("cas-renewd: signal {s} during start-up; stopped");
                    std::process::exit(0);
                }
                if tx.blocking_send(Signal::from_number(s)).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_signal_the_daemon_registers_maps_to_its_meaning() {
        assert_eq!(Signal::from_number(SIGHUP), Signal::Reload);
        assert_eq!(Signal::from_number(SIGUSR1), Signal::PassNow);
        assert_eq!(Signal::from_number(SIGTERM), Signal::Stop(SIGTERM));
        assert_eq!(Signal::from_number(SIGINT), Signal::Stop(SIGINT));
    }
}
