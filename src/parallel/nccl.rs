//! NCCL through cudarc (loaded at run time, like the CUDA backend): one rank per process and GPU.
//! Rank 0 creates the unique id and hands it out (`rendezvous`); the communicator lives on
//! `cuda:LOCAL_RANK`. The buffers of a collective are copied to the GPU, reduced by NCCL and
//! copied back: the training loop's exchange works on host buffers (one call per bucket), the
//! same as the other reducers.

use super::Reducer;
use super::rendezvous;
use crate::util::env::Launch;
use anyhow::{Context, Result, anyhow};
use cudarc::driver::{CudaContext, CudaStream};
use cudarc::nccl::{Comm, Id, ReduceOp};
use std::sync::Arc;

pub struct NcclReducer {
    comm: Comm,
    stream: Arc<CudaStream>,
    rank: usize,
    world: usize,
}

/// A clear error when cudarc would not find the library (it panics otherwise).
fn check_library() -> Result<()> {
    // SAFETY: only tries to open the library under cudarc's candidate names.
    if unsafe { cudarc::nccl::sys::is_culib_present() } {
        return Ok(());
    }
    Err(anyhow!(
        "the NCCL library was not found under the names cudarc loads (libnccl.so and versioned variants; see docs/distributed.md). \
         If NCCL is installed only as libnccl.so.2 (the pip wheel nvidia-nccl-cu12 ships that name), make a link: \
         mkdir -p ~/.local/nccl && ln -s /path/to/libnccl.so.2 ~/.local/nccl/libnccl.so && export LD_LIBRARY_PATH=~/.local/nccl:$LD_LIBRARY_PATH \
         (or let `trm launch` do it: TRM_NCCL_LIB=/path/to/libnccl.so.2 trm launch ...)"
    ))
}

impl NcclReducer {
    /// Joins the communicator described by the launch environment.
    pub fn new(l: &Launch, timeout: std::time::Duration) -> Result<Self> {
        check_library()?;
        let ctx = CudaContext::new(l.local_rank).with_context(|| {
            format!(
                "rank {}: cannot open cuda:{} (LOCAL_RANK){}",
                l.rank,
                l.local_rank,
                if l.local_rank > 0 {
                    " (under Slurm with --gpus-per-task=1 or --gpu-bind, each task sees its one GPU as cuda:0: see docs/distributed.md)"
                } else {
                    ""
                }
            )
        })?;
        let stream = ctx.default_stream();
        let id = if l.rank == 0 { Some(Id::new().map_err(|e| anyhow!("ncclGetUniqueId: {e:?}"))?) } else { None };
        let bytes: Option<Vec<u8>> = id.map(|id| id.internal().iter().map(|&c| c as u8).collect());
        let got = rendezvous::exchange(l, bytes.as_deref(), timeout)?;
        anyhow::ensure!(got.len() == 128, "rendezvous: the NCCL id has {} bytes, not 128", got.len());
        let mut internal = [0 as std::ffi::c_char; 128];
        for (d, s) in internal.iter_mut().zip(&got) {
            *d = *s as std::ffi::c_char;
        }
        let comm = Comm::from_rank(stream.clone(), l.rank, l.world, Id::uninit(internal))
            .map_err(|e| anyhow!("rank {}: ncclCommInitRank over {} ranks failed: {e:?}", l.rank, l.world))?;
        Ok(NcclReducer { comm, stream, rank: l.rank, world: l.world })
    }

    fn sync(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| anyhow!("cuda stream: {e:?}"))
    }
}

impl Reducer for NcclReducer {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let mut d = self.stream.clone_htod(buf).map_err(|e| anyhow!("copy to GPU: {e:?}"))?;
        self.comm.all_reduce_in_place(&mut d, &ReduceOp::Sum).map_err(|e| anyhow!("ncclAllReduce: {e:?}"))?;
        self.stream.memcpy_dtoh(&d, buf).map_err(|e| anyhow!("copy from GPU: {e:?}"))?;
        self.sync()
    }
    fn all_gather(&mut self, local: &[f32]) -> Result<Vec<f32>> {
        let mut out = vec![0f32; local.len() * self.world];
        if local.is_empty() {
            return Ok(out);
        }
        let src = self.stream.clone_htod(local).map_err(|e| anyhow!("copy to GPU: {e:?}"))?;
        let mut dst = self.stream.alloc_zeros::<f32>(out.len()).map_err(|e| anyhow!("GPU alloc: {e:?}"))?;
        self.comm.all_gather(&src, &mut dst).map_err(|e| anyhow!("ncclAllGather: {e:?}"))?;
        self.stream.memcpy_dtoh(&dst, &mut out).map_err(|e| anyhow!("copy from GPU: {e:?}"))?;
        self.sync()?;
        Ok(out)
    }
    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let mut d = self.stream.clone_htod(buf).map_err(|e| anyhow!("copy to GPU: {e:?}"))?;
        self.comm.broadcast_in_place(&mut d, root as i32).map_err(|e| anyhow!("ncclBroadcast: {e:?}"))?;
        self.stream.memcpy_dtoh(&d, buf).map_err(|e| anyhow!("copy from GPU: {e:?}"))?;
        self.sync()
    }
    fn barrier(&mut self) -> Result<()> {
        let mut one = [0f32];
        self.all_reduce_sum(&mut one)
    }
}
