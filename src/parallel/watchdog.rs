//! A deadline on every collective of a multi-process run. NCCL waits for the other ranks without
//! end: a rank that died (killed by the out-of-memory killer, a lost node) or stalled leaves the
//! others blocked inside their next collective for ever, which under Slurm's `srun` without
//! `--kill-on-bad-exit` (unlike `trm launch` or torchrun, which stop the other ranks) holds the
//! whole allocation. The watchdog notes when each collective starts; a thread of its own acts
//! once one has waited longer than the timeout (`TRM_COLLECTIVE_TIMEOUT`, seconds, default 1800,
//! 0 turns it off). In a run that action says which collective waited and ends the process, so
//! the job ends and can be resumed from its last checkpoint (checkpoints are atomic, so ending
//! mid-step loses nothing). It ends the ranks that wait, not a stalled rank that waits nowhere.
//!
//! The wait is counted in ticks (at most 30 s, and an eighth of the timeout), each adding the
//! time since the last one but never more than two ticks: a process that was suspended (a
//! scheduler's suspend, Ctrl-Z) and woken later counts the time it was stopped as one tick, so a
//! healthy run does not end on waking inside a collective.

use super::Reducer;
use anyhow::Result;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the watchdog does with its message once a collective has waited past the timeout.
pub type OnTimeout = Box<dyn Fn(&str) + Send>;

/// The collective in progress, if any, and whether the watchdog is closing.
#[derive(Default)]
struct State {
    /// (the collective's name, its index among this rank's collectives)
    current: Option<(&'static str, u64)>,
    count: u64,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `inner` with a deadline on each collective (see the module's note).
pub struct Watchdog {
    inner: Box<dyn Reducer>,
    shared: Arc<Shared>,
    monitor: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Watches `inner`'s collectives; `on_timeout` runs on the watchdog's thread, at most once per
    /// collective, with a message naming the rank, the collective and how long it waited.
    pub fn new(inner: Box<dyn Reducer>, timeout: Duration, on_timeout: OnTimeout) -> Result<Self> {
        Self::with_clock(inner, timeout, on_timeout, Box::new(Instant::now))
    }

    /// As `new`, reading the time from `now` (tests: a clock that jumps, as a suspended
    /// process's does).
    fn with_clock(inner: Box<dyn Reducer>, timeout: Duration, on_timeout: OnTimeout, now: Clock) -> Result<Self> {
        let shared = Arc::new(Shared::default());
        let (rank, world) = (inner.rank(), inner.world());
        let watched = shared.clone();
        let monitor = std::thread::Builder::new()
            .name("trm-collective-watchdog".into())
            .spawn(move || watch(&watched, timeout, &*on_timeout, &*now, rank, world))?;
        Ok(Watchdog { inner, shared, monitor: Some(monitor) })
    }

    /// Runs one collective of `inner` under the deadline.
    fn timed<T>(&mut self, name: &'static str, run: impl FnOnce(&mut dyn Reducer) -> Result<T>) -> Result<T> {
        /// Clears the collective in progress however the call ends (a panic caught further up
        /// included), so that no later wait is counted against it.
        struct Done<'a>(&'a Shared);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.lock().current = None;
            }
        }
        {
            let mut st = self.shared.lock();
            st.count += 1;
            st.current = Some((name, st.count));
        }
        self.shared.cv.notify_all();
        let _done = Done(&self.shared);
        run(&mut *self.inner)
    }
}

type Clock = Box<dyn Fn() -> Instant + Send>;

/// The watchdog's thread: wakes every tick, adds the time since the last wake (two ticks at
/// most) to the wait of the collective in progress, and acts once for a collective whose wait
/// reaches the timeout.
fn watch(shared: &Shared, timeout: Duration, on_timeout: &dyn Fn(&str), now: &dyn Fn() -> Instant, rank: usize, world: usize) {
    let tick = (timeout / 8).clamp(Duration::from_millis(1), Duration::from_secs(30));
    // (the collective being timed, its wait so far, whether it was acted on)
    let mut timing: Option<(u64, Duration, bool)> = None;
    let mut last = now();
    let mut st = shared.lock();
    loop {
        if st.closed {
            return;
        }
        let t = now();
        let since = t.saturating_duration_since(last).min(2 * tick);
        last = t;
        timing = match (st.current, timing) {
            (None, _) => None,
            // A collective that started since the last wake is counted from now on.
            (Some((_, index)), Some((timed, waited, acted))) if timed == index => Some((index, waited + since, acted)),
            (Some((_, index)), _) => Some((index, Duration::ZERO, false)),
        };
        if let (Some((name, index)), Some((_, waited, acted @ false))) = (st.current, &mut timing)
            && *waited >= timeout
        {
            *acted = true;
            let message = format!(
                "rank {rank} of {world}: {name} (this rank's collective #{index}) has waited {:.0} s for the other ranks \
                 (TRM_COLLECTIVE_TIMEOUT={}): another rank has probably died or stalled (its own output says why). \
                 This rank ends now instead of waiting for ever; resume the run from its last checkpoint (--resume)",
                waited.as_secs_f64(),
                timeout.as_secs_f64()
            );
            drop(st);
            on_timeout(&message);
            st = shared.lock();
            continue;
        }
        st = shared.cv.wait_timeout(st, tick).unwrap_or_else(|e| e.into_inner()).0;
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.cv.notify_all();
        if let Some(t) = self.monitor.take() {
            let _ = t.join();
        }
    }
}

impl Reducer for Watchdog {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn world(&self) -> usize {
        self.inner.world()
    }
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<()> {
        self.timed("all_reduce_sum", |r| r.all_reduce_sum(buf))
    }
    fn all_gather(&mut self, local: &[f32]) -> Result<Vec<f32>> {
        self.timed("all_gather", |r| r.all_gather(local))
    }
    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<()> {
        self.timed("broadcast", |r| r.broadcast(buf, root))
    }
    fn barrier(&mut self) -> Result<()> {
        self.timed("barrier", |r| r.barrier())
    }
    fn all_gather_i32(&mut self, local: &[i32]) -> Result<Vec<i32>> {
        self.timed("all_gather_i32", |r| r.all_gather_i32(local))
    }
    fn is_single(&self) -> bool {
        self.inner.is_single()
    }
}

/// The action of a run: the message on standard error, then the process ends at once with exit
/// status 1 (as `_exit`: a thread blocked inside NCCL or a CUDA synchronisation cannot hold up
/// the exit, and a standard error that blocks holds it up for 5 s at most; the checkpoints on
/// disk are atomic).
pub fn end_process() -> OnTimeout {
    Box::new(|message| {
        use std::io::Write;
        let _ = std::thread::Builder::new().spawn(|| {
            std::thread::sleep(Duration::from_secs(5));
            signal_hook::low_level::exit(1);
        });
        let _ = writeln!(std::io::stderr(), "error: {message}");
        signal_hook::low_level::exit(1);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::threads;
    use std::sync::mpsc;

    /// One in-process rank behind a watchdog whose action reports to `tx`.
    fn watched(r: threads::ThreadReducer, timeout: Duration, tx: mpsc::Sender<String>, now: Clock) -> Watchdog {
        let tx = Mutex::new(tx);
        let act: OnTimeout = Box::new(move |m| tx.lock().unwrap().send(m.to_string()).unwrap());
        Watchdog::with_clock(Box::new(r), timeout, act, now).unwrap()
    }

    #[test]
    fn a_collective_that_waits_past_the_timeout_is_reported_once_and_others_are_not() {
        let (tx, rx) = mpsc::channel::<String>();
        let timeout = Duration::from_millis(1500);
        let mut ranks = threads::group(2);
        let (late, early) = (ranks.pop().unwrap(), ranks.pop().unwrap());
        let late_tx = tx.clone();
        let t = std::thread::spawn(move || {
            let mut late = watched(late, timeout, late_tx, Box::new(Instant::now));
            // Both ranks arrive together: a sum, with nothing reported.
            let mut b = [2.0f32];
            late.all_reduce_sum(&mut b).unwrap();
            assert_eq!(b, [3.0]);
            // Then this rank is late, for far longer than the timeout, at the next collective.
            std::thread::sleep(Duration::from_millis(4000));
            late.barrier().unwrap();
            // Closing the watchdog ends its thread (the join in Drop returns).
        });
        let mut early = watched(early, timeout, tx, Box::new(Instant::now));
        let mut a = [1.0f32];
        early.all_reduce_sum(&mut a).unwrap();
        assert_eq!(a, [3.0]);
        early.barrier().unwrap();
        t.join().unwrap();
        drop(early);
        let said: Vec<String> = rx.try_iter().collect();
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].starts_with("rank 0 of 2: barrier (this rank's collective #2) has waited"), "{}", said[0]);
        assert!(said[0].contains("TRM_COLLECTIVE_TIMEOUT=1.5)"), "{}", said[0]);
    }

    #[test]
    fn time_a_suspended_process_was_stopped_counts_as_one_tick() {
        // A clock that jumps an hour ahead once the collective has started, as a process
        // suspended inside it and woken an hour later sees it; the other rank then arrives.
        let (tx, rx) = mpsc::channel::<String>();
        let jump = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let j = jump.clone();
        let clock: Clock = Box::new(move || {
            let hour = if j.load(std::sync::atomic::Ordering::SeqCst) { Duration::from_secs(3600) } else { Duration::ZERO };
            Instant::now() + hour
        });
        let mut ranks = threads::group(2);
        let (late, early) = (ranks.pop().unwrap(), ranks.pop().unwrap());
        let t = std::thread::spawn(move || {
            let mut late = late;
            std::thread::sleep(Duration::from_millis(1000));
            late.barrier().unwrap();
        });
        // Ticks of 375 ms: the hour counts as 750 ms at most, 1.75 s in all, below the 3 s.
        let mut early = watched(early, Duration::from_secs(3), tx, clock);
        let jumper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            jump.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        early.barrier().unwrap();
        t.join().unwrap();
        jumper.join().unwrap();
        drop(early);
        assert_eq!(rx.try_iter().count(), 0, "a jump of the clock alone ended the wait");
    }
}
