//! In-process ranks on threads: each collective deposits every rank's buffer, waits for all of
//! them, and computes the result in rank order, so every rank sees the same bits. For CPU tests
//! of the multi-rank training loop and for experiments; real multi-GPU runs use NCCL.

use super::Reducer;
use anyhow::Result;
use std::sync::{Arc, Barrier, Mutex};

struct Group {
    barrier: Barrier,
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
    let group = Arc::new(Group { barrier: Barrier::new(world), slots: Mutex::new(vec![vec![]; world]) });
    (0..world).map(|rank| ThreadReducer { rank, world, group: group.clone() }).collect()
}

impl ThreadReducer {
    /// Every rank's buffer, in rank order.
    fn exchange(&mut self, local: &[f32]) -> Vec<Vec<f32>> {
        self.group.slots.lock().unwrap()[self.rank] = local.to_vec();
        self.group.barrier.wait();
        let all = self.group.slots.lock().unwrap().clone();
        // Nobody writes the next collective's buffer before everyone has read this one's.
        self.group.barrier.wait();
        all
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
        let all = self.exchange(buf);
        anyhow::ensure!(all.iter().all(|b| b.len() == buf.len()), "all_reduce: ranks passed buffers of different lengths");
        for (i, v) in buf.iter_mut().enumerate() {
            *v = all.iter().fold(0.0f32, |s, b| s + b[i]);
        }
        Ok(())
    }
    fn all_gather(&mut self, local: &[f32]) -> Result<Vec<f32>> {
        let all = self.exchange(local);
        anyhow::ensure!(all.iter().all(|b| b.len() == local.len()), "all_gather: ranks passed buffers of different lengths");
        Ok(all.concat())
    }
    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<()> {
        let all = self.exchange(buf);
        buf.copy_from_slice(&all[root]);
        Ok(())
    }
    fn barrier(&mut self) -> Result<()> {
        self.group.barrier.wait();
        Ok(())
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
}
