//! Every environment variable trm reads, in one place (listed in `trm --help` and README.md's
//! "Environment variables"; the distributed ones in docs/distributed.md). Behaviour is
//! otherwise chosen by command-line options.
//!
//! | variable | meaning |
//! |---|---|
//! | `RANK`, `WORLD_SIZE`, `LOCAL_RANK` | this process's rank, the number of ranks, its GPU on this node (torchrun, `trm launch`) |
//! | `MASTER_ADDR`, `MASTER_PORT` | where rank 0 hands out the NCCL id (default port 29500) |
//! | `TRM_RENDEZVOUS_PORT` | the port of that hand-off when not MASTER_PORT (default: MASTER_PORT + 1 under torchrun, whose own store holds MASTER_PORT) |
//! | `SLURM_PROCID`, `SLURM_STEP_NUM_TASKS`, `SLURM_LOCALID` | the same under `srun` (a step's tasks), when `RANK`/`WORLD_SIZE` are not set |
//! | `TRM_RENDEZVOUS_TIMEOUT` | seconds to wait for every rank to arrive (default 300) |
//! | `TRM_COLLECTIVE_TIMEOUT` | seconds one collective (NCCL) may wait for the other ranks before this rank reports it and ends, so that the ranks waiting for a dead or stalled rank end instead of hanging (default 1800; 0: no limit) |
//! | `TRM_RENDEZVOUS_TOKEN` | the launch's shared secret: rank 0 hands the NCCL id only to ranks that prove they hold it (`trm launch` makes a random one; on a shared cluster, set one per job). Unset: a token derived from the launch's environment (job id, MASTER_ADDR/PORT, WORLD_SIZE), which keeps launches apart but is no secret |
//! | `TORCHELASTIC_RUN_ID`, `SLURM_JOB_ID`, `SLURM_STEP_ID` | read, never required: under torchrun (`TORCHELASTIC_RUN_ID` set) the hand-off moves to MASTER_PORT + 1; all three go into the derived token below |
//! | `TRM_NCCL_LIB` | path of the NCCL library when it is only present as `libnccl.so.2` (`trm launch`) |
//! | `LD_LIBRARY_PATH` | `trm launch` puts a folder with `libnccl.so` (linked to `TRM_NCCL_LIB`) in front of it for its ranks |
//! | `TRM_CPU_BF16=1` | emulate bfloat16 forwards on the CPU instead of running them in float32 |
//! | `TRM_FUSED_CPU=0` | turn off the fused CPU transformer block (burn's ops instead) |
//! | `TRM_FUSED_TORCH=0` | turn off libtorch's fused block (each block's ops through burn's autodiff instead), for comparing the two |
//! | `TRM_FUSED_ATTENTION=0` | turn off libtorch's fused attention (SDPA; burn's generic QKᵀ, softmax, ·V instead), and with it the fused block of attention models, for comparing the two |
//! | `TRM_MALLOC_DEFAULT=1` | keep glibc's default malloc settings (thresholds, and arenas under a tight `ulimit -v`) |
//! | `MALLOC_ARENA_MAX`, `GLIBC_TUNABLES` | glibc's own; read only to see whether they set the malloc arenas: under a tight `ulimit -v` trm uses fewer arenas unless they do |
//! | `TRM_NO_FONT=1` | PNG charts without text |
//! | `CUBLAS_WORKSPACE_CONFIG` | cuBLAS's workspace layout; `--deterministic` on libtorch sets `:4096:8` (what deterministic cuBLAS needs) when it is unset, keeps `:4096:8` or `:16:8`, and refuses any other value |

use anyhow::{Context, Result, bail};

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `var` for the variables a launch reads: a value that is not UTF-8 is an error naming it, not
/// unset (read as unset, it made a rank train alone as rank 0).
fn launch_var(name: &str) -> Result<Option<String>> {
    match std::env::var(name) {
        Err(std::env::VarError::NotUnicode(v)) => {
            bail!("{name}={}: not text (bytes that are not UTF-8); set it to what the launcher means", v.to_string_lossy())
        }
        _ => Ok(var(name)),
    }
}

fn flag(name: &str, on: &str) -> bool {
    var(name).is_some_and(|v| v == on)
}

pub fn cpu_bf16() -> bool {
    flag("TRM_CPU_BF16", "1")
}

pub fn fused_cpu_off() -> bool {
    flag("TRM_FUSED_CPU", "0")
}

pub fn fused_torch_off() -> bool {
    flag("TRM_FUSED_TORCH", "0")
}

pub fn fused_attention_off() -> bool {
    flag("TRM_FUSED_ATTENTION", "0")
}

pub fn malloc_default() -> bool {
    flag("TRM_MALLOC_DEFAULT", "1")
}

/// The user set glibc's malloc arenas (`MALLOC_ARENA_MAX`, or `glibc.malloc.arena_max` in
/// `GLIBC_TUNABLES`); glibc reads the value, trm keeps it.
pub fn malloc_arenas_set() -> bool {
    arenas_set_by(var("MALLOC_ARENA_MAX").as_deref(), var("GLIBC_TUNABLES").as_deref())
}

/// Whether these values set glibc's arena count: a count of at least 1 (decimal, or 0x hex as
/// glibc's parser also takes), in `MALLOC_ARENA_MAX` or as the `glibc.malloc.arena_max` entry of
/// `GLIBC_TUNABLES` (`name=value` entries joined by `:`). glibc ignores 0, an empty value or a
/// word, so those leave the choice to trm.
fn arenas_set_by(malloc_arena_max: Option<&str>, tunables: Option<&str>) -> bool {
    let count = |v: &str| {
        let v = v.trim();
        let n = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => v.parse::<u64>().ok(),
        };
        n.is_some_and(|n| n >= 1)
    };
    malloc_arena_max.is_some_and(count)
        || tunables
            .is_some_and(|t| t.split(':').filter_map(|e| e.split_once('=')).any(|(k, v)| k.trim() == "glibc.malloc.arena_max" && count(v)))
}

pub fn no_font() -> bool {
    flag("TRM_NO_FONT", "1")
}

/// CUBLAS_WORKSPACE_CONFIG as `--deterministic` needs it on libtorch: set to `:4096:8` when
/// unset, kept when it is `:4096:8` or `:16:8` (the two values torch accepts then), refused
/// otherwise: torch would stop at the first matrix product. Returns the value in effect. Called
/// first thing by the commands that take `--deterministic`, while this process has no other
/// thread.
pub fn cublas_workspace_for_determinism() -> Result<String> {
    const NAME: &str = "CUBLAS_WORKSPACE_CONFIG";
    match std::env::var(NAME) {
        Ok(v) if v == ":4096:8" || v == ":16:8" => Ok(v),
        Ok(v) if !v.is_empty() => {
            bail!("--deterministic: {NAME}={v:?} is set, but deterministic cuBLAS needs :4096:8 or :16:8; unset it or set one of those")
        }
        _ => {
            // SAFETY: called before the command starts any thread (rayon, libtorch, the
            // interrupt handler), so nothing reads the environment concurrently.
            unsafe { std::env::set_var(NAME, ":4096:8") };
            Ok(":4096:8".into())
        }
    }
}

pub fn nccl_lib() -> Option<std::path::PathBuf> {
    var("TRM_NCCL_LIB").map(Into::into)
}

/// The dynamic loader's search path, which `trm launch` extends for its ranks when
/// `TRM_NCCL_LIB` is set.
pub fn library_path() -> Option<String> {
    var("LD_LIBRARY_PATH")
}

/// How long ranks wait for each other at start-up (`TRM_RENDEZVOUS_TIMEOUT`, seconds; default 300).
pub fn rendezvous_timeout() -> Result<std::time::Duration> {
    let limit = seconds("TRM_RENDEZVOUS_TIMEOUT", launch_var("TRM_RENDEZVOUS_TIMEOUT")?.as_deref(), 300.0, false)?;
    limit.context("TRM_RENDEZVOUS_TIMEOUT: no limit is not an option")
}

/// How long one collective of a multi-process run may wait for the other ranks before the rank
/// ends (`TRM_COLLECTIVE_TIMEOUT`, seconds; default 1800; 0: no limit).
pub fn collective_timeout() -> Result<Option<std::time::Duration>> {
    seconds("TRM_COLLECTIVE_TIMEOUT", launch_var("TRM_COLLECTIVE_TIMEOUT")?.as_deref(), 1800.0, true)
}

/// A duration in seconds from variable `name`'s `value` (`default` when unset): positive, or 0
/// for no limit (None) where `no_limit` allows it.
fn seconds(name: &str, value: Option<&str>, default: f64, no_limit: bool) -> Result<Option<std::time::Duration>> {
    let s = match value {
        None => default,
        Some(v) => v.trim().parse::<f64>().with_context(|| format!("{name}={v}: not a number of seconds"))?,
    };
    let shown = value.unwrap_or_default();
    if no_limit {
        anyhow::ensure!(s.is_finite() && s >= 0.0, "{name}={shown}: must be 0 (no limit) or a positive number of seconds");
    } else {
        anyhow::ensure!(s.is_finite() && s > 0.0, "{name}={shown}: must be a positive number of seconds");
    }
    if s == 0.0 {
        return Ok(None);
    }
    std::time::Duration::try_from_secs_f64(s).map(Some).map_err(|_| anyhow::anyhow!("{name}={shown}: too many seconds"))
}

/// Where this process sits in a multi-process run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    pub master_addr: String,
    /// The port rank 0 listens on for the hand-off of the NCCL id.
    pub master_port: u16,
    /// `torchrun` (RANK/WORLD_SIZE) or `slurm`.
    pub source: &'static str,
    /// The launch's shared secret for the hand-off (`TRM_RENDEZVOUS_TOKEN`, or derived).
    pub token: String,
}

/// The launch environment, or None for a plain single process (no WORLD_SIZE, RANK or LOCAL_RANK,
/// no srun step of several tasks).
/// `trm launch` and torchrun set `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`,
/// `MASTER_PORT`; under `srun`, `SLURM_PROCID`, `SLURM_STEP_NUM_TASKS` and `SLURM_LOCALID` stand
/// in for the first three (`SLURM_STEP_NUM_TASKS`, not `SLURM_NTASKS`: a batch script itself, run
/// once, also has `SLURM_NTASKS`). torchrun's own store listens on `MASTER_PORT`, so under torchrun
/// (`TORCHELASTIC_RUN_ID` set) the hand-off uses `MASTER_PORT + 1`; `TRM_RENDEZVOUS_PORT` overrides.
pub fn launch() -> Result<Option<Launch>> {
    // The first variable that is not text is named, whatever the reading made of it.
    let bad = std::cell::RefCell::new(None);
    let found = launch_from(&|name| {
        launch_var(name).unwrap_or_else(|e| {
            bad.borrow_mut().get_or_insert(e);
            None
        })
    });
    match bad.into_inner() {
        Some(e) => Err(e),
        None => found,
    }
}

/// The tasks of the srun step this process runs in, where it has several (`SLURM_STEP_NUM_TASKS`).
pub fn srun_tasks() -> Option<usize> {
    var("SLURM_STEP_NUM_TASKS").and_then(|v| v.trim().parse().ok()).filter(|&n| n > 1)
}

/// The most ranks a launch may name: far above any machine, below what the hand-off's per-rank
/// bookkeeping could not hold.
pub const MAX_WORLD: usize = 65_536;

/// `launch` over any variable source (tests).
pub fn launch_from(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
    let num = |name: &str| -> Result<Option<usize>> {
        get(name).map(|v| v.trim().parse::<usize>().with_context(|| format!("{name}={v}: not a non-negative integer"))).transpose()
    };
    let slurm_world = num("SLURM_STEP_NUM_TASKS")?.filter(|&w| w > 1); // a single srun task is a plain process
    let (rank, world, local, source) = if let Some(world) = num("WORLD_SIZE")? {
        let rank = num("RANK")?.context("WORLD_SIZE is set but RANK is not")?;
        // Inside an srun step of several tasks, torchrun variables that disagree with the step's
        // would train each task as a world of its own (torchrun under srun sets
        // TORCHELASTIC_RUN_ID, and its own numbering then holds).
        if let (Some(tasks), None) = (slurm_world, get("TORCHELASTIC_RUN_ID")) {
            let task = num("SLURM_PROCID")?;
            anyhow::ensure!(
                tasks == world && task.is_none_or(|t| t == rank),
                "WORLD_SIZE={world} RANK={rank} disagree with this srun step (SLURM_STEP_NUM_TASKS={tasks}{}): under srun, unset \
                 WORLD_SIZE and RANK (trm reads the step's own), or launch with torchrun",
                task.map_or(String::new(), |t| format!(", SLURM_PROCID={t}"))
            );
        }
        (rank, world, num("LOCAL_RANK")?.unwrap_or(rank), "torchrun")
    } else if let Some(world) = slurm_world {
        let rank = num("SLURM_PROCID")?.context("SLURM_STEP_NUM_TASKS is set but SLURM_PROCID is not")?;
        (rank, world, num("SLURM_LOCALID")?.unwrap_or(0), "slurm")
    } else if let Some(name) = ["RANK", "LOCAL_RANK"].into_iter().find(|n| get(n).is_some()) {
        // torchrun and `trm launch` set all three: a rank without a world size is a launch gone
        // wrong, and training on as a lone rank 0 would write over the run the real rank 0 writes.
        bail!(
            "{name} is set but WORLD_SIZE is not: set WORLD_SIZE to the number of ranks (torchrun and `trm launch` set both), \
             or unset {name} for a single process"
        );
    } else {
        return Ok(None);
    };
    let (world_var, rank_var) = if source == "slurm" { ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID") } else { ("WORLD_SIZE", "RANK") };
    anyhow::ensure!(world >= 1, "{world_var}=0: a launch has at least one rank");
    anyhow::ensure!(world <= MAX_WORLD, "{world_var}={world}: more ranks than trm takes ({MAX_WORLD})");
    if rank >= world {
        bail!("{rank_var}={rank} with {world_var}={world} ({source} environment): the rank must be below the world size");
    }
    let port = match get("MASTER_PORT") {
        None => 29500,
        Some(p) => p.trim().parse::<u16>().with_context(|| format!("MASTER_PORT={p}: not a port number"))?,
    };
    let port = match get("TRM_RENDEZVOUS_PORT") {
        Some(p) => p.trim().parse::<u16>().with_context(|| format!("TRM_RENDEZVOUS_PORT={p}: not a port number"))?,
        None if get("TORCHELASTIC_RUN_ID").is_some() => {
            port.checked_add(1).context("MASTER_PORT 65535 leaves no port for the hand-off: set TRM_RENDEZVOUS_PORT")?
        }
        None => port,
    };
    // Port 0 would have rank 0 listen on a port of the system's choosing that no other rank knows.
    anyhow::ensure!(
        world == 1 || port != 0,
        "MASTER_PORT / TRM_RENDEZVOUS_PORT is 0: every rank must know the port, so name one (1-65535)"
    );
    let addr = match get("MASTER_ADDR") {
        Some(a) => a,
        None if world == 1 => "127.0.0.1".into(),
        None => bail!(
            "{source} launch of {world} ranks without MASTER_ADDR: set it to the host of rank 0 (for Slurm: \
             export MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1))"
        ),
    };
    let token = match get("TRM_RENDEZVOUS_TOKEN") {
        Some(t) => t,
        None => {
            // Not a secret: every rank of one launch computes the same value, another launch
            // (another job, port or size) a different one.
            let parts = ["TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "SLURM_STEP_ID"].map(|k| get(k).unwrap_or_default());
            format!("derived:{}:{}:{}:{addr}:{port}:{world}", parts[0], parts[1], parts[2])
        }
    };
    Ok(Some(Launch { rank, world, local_rank: local, master_addr: addr, master_port: port, source, token }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn timeouts_read_as_seconds_with_clear_errors() {
        let secs = |v: Option<&str>, no_limit| seconds("TRM_X", v, 300.0, no_limit).map(|d| d.map(|d| d.as_secs_f64()));
        assert_eq!(secs(None, false).unwrap(), Some(300.0));
        assert_eq!(secs(Some(" 1.5 "), false).unwrap(), Some(1.5));
        assert_eq!(secs(Some("0"), true).unwrap(), None, "0: no limit");
        for (v, no_limit, want) in [
            ("0", false, "TRM_X=0: must be a positive number"),
            ("-1", true, "TRM_X=-1: must be 0 (no limit)"),
            ("inf", true, "TRM_X=inf: must be 0"),
            ("10m", true, "TRM_X=10m: not a number of seconds"),
            ("1e300", true, "TRM_X=1e300: too many seconds"),
        ] {
            let e = format!("{:#}", secs(Some(v), no_limit).unwrap_err());
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn only_a_count_glibc_takes_sets_the_arenas() {
        assert!(!arenas_set_by(None, None));
        for v in ["4", " 2 ", "0x10"] {
            assert!(arenas_set_by(Some(v), None), "MALLOC_ARENA_MAX={v}");
        }
        for v in ["0", "", "four", "-1"] {
            assert!(!arenas_set_by(Some(v), None), "MALLOC_ARENA_MAX={v}");
        }
        assert!(arenas_set_by(None, Some("glibc.malloc.check=3:glibc.malloc.arena_max=2")));
        assert!(arenas_set_by(None, Some("glibc.malloc.arena_max=1")));
        for t in ["glibc.malloc.arena_max=0", "glibc.malloc.arena_max=", "glibc.malloc.arena_test=2", "glibc.malloc.arena_max"] {
            assert!(!arenas_set_by(None, Some(t)), "GLIBC_TUNABLES={t}");
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Result<Option<Launch>> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        launch_from(&|k| m.get(k).cloned())
    }

    #[test]
    fn torchrun_and_slurm_environments() {
        assert_eq!(env(&[]).unwrap(), None);
        let l = env(&[("RANK", "3"), ("WORLD_SIZE", "8"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "node0"), ("MASTER_PORT", "1234")])
            .unwrap()
            .unwrap();
        assert_eq!((l.rank, l.world, l.local_rank, l.master_addr.as_str(), l.master_port, l.source), (3, 8, 1, "node0", 1234, "torchrun"));
        let l =
            env(&[("SLURM_PROCID", "5"), ("SLURM_STEP_NUM_TASKS", "16"), ("SLURM_LOCALID", "1"), ("MASTER_ADDR", "n1")]).unwrap().unwrap();
        assert_eq!((l.rank, l.world, l.local_rank, l.master_port, l.source), (5, 16, 1, 29500, "slurm"));
        assert_eq!(env(&[("SLURM_PROCID", "0"), ("SLURM_STEP_NUM_TASKS", "1")]).unwrap(), None);
        // Under srun, Slurm gives the world size: a LOCAL_RANK set beside it (by a job script) is
        // no launch gone wrong.
        assert_eq!(
            env(&[("SLURM_PROCID", "1"), ("SLURM_STEP_NUM_TASKS", "2"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "n")]).unwrap().unwrap().rank,
            1
        );
        // A batch script (SLURM_NTASKS, no srun step) is a plain process.
        assert_eq!(env(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "8")]).unwrap(), None);
        // torchrun under srun (TORCHELASTIC_RUN_ID set) numbers the ranks its own way; torchrun
        // variables that agree with the step are the step's.
        let step = [("SLURM_STEP_NUM_TASKS", "4"), ("SLURM_PROCID", "2"), ("MASTER_ADDR", "h")];
        let torchrun = [("RANK", "5"), ("WORLD_SIZE", "16"), ("TORCHELASTIC_RUN_ID", "j")];
        assert_eq!(env(&[&step[..], &torchrun].concat()).unwrap().unwrap().world, 16);
        assert_eq!(env(&[&step[..], &[("RANK", "2"), ("WORLD_SIZE", "4")]].concat()).unwrap().unwrap().rank, 2);
        // Without torchrun, variables that disagree with the step (a job script's WORLD_SIZE=1 under
        // srun -n4) would train each task as a world of its own: refused (they used to win).
        for (rank, world) in [("0", "1"), ("0", "4")] {
            let e = format!("{:#}", env(&[&step[..], &[("RANK", rank), ("WORLD_SIZE", world)]].concat()).unwrap_err());
            assert!(e.contains("disagree with this srun step (SLURM_STEP_NUM_TASKS=4, SLURM_PROCID=2)"), "{e}");
        }
        // under torchrun the hand-off avoids its store's port.
        let t = [("RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "29500"), ("TORCHELASTIC_RUN_ID", "x")];
        assert_eq!(env(&t).unwrap().unwrap().master_port, 29501);
        assert_eq!(env(&[t.as_slice(), &[("TRM_RENDEZVOUS_PORT", "4000")]].concat()).unwrap().unwrap().master_port, 4000);
        for (bad, want) in [
            (vec![("RANK", "2"), ("WORLD_SIZE", "2")], "RANK=2 with WORLD_SIZE=2 (torchrun environment): the rank must be below"),
            (vec![("SLURM_PROCID", "5"), ("SLURM_STEP_NUM_TASKS", "2")], "SLURM_PROCID=5 with SLURM_STEP_NUM_TASKS=2"),
            (vec![("RANK", "0"), ("WORLD_SIZE", "0")], "WORLD_SIZE=0: a launch has at least one rank"),
            (vec![("RANK", "0"), ("WORLD_SIZE", "1000000000000")], "more ranks than trm takes (65536)"),
            (vec![("WORLD_SIZE", "2")], "RANK is not"),
            (vec![("RANK", "1")], "RANK is set but WORLD_SIZE is not"),
            (vec![("LOCAL_RANK", "0"), ("SLURM_STEP_NUM_TASKS", "1")], "LOCAL_RANK is set but WORLD_SIZE is not"),
            (vec![("RANK", "x"), ("WORLD_SIZE", "2")], "RANK=x"),
            (vec![("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "a"), ("MASTER_PORT", "99999")], "MASTER_PORT"),
            (vec![("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "a"), ("MASTER_PORT", "0")], "is 0"),
            (vec![("SLURM_PROCID", "0"), ("SLURM_STEP_NUM_TASKS", "4")], "MASTER_ADDR"),
        ] {
            let e = format!("{:#}", env(&bad).unwrap_err());
            assert!(e.contains(want), "{bad:?}: {e}");
        }
    }
}
