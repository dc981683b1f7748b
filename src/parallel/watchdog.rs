//! A deadline on every collective of a multi-process run. NCCL waits for the other ranks without
//! end: a rank that died (killed by the out-of-memory killer, a lost node) or stalled leaves the
//! others blocked inside their next collective for ever, which under Slurm's `srun` (unlike
//! `trm launch` or torchrun, which stop the other ranks) holds the whole allocation. The watchdog
//! notes when each collective starts; a thread of its own acts once one has waited longer than
//! the timeout (`TRM_COLLECTIVE_TIMEOUT`, seconds, default 1800, 0 turns it off). In a run that
//! action says which collective waited and ends the process, so the job ends and can be resumed
//! from its last checkpoint (checkpoints are atomic, so ending mid-step loses nothing).

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
    /// (the collective's name, its index among this rank's collectives, when it started)
    current: Option<(&'static str, u64, Instant)>,
    count: u64,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    cv: Condvar,
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
        let shared = Arc::new(Shared::default());
        let (rank, world) = (inner.rank(), inner.world());
        let watched = shared.clone();
        let monitor = std::thread::Builder::new()
            .name("trm-collective-watchdog".into())
            .spawn(move || watch(&watched, timeout, &*on_timeout, rank, world))?;
        Ok(Watchdog { inner, shared, monitor: Some(monitor) })
    }

    /// Runs one collective of `inner` under the deadline.
    fn timed<T>(&mut self, name: &'static str, run: impl FnOnce(&mut dyn Reducer) -> Result<T>) -> Result<T> {
        {
            let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            st.count += 1;
            st.current = Some((name, st.count, Instant::now()));
        }
        self.shared.cv.notify_all();
        let out = run(&mut *self.inner);
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).current = None;
        out
    }
}

/// The watchdog's thread: sleeps until the collective in progress reaches its deadline (or a
/// new one starts, or the watchdog closes) and acts once for a collective past it.
fn watch(shared: &Shared, timeout: Duration, on_timeout: &dyn Fn(&str), rank: usize, world: usize) {
    let mut acted_on = 0u64;
    let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if st.closed {
            return;
        }
        let wait = match st.current {
            Some((name, index, started)) if index != acted_on => {
                let waited = started.elapsed();
                if waited >= timeout {
                    acted_on = index;
                    let message = format!(
                        "rank {rank} of {world}: {name} (this rank's collective #{index}) has waited {:.0} s for the other ranks \
                         (TRM_COLLECTIVE_TIMEOUT={}): another rank has probably died or stalled (its own output says why). \
                         This rank ends now instead of waiting for ever; resume the run from its last checkpoint (--resume)",
                        waited.as_secs_f64(),
                        timeout.as_secs_f64()
                    );
                    drop(st);
                    on_timeout(&message);
                    st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
                    continue;
                }
                Some(timeout - waited)
            }
            _ => None,
        };
        st = match wait {
            Some(w) => shared.cv.wait_timeout(st, w).unwrap_or_else(|e| e.into_inner()).0,
            None => shared.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
        };
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
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
/// the exit; the checkpoints on disk are atomic).
pub fn end_process() -> OnTimeout {
    Box::new(|message| {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "error: {message}");
        signal_hook::low_level::exit(1);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::threads;
    use std::sync::mpsc;

    #[test]
    fn a_collective_that_waits_past_the_timeout_is_reported_once_and_others_are_not() {
        let (tx, rx) = mpsc::channel::<String>();
        // One in-process rank behind a watchdog (1 s) whose action reports to `rx`.
        let watched = |r: threads::ThreadReducer, tx: mpsc::Sender<String>| {
            let tx = Mutex::new(tx);
            let act: OnTimeout = Box::new(move |m| tx.lock().unwrap().send(m.to_string()).unwrap());
            Watchdog::new(Box::new(r), Duration::from_millis(1000), act).unwrap()
        };
        let mut ranks = threads::group(2);
        let (late, early) = (ranks.pop().unwrap(), ranks.pop().unwrap());
        let late_tx = tx.clone();
        let t = std::thread::spawn(move || {
            let mut late = watched(late, late_tx);
            // Both ranks arrive together: a sum, with nothing reported.
            let mut b = [2.0f32];
            late.all_reduce_sum(&mut b).unwrap();
            assert_eq!(b, [3.0]);
            // Then this rank is late, for far longer than the timeout, at the next collective.
            std::thread::sleep(Duration::from_millis(2500));
            late.barrier().unwrap();
            // Closing the watchdog ends its thread (the join in Drop returns).
        });
        let mut early = watched(early, tx);
        let mut a = [1.0f32];
        early.all_reduce_sum(&mut a).unwrap();
        assert_eq!(a, [3.0]);
        early.barrier().unwrap();
        t.join().unwrap();
        drop(early);
        let said: Vec<String> = rx.try_iter().collect();
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].starts_with("rank 0 of 2: barrier (this rank's collective #2) has waited"), "{}", said[0]);
        assert!(said[0].contains("TRM_COLLECTIVE_TIMEOUT=1)"), "{}", said[0]);
    }
}
