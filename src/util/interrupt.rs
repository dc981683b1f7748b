//! Clean interrupts. `install` makes the first SIGINT (Ctrl-C) or SIGTERM only raise a flag:
//! training finishes the step it is in, writes a checkpoint and exits with code 130, saying how to
//! resume. A second signal exits at once (code 130); checkpoints are written atomically, so the
//! last complete one is still there. Without `install` (library use, tests) the signals keep
//! their default meaning and `requested` is always false.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// Exit code of a run stopped by a signal (128 + SIGINT, as shells report Ctrl-C).
pub const EXIT_CODE: i32 = 130;

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Routes SIGINT and SIGTERM to the flag (first signal) and to an immediate exit (second).
pub fn install() -> anyhow::Result<()> {
    if FLAG.get().is_some() {
        return Ok(());
    }
    let flag = Arc::new(AtomicBool::new(false));
    #[cfg(unix)]
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first, so it sees the flag as it was before this signal set it.
        signal_hook::flag::register_conditional_shutdown(sig, EXIT_CODE, flag.clone())?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    FLAG.set(flag).ok();
    Ok(())
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    FLAG.get().is_some_and(|f| f.load(Ordering::SeqCst))
}

/// The error of a run stopped by a signal after writing its checkpoint; `main` exits with
/// `EXIT_CODE` on it.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}

/// A command that only prints (`info`, `data inspect`, `solve`, `eval` ...) ends quietly when
/// what reads its output closes early (`trm info --list | head -1`), as Unix tools do, instead of
/// panicking on the failed write: SIGPIPE gets its default action back (Rust ignores it). Not for
/// training, which must reach its checkpoint.
pub fn end_quietly_on_closed_output() {
    #[cfg(unix)]
    // SAFETY: resetting a signal's disposition to its default before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
