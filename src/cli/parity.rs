//! `trm parity DIR`: golden-fixture comparison against the reference PyTorch code.

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
}

pub fn run(a: ParityArgs) -> Result<()> {
    type AD = burn::backend::Autodiff<burn::backend::Flex>;
    let checks = parity::run::<AD>(&a.dir, &Default::default())?;
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
