//! Clean interrupts. `install` makes the first SIGINT (Ctrl-C) or SIGTERM (on Windows: Ctrl-C or
//! Ctrl-Break) only raise a flag:
//! training finishes the step it is in, writes a checkpoint and exits with code 130, saying how to
//! resume. A second signal, a second or more after the first, exits at once (code 130);
//! checkpoints are written atomically, so the last complete one is still there. Signals within a
//! second of the first are the same stop told twice, not a second one: a job manager (Slurm's
//! `scancel` or time limit, `systemctl stop`) signals every process of a job, the ranks of
//! `trm launch` and the launcher too, and the launcher then passes its own signal on to them.
//! Without `install` (library use, tests) the signals keep their default meaning and `requested`
//! is always false. A closed output (the reader of stdout gone) ends a command quietly too
//! (`end_on_closed_output`).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Exit code of a run stopped by a signal (128 + SIGINT, as shells report Ctrl-C).
pub const EXIT_CODE: i32 = 130;

/// Signals this soon after the first are the same stop, told again (see the module's text).
pub const SAME_STOP: Duration = Duration::from_secs(1);

/// When `install` ran: the clock the first signal's time is kept in.
static INSTALLED: OnceLock<Instant> = OnceLock::new();
/// Nanoseconds from `INSTALLED` to the first signal, plus one; 0 while none came.
static FIRST: AtomicU64 = AtomicU64::new(0);

/// What a signal does: the first raises the flag; one within `SAME_STOP` of it does nothing
/// more; a later one exits at once (true). Called in the signal handler: atomics and the
/// monotonic clock only (clock_gettime is async-signal-safe).
fn on_signal() -> bool {
    let Some(t0) = INSTALLED.get() else { return false };
    let now = (t0.elapsed().as_nanos() as u64).saturating_add(1);
    match FIRST.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => false,
        Err(first) => now.saturating_sub(first) >= SAME_STOP.as_nanos() as u64,
    }
}

/// Routes SIGINT and SIGTERM (on Windows: Ctrl-C and Ctrl-Break) to the flag (first signal) and
/// to an immediate exit (a second, `SAME_STOP` or more after the first).
pub fn install() -> anyhow::Result<()> {
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    INSTALLED.set(Instant::now()).ok();
    // `_exit` is async-signal-safe (checkpoints are atomic, so skipping the clean-up loses nothing).
    #[cfg(unix)]
    register(&[signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM], || {
        if on_signal() {
            signal_hook::low_level::exit(EXIT_CODE);
        }
    })?;
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
/// the flag, a second (`SAME_STOP` or more after it) exits at once; other events (closing the
/// window, logging off) keep their default, as the console ends the process after them anyway.
#[cfg(windows)]
unsafe extern "system" fn on_console_ctrl(event: u32) -> windows_sys::core::BOOL {
    use windows_sys::Win32::System::Console::{CTRL_BREAK_EVENT, CTRL_C_EVENT};
    if event != CTRL_C_EVENT && event != CTRL_BREAK_EVENT {
        return 0;
    }
    if on_signal() {
        // At once, as `_exit` on Unix: no DLL detach, which could wait on a lock held by a thread
        // this ends (the checkpoints are atomic, so nothing is lost by skipping the clean-up).
        use windows_sys::Win32::System::Threading::{GetCurrentProcess, TerminateProcess};
        unsafe { TerminateProcess(GetCurrentProcess(), EXIT_CODE as u32) };
    }
    1
}

/// Runs `action` on each of `signals`. It must be async-signal-safe: `on_signal`, atomics, `_exit`.
#[cfg(unix)]
fn register(signals: &[i32], action: fn()) -> anyhow::Result<()> {
    for &sig in signals {
        // SAFETY: the callers' actions touch atomics and the monotonic clock only, or `_exit`.
        unsafe { signal_hook::low_level::register(sig, action)? };
    }
    Ok(())
}

/// Signals that came `SAME_STOP` or more after the first, in a process that passes them on
/// (`install_passing_on`) instead of exiting.
static REPEATED: AtomicU64 = AtomicU64::new(0);

/// As `install`, for `trm launch`, whose ranks run in their own process group: no signal ends
/// the launcher at once (its ranks would be left running); a later signal is counted instead
/// (`repeated`), and the launcher passes it on before it ends. SIGHUP (its terminal closed) is a
/// stop too, so that the launcher stays to stop its ranks, unless it was started ignoring SIGHUP
/// (`nohup`), which it then goes on doing. (Unix; elsewhere `install`.)
pub fn install_passing_on() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        if INSTALLED.get().is_some() {
            return Ok(());
        }
        INSTALLED.set(Instant::now()).ok();
        // SAFETY: sigaction with no new action only reads the current one into `old`.
        let hangup_ignored = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
        };
        let hangup = (!hangup_ignored).then_some(signal_hook::consts::SIGHUP);
        let signals: Vec<i32> = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM].into_iter().chain(hangup).collect();
        register(&signals, || {
            if on_signal() {
                REPEATED.fetch_add(1, Ordering::SeqCst);
            }
        })
    }
    #[cfg(not(unix))]
    install()
}

/// How many signals came `SAME_STOP` or more after the first (`install_passing_on`).
pub fn repeated() -> u64 {
    REPEATED.load(Ordering::SeqCst)
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    FIRST.load(Ordering::SeqCst) != 0
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
