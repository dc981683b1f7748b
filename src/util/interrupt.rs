//! Clean interrupts. `install` makes the first SIGINT (Ctrl-C) or SIGTERM (on Windows: Ctrl-C or
//! Ctrl-Break) only raise a flag:
//! training finishes the step it is in, writes a checkpoint and exits with code 130, saying how to
//! resume. A second signal exits at once (code 130); checkpoints are written atomically, so the
//! last complete one is still there. Without `install` (library use, tests) the signals keep
//! their default meaning and `requested` is always false. A closed output (the reader of stdout
//! gone) ends a command quietly too (`end_on_closed_output`).

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// Exit code of a run stopped by a signal (128 + SIGINT, as shells report Ctrl-C).
pub const EXIT_CODE: i32 = 130;

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Routes SIGINT and SIGTERM (on Windows: Ctrl-C and Ctrl-Break) to the flag (first signal) and
/// to an immediate exit (second).
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
    #[cfg(windows)]
    {
        // SAFETY: registers a handler with the signature the console expects; it only touches
        // the flag, which lives for the rest of the process.
        let ok = unsafe { windows_sys::Win32::System::Console::SetConsoleCtrlHandler(Some(on_console_ctrl), 1) };
        anyhow::ensure!(ok != 0, "cannot register the Ctrl-C handler: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Windows' console handler, run on a thread of its own: the first Ctrl-C or Ctrl-Break raises
/// the flag, the second exits at once; other events (closing the window, logging off) keep their
/// default, as the console ends the process after them anyway.
#[cfg(windows)]
unsafe extern "system" fn on_console_ctrl(event: u32) -> windows_sys::core::BOOL {
    use windows_sys::Win32::System::Console::{CTRL_BREAK_EVENT, CTRL_C_EVENT};
    if event != CTRL_C_EVENT && event != CTRL_BREAK_EVENT {
        return 0;
    }
    let Some(flag) = FLAG.get() else { return 0 };
    if flag.swap(true, Ordering::SeqCst) {
        // At once, as `_exit` on Unix: no DLL detach, which could wait on a lock held by a thread
        // this ends (the checkpoints are atomic, so nothing is lost by skipping the clean-up).
        use windows_sys::Win32::System::Threading::{GetCurrentProcess, TerminateProcess};
        unsafe { TerminateProcess(GetCurrentProcess(), EXIT_CODE as u32) };
    }
    1
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

/// Exit code of a command whose reader went away (`trm info --list | head -1`): 128 + SIGPIPE,
/// what a shell reports for a tool the closed pipe stopped.
pub const CLOSED_OUTPUT_EXIT_CODE: i32 = 141;

/// Whether a panic is std's "failed printing to stdout: <closed pipe> (os error N)" (Rust ignores
/// SIGPIPE, so a write to a closed pipe fails and `println!` panics; Windows has no SIGPIPE at
/// all). The OS's code is read back as std reads it: EPIPE on Unix, ERROR_NO_DATA and
/// ERROR_BROKEN_PIPE on Windows are all `ErrorKind::BrokenPipe`.
fn is_closed_output(payload: &(dyn std::any::Any + Send)) -> bool {
    let text = payload.downcast_ref::<String>().map(String::as_str).or_else(|| payload.downcast_ref::<&str>().copied());
    let os_code = |t: &str| t.strip_suffix(')')?.rsplit_once("(os error ")?.1.parse::<i32>().ok();
    text.filter(|t| t.starts_with("failed printing to stdout"))
        .and_then(os_code)
        .is_some_and(|code| std::io::Error::from_raw_os_error(code).kind() == std::io::ErrorKind::BrokenPipe)
}

/// Keeps the closed-output panic silent (no message, no backtrace); other panics print as before.
pub fn install_closed_output_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_closed_output(info.payload()) {
            previous(info);
        }
    }));
}

/// Runs `f`; when its output was closed, the panic unwinds through `f` (so its temporary folders
/// and files are removed, as on any error) and this returns `None`. Other panics go on unwinding.
pub fn end_on_closed_output<T>(f: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(payload) if is_closed_output(payload.as_ref()) => None,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message std panics with on a closed pipe, made from the OS's own error, is recognised
    /// on every platform; other print failures and other panics are not.
    #[test]
    fn a_closed_pipe_is_told_from_other_failures() {
        // EPIPE on Unix; ERROR_NO_DATA (what a closed pipe gives) and ERROR_BROKEN_PIPE on Windows.
        #[cfg(unix)]
        let codes = [libc::EPIPE];
        #[cfg(windows)]
        let codes = [232, 109];
        #[cfg(not(any(unix, windows)))]
        let codes: [i32; 0] = [];
        for code in codes {
            let msg = format!("failed printing to stdout: {}", std::io::Error::from_raw_os_error(code));
            assert!(is_closed_output(&msg), "{msg}");
        }
        let full = format!("failed printing to stdout: {}", std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert!(!is_closed_output(&full), "{full}");
        // An OS error that is not a closed pipe, with its "(os error N)": a full disk.
        #[cfg(unix)]
        let other = libc::ENOSPC;
        #[cfg(windows)]
        let other = 112; // ERROR_DISK_FULL
        #[cfg(any(unix, windows))]
        {
            let full = format!("failed printing to stdout: {}", std::io::Error::from_raw_os_error(other));
            assert!(full.contains("os error"), "{full}");
            assert!(!is_closed_output(&full), "{full}");
        }
        assert!(!is_closed_output(&"index out of bounds"), "an ordinary panic");
    }
}
