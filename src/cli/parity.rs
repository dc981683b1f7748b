//! `trm parity DIR`: golden-fixture comparison against the reference PyTorch code.

/// `trm parity --help`: what is compared and how the tolerances are set.
pub const LONG_ABOUT: &str = "\
Replays a golden fixture made by the reference PyTorch code (shared/fixtures, tests/fixtures, or
bench/make_fixture.py for any architecture and size) and compares every expected tensor.

Rules (error and tolerance relative to the tensor's max |expected| unless said otherwise):
- forward tensors: 10x the fixture's float32-vs-float64 noise floor at that call, at least 1e-5
  (1e-5 at call 1 and 1e-4 later where the fixture lists no floor);
- logits and Q logits: at least what the answer state's tolerance allows through the head
  (max row L1 norm of the head weight x tol_state x max|state| / max|out|);
- gradients 1e-4; optimiser results 1e-6 absolute; halting, steps, predictions and integer
  metrics exact;
- losses inherit the tolerance of their inputs: with logits within d (max-norm) each
  log-probability moves by at most 2d, so lm_loss (a sum over B rows of per-row means) by 2Bd;
  a BCE sum by B x d_q, plus B x max|q| x d_target for the bootstrapped continue target;
  total = lm + 0.5 (q_halt + q_continue). The bound relative to |expected| is the tolerance
  (at least 1e-6).
Exit code 1 on any mismatch or any expected tensor left unchecked.";

use crate::backend::DeviceSpec;
use crate::eval::parity;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ParityArgs {
    /// Fixture folder (weights.safetensors, batch.safetensors, expected.safetensors, config.json)
    pub dir: PathBuf,
    /// Print only failures and the summary
    #[arg(long)]
    pub quiet: bool,
    /// Print each stage and the time so far to stderr (a new device compiles kernels as it goes)
    #[arg(long)]
    pub progress: bool,
    /// cpu, torch-cpu, cuda[:N] (libtorch), cubecl[:N] or cubecl-unfused[:N] (float32: the fixtures' precision; a new backend's first check)
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
}

pub fn run(a: ParityArgs) -> Result<()> {
    let checks =
        crate::with_backend!(a.device, B, device => parity::run_with_progress::<burn::backend::Autodiff<B>>(&a.dir, &device, a.progress)?);
    let failed: Vec<&parity::Check> = checks.iter().filter(|c| !c.ok()).collect();
    for c in &checks {
        if !a.quiet || !c.ok() {
            println!("{:<4} {:<60} {:>10.3e}  tol {:>8.1e}  {}", if c.ok() { "ok" } else { "FAIL" }, c.name, c.error, c.tolerance, c.mode);
        }
    }
    let worst = checks.iter().filter(|c| c.tolerance > 0.0).map(|c| c.error / c.tolerance).fold(0.0, f64::max);
    println!("{} tensors compared, {} failed; worst error/tolerance ratio {worst:.3}", checks.len(), failed.len());
    if !failed.is_empty() {
        anyhow::bail!("{} of {} tensors exceed their tolerance", failed.len(), checks.len());
    }
    Ok(())
}
