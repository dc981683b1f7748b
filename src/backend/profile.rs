//! Where a step's time goes, from libtorch's profiler (`trm bench --profile`): kernel time and
//! launches per step by kind, the busiest kernels, and the operators called per step. The kernel
//! figures are computed as the reference's `bench/reference_step.py --profile` computes them, so
//! that the two compare; the operator lists differ (here sorted by calls, with inclusive CPU
//! time; there by self device time).
//! The profiler itself is C++ (src/backend/torch_profiler.cpp); this module reads the events it
//! writes, one per line: activity, device type, duration in ns, name.

use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The kind of a GPU kernel, read off its name; the first match wins (attention first: fused
/// attention kernels' names hold "cutlass"). The same table as bench/reference_step.py's.
const KERNEL_KINDS: &[(&str, &[&str])] = &[
    ("attention", &["flash", "fmha", "attention", "sdpa"]),
    ("matmul", &["gemm", "cutlass", "xmma", "nvjet", "cublas", "sm90_", "sm80_"]),
    ("reduction", &["reduce", "softmax", "norm", "cumsum"]),
    ("copy", &["memcpy", "memset", "copy", "catarray", "transpose"]),
    ("elementwise", &["elementwise", "vectorized", "unrolled", "triton_", "foreach"]),
];

pub fn kernel_kind(name: &str) -> &'static str {
    let low = name.to_lowercase();
    KERNEL_KINDS.iter().find(|(_, keys)| keys.iter().any(|k| low.contains(k))).map_or("other", |(kind, _)| kind)
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KindTotal {
    pub s_per_step: f64,
    pub launches_per_step: f64,
    pub share: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Kernel {
    pub name: String,
    pub kind: &'static str,
    pub s_per_step: f64,
    pub launches_per_step: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Op {
    pub op: String,
    pub calls_per_step: f64,
    /// Wall time inside the operator on the CPU, nested operators included.
    pub cpu_s_per_step: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Profile {
    pub steps: usize,
    pub wall_s_per_step_profiled: f64,
    /// Operators (`aten::*`, nested ones counted too) called per step.
    pub ops_per_step: f64,
    /// GPU kernels (and copies) per step, their time, and that time over the wall time; absent
    /// without a GPU.
    pub kernels_per_step: Option<f64>,
    pub kernel_s_per_step: Option<f64>,
    pub gpu_busy_share: Option<f64>,
    pub kernel_kinds: BTreeMap<&'static str, KindTotal>,
    pub top_kernels: Vec<Kernel>,
    pub top_ops: Vec<Op>,
}

/// libkineto's activity types (`libkineto::ActivityType`) that trm reads.
const CPU_OP: u32 = 0;
const GPU_MEMCPY: u32 = 3;
const GPU_MEMSET: u32 = 4;
const CONCURRENT_KERNEL: u32 = 5;

/// Summarises the events file of `steps` profiled steps that took `wall_s` in all.
pub fn summarise(events: &Path, steps: usize, wall_s: f64) -> Result<Profile> {
    let text = std::fs::read_to_string(events).with_context(|| format!("reading the profiler's events {}", events.display()))?;
    summarise_text(&text, steps, wall_s).with_context(|| format!("profiler events {}", events.display()))
}

pub fn summarise_text(text: &str, steps: usize, wall_s: f64) -> Result<Profile> {
    anyhow::ensure!(steps > 0, "no profiled step");
    let n = steps as f64;
    let (mut kernels, mut ops): (BTreeMap<&str, (f64, usize)>, BTreeMap<&str, (f64, usize)>) = Default::default();
    for (i, line) in text.lines().enumerate() {
        let mut f = line.splitn(4, '\t');
        let field = |v: Option<&str>, what: &str| -> Result<u64> {
            v.and_then(|s| s.parse().ok()).with_context(|| format!("line {}: no {what} in `{line}`", i + 1))
        };
        let activity = field(f.next(), "activity")? as u32;
        let _device = field(f.next(), "device type")?;
        let secs = field(f.next(), "duration")? as f64 * 1e-9;
        let name = f.next().unwrap_or("");
        let into = match activity {
            GPU_MEMCPY | GPU_MEMSET | CONCURRENT_KERNEL => &mut kernels,
            CPU_OP if name.starts_with("aten::") => &mut ops,
            _ => continue,
        };
        let e = into.entry(name).or_default();
        e.0 += secs;
        e.1 += 1;
    }
    let wall = wall_s / n;
    let busy: f64 = kernels.values().map(|(t, _)| t).sum::<f64>() / n;
    let launches: usize = kernels.values().map(|(_, c)| c).sum();
    let mut kinds: BTreeMap<&'static str, KindTotal> = BTreeMap::new();
    for (name, (t, c)) in &kernels {
        let k = kinds.entry(kernel_kind(name)).or_insert(KindTotal { s_per_step: 0.0, launches_per_step: 0.0, share: 0.0 });
        k.s_per_step += t / n;
        k.launches_per_step += *c as f64 / n;
    }
    for k in kinds.values_mut() {
        k.share = if busy > 0.0 { k.s_per_step / busy } else { 0.0 };
    }
    let mut top_kernels: Vec<Kernel> = kernels
        .iter()
        .map(|(name, (t, c))| Kernel {
            name: name.chars().take(120).collect(),
            kind: kernel_kind(name),
            s_per_step: t / n,
            launches_per_step: *c as f64 / n,
        })
        .collect();
    top_kernels.sort_by(|a, b| b.s_per_step.total_cmp(&a.s_per_step));
    top_kernels.truncate(25);
    let mut top_ops: Vec<Op> =
        ops.iter().map(|(op, (t, c))| Op { op: op.to_string(), calls_per_step: *c as f64 / n, cpu_s_per_step: t / n }).collect();
    top_ops.sort_by(|a, b| b.calls_per_step.total_cmp(&a.calls_per_step));
    top_ops.truncate(25);
    let gpu = launches > 0;
    Ok(Profile {
        steps,
        wall_s_per_step_profiled: wall,
        ops_per_step: ops.values().map(|(_, c)| *c as f64).sum::<f64>() / n,
        kernels_per_step: gpu.then(|| launches as f64 / n),
        kernel_s_per_step: gpu.then_some(busy),
        gpu_busy_share: (gpu && wall > 0.0).then(|| busy / wall),
        kernel_kinds: kinds,
        top_kernels,
        top_ops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_and_operators_are_summed_per_step() {
        // Two steps: per step one matmul kernel (3 ms), one flash kernel (1 ms), one copy
        // (memcpy, 1 ms); two aten::mm calls; a non-aten CPU event and a runtime event skipped.
        let mut text = String::new();
        for _ in 0..2 {
            text += "5\t1\t3000000\tnvjet_sm90_tst_192x192\n";
            text += "5\t1\t1000000\tvoid pytorch_flash::flash_fwd_kernel<cutlass::bfloat16_t>\n";
            text += "3\t1\t1000000\tMemcpy DtoD (Device -> Device)\n";
            text += "0\t0\t500000\taten::mm\n0\t0\t500000\taten::mm\n";
            text += "0\t0\t9000000\tProfilerStep#1\n7\t0\t10\tcudaLaunchKernel\n";
        }
        let p = summarise_text(&text, 2, 0.02).unwrap();
        assert_eq!(p.kernels_per_step, Some(3.0));
        assert!((p.kernel_s_per_step.unwrap() - 0.005).abs() < 1e-12);
        assert!((p.gpu_busy_share.unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(p.ops_per_step, 2.0);
        assert_eq!(p.top_ops[0].op, "aten::mm");
        assert_eq!(p.top_ops[0].calls_per_step, 2.0);
        let share = |k: &str| p.kernel_kinds[k].share;
        assert!((share("matmul") - 0.6).abs() < 1e-9 && (share("attention") - 0.2).abs() < 1e-9 && (share("copy") - 0.2).abs() < 1e-9);
        assert_eq!(p.top_kernels[0].kind, "matmul");
    }

    #[test]
    fn a_malformed_line_is_an_error_naming_it() {
        let e = summarise_text("5\tx\t1\tk\n", 1, 1.0).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        // Without GPU events there is no kernel figure.
        let p = summarise_text("0\t0\t1000\taten::add\n", 1, 1.0).unwrap();
        assert_eq!((p.kernels_per_step, p.gpu_busy_share, p.ops_per_step), (None, None, 1.0));
    }
}
