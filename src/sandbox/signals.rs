//! Signals while the sandbox runs: a flag the poll loops look at. No self-pipe needed,
//! everything here polls.

use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};

use super::{SandboxError, sys_err};

static PENDING_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: nix::libc::c_int) {
    PENDING_SIGNAL.store(sig, Ordering::SeqCst);
}

pub(super) fn take_signal() -> Option<i32> {
    match PENDING_SIGNAL.swap(0, Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Catches SIGINT/SIGTERM/SIGHUP while the sandbox runs; restores the old handlers on drop.
pub(super) struct SignalGuard {
    old: Vec<(Signal, SigAction)>,
}

impl SignalGuard {
    pub(super) fn install() -> Result<SignalGuard, SandboxError> {
        PENDING_SIGNAL.store(0, Ordering::SeqCst);
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        let mut guard = SignalGuard { old: Vec::new() };
        for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            let old = unsafe { signal::sigaction(sig, &action) }
                .map_err(sys_err(format!("installing a handler for {sig}")))?;
            guard.old.push((sig, old));
        }
        Ok(guard)
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (sig, old) in self.old.drain(..) {
            // SAFETY: restores what was installed before.
            let _ = unsafe { signal::sigaction(sig, &old) };
        }
    }
}
