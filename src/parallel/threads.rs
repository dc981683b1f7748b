//! In-process ranks on threads: each collective deposits every rank's buffer, waits for all of
//! them, and computes the result in rank order, so every rank sees the same bits. For CPU tests
//! of the multi-rank training loop and for experiments; real multi-GPU runs use NCCL.
//!
//! A rank that leaves the group (its reducer dropped: the thread returned or panicked) wakes the
//! others with an error at their next wait, so a failing rank makes a test fail, not hang.

use super::Reducer;
use anyhow::{Result, bail};
use std::sync::{Arc, Condvar, Mutex};

/// A reusable barrier that a departing rank breaks.
struct Gate {
    /// (ranks arrived in this round, round number, ranks gone)
    state: Mutex<(usize, u64, usize)>,
    cv: Condvar,
}

impl Gate {
    fn wait(&self, world: usize) -> Result<()> {
        let mut st = self.state.lock().unwrap();
        if st.2 > 0 {
            bail!("a rank of the in-process group has stopped");
        }
        let round = st.1;
        st.0 += 1;
        if st.0 == world {
            (st.0, st.1) = (0, round + 1);
            self.cv.notify_all();
            return Ok(());
        }
        while st.1 == round && st.2 == 0 {
            st = self.cv.wait(st).unwrap();
        }
        if st.1 == round {
            bail!("a rank of the in-process group stopped while the others waited for it");
        }
        Ok(())
    }

    fn leave(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.2 += 1;
        self.cv.notify_all();
    }
}

struct Group {
    gate: Gate,
    slots: Mutex<Vec<Vec<f32>>>,
}

/// One rank of an in-process group.
pub struct ThreadReducer {
    rank: usize,
    world: usize,
    group: Arc<Group>,
}

/// The `world` ranks of a new group; hand one to each thread.
pub fn group(world: usize) -> Vec<ThreadReducer> {
    assert!(world >= 1, "a group needs at least one rank");
    let group = Arc::new(Group { gate: Gate { state: Mutex::new((0, 0, 0)), cv: Condvar::new() }, slots: Mutex::new(vec![vec![]; world]) });
    (0..world).map(|rank| ThreadReducer { rank, world, group: group.clone() }).collect()
}

impl ThreadReducer {
    /// Every rank's buffer, in rank order.
    fn exchange(&mut self, local: &[f32]) -> Result<Vec<Vec<f32>>> {
        self.group.slots.lock().unwrap()[self.rank] = local.to_vec();
        self.group.gate.wait(self.world)?;
        let all = self.group.slots.lock().unwrap().clone();
        // Nobody writes the next collective's buffer before everyone has read this one's.
        self.group.gate.wait(self.world)?;
        Ok(all)
    }
}

impl Drop for ThreadReducer {
    fn drop(&mut self) {
        self.group.gate.leave();
    }
}

impl Reducer for ThreadReducer {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<()> {
        let all = self.exchange(buf)?;
        anyhow::ensure!(all.iter().all(|b| b.len() == buf.len()), "all_reduce: ranks passed buffers of different lengths");
        for (i, v) in buf.iter_mut().enumerate() {
            *v = all.iter().fold(0.0f32, |s, b| s + b[i]);
        }
        Ok(())
    }
    fn all_gather(&mut self, local: &[f32]) -> Result<Vec<f32>> {
        let all = self.exchange(local)?;
        anyhow::ensure!(all.iter().all(|b| b.len() == local.len()), "all_gather: ranks passed buffers of different lengths");
        Ok(all.concat())
    }
    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<()> {
        let all = self.exchange(buf)?;
        buf.copy_from_slice(&all[root]);
        Ok(())
    }
    fn barrier(&mut self) -> Result<()> {
        self.group.gate.wait(self.world)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collectives_agree_on_every_rank() {
        let out: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = group(3)
                .into_iter()
                .map(|mut r| {
                    s.spawn(move || {
                        let k = r.rank() as f32;
                        let mut sum = vec![k, 1.0];
                        r.all_reduce_sum(&mut sum).unwrap();
                        let gathered = r.all_gather_i32(&[r.rank() as i32 * 10, -1]).unwrap();
                        let mut b = vec![k; 2];
                        r.broadcast(&mut b, 2).unwrap();
                        r.barrier().unwrap();
                        (sum, gathered, b)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (sum, gathered, b) in out {
            assert_eq!(sum, vec![3.0, 3.0]);
            assert_eq!(gathered, vec![0, -1, 10, -1, 20, -1]);
            assert_eq!(b, vec![2.0, 2.0]);
        }
    }

    #[test]
    fn a_rank_that_stops_fails_the_others_instead_of_hanging() {
        let errs: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = group(3)
                .into_iter()
                .map(|mut r| {
                    s.spawn(move || {
                        if r.rank() == 1 {
                            return String::new(); // leaves the group (its reducer is dropped)
                        }
                        let mut v = [1.0f32];
                        format!("{:#}", r.all_reduce_sum(&mut v).unwrap_err())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(errs[0].contains("stopped") && errs[2].contains("stopped"), "{errs:?}");
    }
}
