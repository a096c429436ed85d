//! The one harness every integration test builds on: a simulator-backed
//! environment with its configuration (`env`), the daemon as a child process with
//! readiness and cleanup (`process`), a scriptable fake RPC endpoint (`fake`), and
//! the in-process crash matrix of the engine tests (`crash`).

// Cargo compiles this module into every test binary and each binary uses only
// part of it; the rest would be dead-code (and unused re-export) warnings, which
// clippy turns into errors.
#![allow(dead_code, unused_imports)]

pub mod crash;
pub mod env;
pub mod etcd;
pub mod fake;
pub mod process;

pub use env::{
    Cert, EnvBuilder, FAST, Installed, KEY_ID, RENEWAL_CRASH_POINTS, SECRET, TestEnv,
    no_renew_calls, show, start_sim,
};
pub use fake::*;
pub use process::{DaemonProcess, Notify, bin_command, free_port, scrape, signal};

// The simulator's path, named once for every test binary.
pub use cas_sim::{Scenario, Simulator};
