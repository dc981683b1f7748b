//! `trm launch --nproc N -- train ...`: starts N ranks of `trm train` on this machine, one per
//! GPU, with the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT),
//! and waits for them. A rank that fails stops the others (SIGTERM, then SIGKILL after a grace
//! period). Ctrl-C or SIGTERM to the launcher is passed on as one SIGTERM per rank, so each
//! finishes its step and rank 0 writes a checkpoint; a second one, as SIGKILL. A launcher that is
//! killed or loses its terminal stops its ranks as a Ctrl-C does (Linux's parent-death signal).
//! For several machines use torchrun or srun (docs/distributed.md).

use anyhow::{Context, Result, bail};
use clap::builder::TypedValueParser as _;
use std::process::{Child, Command};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct LaunchArgs {
    /// Ranks to start on this machine (one per GPU; at most 256)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256).map(|v| v as usize))]
    pub nproc: usize,
    /// Port rank 0 hands out the NCCL id on [default: a free port]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub master_port: Option<u16>,
    /// The command each rank runs: `train ...` (with --device cuda)
    #[arg(last = true, required = true, value_name = "train ARGS")]
    pub command: Vec<String>,
}

/// Why a launch cannot work, before anything starts.
fn check(a: &LaunchArgs) -> Result<()> {
    if a.command.first().map(String::as_str) != Some("train") {
        bail!("trm launch runs `train` ranks: trm launch --nproc {} -- train --device cuda ...", a.nproc);
    }
    // One launch per task of a multi-task step would start that many separate worlds.
    if let Some(tasks) = crate::util::env::srun_tasks() {
        bail!(
            "trm launch starts the ranks of one machine, and this srun step runs {tasks} tasks, each of which would start a world \
             of its own: run `srun ... trm train --device cuda ...` instead (trm reads the step's SLURM_PROCID and \
             SLURM_STEP_NUM_TASKS), or one trm launch in a step of one task"
        );
    }
    let device = a.command.iter().position(|x| x == "--device").and_then(|i| a.command.get(i + 1)).map(String::as_str);
    let device = a.command.iter().find_map(|x| x.strip_prefix("--device=")).or(device).unwrap_or("cpu");
    let spec: crate::backend::DeviceSpec = device.parse().map_err(anyhow::Error::msg)?;
    if spec.gpu().is_none() {
        bail!(
            "trm launch starts one rank per GPU, and ranks talk through NCCL, which needs CUDA GPUs: pass --device cuda to train \
             (this command trains on `{device}`). On the CPU, run `trm train` without a launcher: one process already uses every core"
        );
    }
    if device.contains(':') {
        bail!("--device {device}: each rank uses GPU LOCAL_RANK; pass the device without an index (--device cuda)");
    }
    if cfg!(not(target_os = "linux")) {
        bail!("trm launch starts ranks that talk through NCCL, which exists only on Linux: run multi-GPU training on Linux");
    }
    if !spec.built() {
        return Err(crate::backend::not_built(spec));
    }
    // One rank per GPU: every rank's GPU must be there (a rank that cannot open its GPU would
    // leave the others waiting for it).
    #[cfg(feature = "libtorch")]
    if matches!(spec, crate::backend::DeviceSpec::Cuda(_)) {
        crate::backend::torch::check_cuda(a.nproc - 1).with_context(|| format!("trm launch --nproc {}: one rank per GPU", a.nproc))?;
    }
    Ok(())
}

/// A folder with `libnccl.so` pointing at `TRM_NCCL_LIB`, for the ranks' LD_LIBRARY_PATH (cudarc
/// does not look for the pip wheel's `libnccl.so.2`).
fn nccl_link_dir() -> Result<Option<std::path::PathBuf>> {
    let Some(lib) = crate::util::env::nccl_lib() else { return Ok(None) };
    anyhow::ensure!(lib.is_file(), "TRM_NCCL_LIB={}: no such file", lib.display());
    let dir = std::env::temp_dir().join(format!("trm-nccl-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let link = dir.join("libnccl.so");
    std::fs::remove_file(&link).ok();
    #[cfg(unix)]
    std::os::unix::fs::symlink(std::path::absolute(&lib)?, &link).with_context(|| format!("cannot link {}", link.display()))?;
    Ok(Some(dir))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// SIGTERM to every rank (each then finishes its step and rank 0 checkpoints); SIGKILL with
/// `hard` (a rank stuck in a collective whose peer died cannot finish its step).
fn terminate(children: &mut [(usize, Child)], hard: bool) {
    for (_, c) in children.iter_mut() {
        #[cfg(unix)]
        if !hard {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            continue;
        }
        let _ = hard;
        c.kill().ok();
    }
}

/// Ends the ranks started so far, at once (the launch failed before they could work).
fn abandon(children: &mut Vec<(usize, Child)>, link: Option<&std::path::Path>) {
    terminate(children, true);
    for (_, c) in children.iter_mut() {
        c.wait().ok();
    }
    children.clear();
    if let Some(dir) = link {
        std::fs::remove_dir_all(dir).ok();
    }
}

/// The launcher's own line on standard error. Never a panic: after its terminal closed (SIGHUP,
/// a stop it passes on) a write fails, and the launcher must stay to wait for its ranks.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

/// Seconds the ranks get to stop by themselves after a rank failed, before SIGKILL.
const GRACE_S: u64 = 60;

/// `s` as a shell reads it back: as is when plain, else single-quoted.
fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_./=:,@%+-".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The command that continues an interrupted launch: the launch's own, resumed (`--resume` right
/// after `train`, so that it is never taken for an override), without what a resumed run refuses
/// or does not read (`--init-from`, `load_checkpoint=`, `--config`).
fn resume_command(a: &LaunchArgs) -> String {
    let mut words = vec!["train".to_string(), "--resume".to_string()];
    let mut args = a.command.iter().skip(1);
    while let Some(w) = args.next() {
        let loads = |w: &str| w.trim_start_matches(['+', '~']).starts_with("load_checkpoint=");
        // A flag whose value goes too (`--set load_checkpoint=...` included).
        if w == "--init-from" || w == "--config" || (w == "--set" && args.clone().next().is_some_and(|v| loads(v))) {
            args.next();
        } else if !(w == "--resume"
            || w.starts_with("--init-from=")
            || w.starts_with("--config=")
            || loads(w)
            || w.strip_prefix("--set=").is_some_and(loads))
        {
            words.push(shell_word(w));
        }
    }
    let port = a.master_port.map(|p| format!(" --master-port {p}")).unwrap_or_default();
    format!("trm launch --nproc {}{port} -- {}", a.nproc, words.join(" "))
}

pub fn run(a: LaunchArgs) -> Result<()> {
    check(&a)?;
    // Signals are passed on to the ranks, never the launcher's end alone (that would leave them
    // running): the first as one SIGTERM each, a later one as SIGKILL.
    crate::util::interrupt::install_passing_on()?;
    let exe = std::env::current_exe().context("cannot find the trm executable")?;
    let port = match a.master_port {
        Some(p) => p,
        None => free_port()?,
    };
    let link = nccl_link_dir()?;
    // The launch's shared secret: only its own ranks get the NCCL id from rank 0.
    let token: String = {
        use rand::Rng;
        let mut r = rand::rng();
        (0..32).map(|_| format!("{:x}", r.random_range(0..16u8))).collect()
    };
    #[cfg(target_os = "linux")]
    let launcher = std::process::id();
    let mut children = Vec::new();
    for rank in 0..a.nproc {
        let mut c = Command::new(&exe);
        // Their own process group: a terminal's Ctrl-C reaches only the launcher, which passes on
        // one SIGTERM (two signals would make a rank exit without its checkpoint).
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        // A launcher that ends any other way (killed, its terminal closed) stops its ranks: each
        // gets SIGTERM, finishes its step and rank 0 writes a checkpoint.
        #[cfg(target_os = "linux")]
        // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut c, move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() as u32 != launcher {
                    return Err(std::io::Error::other("the launcher ended before the rank started"));
                }
                Ok(())
            });
        }
        c.args(&a.command)
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", a.nproc.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("TRM_RENDEZVOUS_TOKEN", &token)
            // The port is the launcher's (`--master-port` or a free one): a rendezvous port
            // or a torchrun marker left in the shell would move it.
            .env_remove("TRM_RENDEZVOUS_PORT")
            .env_remove("TORCHELASTIC_RUN_ID");
        if let Some(dir) = &link {
            let path = match crate::util::env::library_path() {
                Some(old) => format!("{}:{old}", dir.display()),
                None => dir.display().to_string(),
            };
            c.env("LD_LIBRARY_PATH", path);
        }
        match c.spawn() {
            Ok(child) => children.push((rank, child)),
            Err(e) => {
                abandon(&mut children, link.as_deref());
                return Err(e).with_context(|| format!("cannot start rank {rank}"));
            }
        }
    }
    let stops = || if crate::util::interrupt::requested() { 1 + crate::util::interrupt::repeated() } else { 0 };
    let ended = supervise(&mut children, &stops, Duration::from_secs(GRACE_S));
    if ended.is_err() {
        abandon(&mut children, None);
    }
    if let Some(dir) = link {
        std::fs::remove_dir_all(dir).ok();
    }
    let resume = resume_command(&a);
    match ended? {
        Ended::Failed(rank, status) if status.code() == Some(crate::util::interrupt::EXIT_CODE) => {
            Err(crate::util::interrupt::Interrupted(format!("rank {rank} was interrupted; continue with `{resume}`")).into())
        }
        Ended::Failed(rank, status) if status.code().is_none() => bail!(
            "rank {rank} was killed ({status}) without an error of its own: by the system's out-of-memory killer (see `dmesg`), \
             or by a signal from outside the launch"
        ),
        Ended::Failed(rank, status) => bail!("rank {rank} failed ({status}); see its error above"),
        Ended::Stopped { rank0_checkpointed: true } => {
            Err(crate::util::interrupt::Interrupted(format!("stopped: rank 0 wrote a checkpoint; continue with `{resume}`")).into())
        }
        Ended::Stopped { rank0_checkpointed: false } => Err(crate::util::interrupt::Interrupted(format!(
            "stopped at once, without a checkpoint of this step: the run's last checkpoint (if it has one) stands; continue with \
             `{resume}` (or start the run again if it has none)"
        ))
        .into()),
        Ended::Done => Ok(()),
    }
}

/// How the ranks ended.
#[derive(Debug, PartialEq)]
enum Ended {
    /// All of them well.
    Done,
    /// The first that failed (the others were then stopped).
    Failed(usize, std::process::ExitStatus),
    /// As a stop asked (`rank0_checkpointed`: rank 0 ended with the interrupt's code, so it wrote
    /// a checkpoint).
    Stopped { rank0_checkpointed: bool },
}

/// Waits for every rank. `stops` says how many stops were asked for so far: the first is passed on
/// as one SIGTERM per rank, the second as SIGKILL. A rank that fails has the others get SIGTERM,
/// and SIGKILL after `grace`. An error (a rank that cannot be waited for) leaves the ranks still
/// running in `children`.
fn supervise(children: &mut Vec<(usize, Child)>, stops: &dyn Fn() -> u64, grace: Duration) -> Result<Ended> {
    let mut failed: Option<(usize, std::process::ExitStatus)> = None;
    let (mut stopped, mut rank0_checkpointed) = (false, false);
    // Stops passed on to the ranks: 1, one SIGTERM each; 2, SIGKILL.
    let mut passed_on = 0;
    let mut since: Option<std::time::Instant> = None;
    while !children.is_empty() {
        let asked = stops();
        if asked > passed_on && passed_on < 2 {
            if let (0, Some((rank, _))) = (passed_on, failed) {
                // The ranks got their SIGTERM when a rank failed: this stop is that one.
                say!(
                    "trm launch: the ranks are already stopping after rank {rank}'s failure (a second Ctrl-C, a second or more later, \
                     kills them)"
                );
            } else {
                terminate(children, passed_on == 1);
                if passed_on == 0 {
                    say!(
                        "trm launch: stopping: each rank finishes its step, then rank 0 writes a checkpoint (a second Ctrl-C, a second or \
                         more later, stops them at once)"
                    );
                }
            }
            passed_on += 1;
        }
        if since.is_some_and(|t| t.elapsed() > grace) {
            // A rank whose collective timed out (parallel::watchdog) fails while the rank that
            // stalled runs on: name the ones still running, as the stalled one is among them.
            let running: Vec<String> = children.iter().map(|(r, _)| r.to_string()).collect();
            say!(
                "trm launch: rank(s) {} still running {} s after the failure (a rank that stalled would be among them); killing them",
                running.join(", "),
                grace.as_secs()
            );
            terminate(children, true);
            since = None;
        }
        let mut i = 0;
        while i < children.len() {
            let Some(status) = children[i].1.try_wait().context("cannot wait for the ranks")? else {
                i += 1;
                continue;
            };
            let (rank, _) = children.remove(i);
            // After a stop (passed on, or a job manager's that reached the ranks first), a rank
            // that ends with the interrupt's code, or by the signal the stop sends (SIGTERM
            // before its handler was installed; SIGKILL after a second stop), is stopping as
            // asked; one that ends well has finished; anything else is a failure. Rank 0 ending
            // with 130 wrote its checkpoint; ending well, its final one.
            let code_130 = status.code() == Some(crate::util::interrupt::EXIT_CODE);
            if (passed_on > 0 || stops() > 0) && (code_130 || stop_signal(&status, passed_on)) {
                stopped = true;
                rank0_checkpointed |= rank == 0 && code_130;
            } else if status.success() {
                rank0_checkpointed |= rank == 0;
            } else if failed.is_none() {
                failed = Some((rank, status));
                say!("trm launch: rank {rank} ended with {status}; stopping the others");
                // Not when a stop was passed on: they have their SIGTERM, and a second one, a
                // second or more later, would end them at once (rank 0 in its checkpoint).
                if passed_on == 0 {
                    terminate(children, false);
                }
                since = Some(std::time::Instant::now());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(match failed {
        Some((rank, status)) => Ended::Failed(rank, status),
        None if stopped => Ended::Stopped { rank0_checkpointed },
        None => Ended::Done,
    })
}

/// A rank ended by the signal a stop sends: SIGTERM (before the rank installed its handler), or
/// SIGKILL once a second stop was passed on.
fn stop_signal(status: &std::process::ExitStatus, passed_on: u64) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        status.signal().is_some_and(|s| s == libc::SIGTERM || (passed_on > 1 && s == libc::SIGKILL))
    }
    #[cfg(not(unix))]
    {
        let _ = (status, passed_on);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &[&str]) -> LaunchArgs {
        LaunchArgs { nproc: 2, master_port: None, command: cmd.iter().map(|s| s.to_string()).collect() }
    }

    /// Ranks played by shells: `on_term` is what one does on SIGTERM (`exit 130`, as trm after
    /// its checkpoint; `''`, ignore it), `then` what it does after a moment.
    #[cfg(unix)]
    fn ranks(parts: &[(&str, &str)]) -> Vec<(usize, Child)> {
        parts
            .iter()
            .enumerate()
            .map(|(rank, (on_term, then))| {
                // Bounded (about 15 s), so that a launcher that fails to stop them fails the test
                // instead of hanging it.
                let script =
                    format!("trap {on_term} TERM; sleep 0.8; {then}; n=0; while [ $n -lt 300 ]; do sleep 0.05; n=$((n+1)); done; exit 99");
                (rank, Command::new("sh").args(["-c", &script]).spawn().unwrap())
            })
            .collect()
    }

    /// The launcher's supervision, on ranks played by shells: a stop is passed on and the ranks
    /// that end as asked are no failure; a second stop kills; a failure stops the others, and
    /// kills after the grace period those that do not stop; a rank killed by anything other than
    /// the stop's own signal is a failure even during a stop.
    #[cfg(unix)]
    #[test]
    fn the_launcher_passes_stops_on_and_tells_a_stop_from_a_failure() {
        use std::os::unix::process::ExitStatusExt;
        use std::time::Instant;
        // The n-th stop asked for `ms[n]` milliseconds after the call (the shells set their trap
        // long before the first).
        let after = |ms: &[u64]| {
            let (ms, t0) = (ms.to_vec(), Instant::now());
            move || ms.iter().filter(|&&m| t0.elapsed() >= Duration::from_millis(m)).count() as u64
        };
        let grace = Duration::from_secs(30);
        let keep = "'exit 130'";
        let all_well = supervise(&mut ranks(&[(keep, "exit 0"), (keep, "exit 0")]), &|| 0, grace).unwrap();
        assert_eq!(all_well, Ended::Done);
        let t0 = Instant::now();
        let stopped = supervise(&mut ranks(&[(keep, ":"), (keep, ":")]), &after(&[500]), grace).unwrap();
        assert_eq!(stopped, Ended::Stopped { rank0_checkpointed: true });
        assert!(t0.elapsed() < Duration::from_secs(10));
        let killed = supervise(&mut ranks(&[("''", ":"), ("''", ":")]), &after(&[500, 1500]), grace).unwrap();
        assert_eq!(killed, Ended::Stopped { rank0_checkpointed: false });
        let failed = supervise(&mut ranks(&[(keep, ":"), (keep, "exit 3")]), &|| 0, grace).unwrap();
        assert!(matches!(failed, Ended::Failed(1, s) if s.code() == Some(3)), "{failed:?}");
        let t0 = Instant::now();
        let stuck = supervise(&mut ranks(&[("''", ":"), (keep, "exit 3")]), &|| 0, Duration::from_secs(1)).unwrap();
        assert!(matches!(stuck, Ended::Failed(1, s) if s.code() == Some(3)), "{stuck:?}");
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(8),
            "rank 0 ignores SIGTERM: killed after the grace period, not {took:?}"
        );
        // A failure during a stop: the others, stopping, get no second SIGTERM (which would end
        // them at once, rank 0 in its checkpoint).
        // Rank 0 notes a second SIGTERM in a file; rank 1 fails after the stop.
        let dir = tempfile::tempdir().unwrap();
        let second = dir.path().join("second-sigterm");
        let note = format!("'[ -n \"$t\" ] && touch {}; t=1'", second.display());
        let finish = "while [ -z \"$t\" ]; do sleep 0.05; done; sleep 1; exit 130";
        let during = supervise(&mut ranks(&[(&note, finish), ("''", "exit 3")]), &after(&[400]), grace).unwrap();
        assert!(matches!(during, Ended::Failed(1, s) if s.code() == Some(3)), "{during:?}");
        assert!(!second.exists(), "rank 0 got a second SIGTERM while it stopped");
        // During a stop, a rank killed by SIGKILL that no stop sent (the out-of-memory killer).
        let oom = supervise(&mut ranks(&[(keep, ":"), ("''", "kill -KILL $$")]), &after(&[400]), grace).unwrap();
        assert!(matches!(oom, Ended::Failed(1, s) if s.signal() == Some(libc::SIGKILL)), "{oom:?}");
    }

    /// The command an interrupted launch prints reads back in a shell as the launch's own, with
    /// `--resume`.
    #[test]
    fn an_interrupted_launch_names_the_command_that_continues_it() {
        let mut a = args(&["train", "--device", "cuda", "--config", "arc1", "--out", "runs/my run", "lr=1e-4"]);
        assert_eq!(resume_command(&a), "trm launch --nproc 2 -- train --resume --device cuda --out 'runs/my run' lr=1e-4");
        a.command.extend(
            ["--resume", "--init-from", "old/run", "--init-from=x", "+load_checkpoint=y", "--config=z", "--set", "load_checkpoint=v"]
                .map(String::from),
        );
        a.command.extend(["--set=load_checkpoint=w", "--set", "lr=1e-4"].map(String::from));
        a.master_port = Some(29600);
        assert_eq!(
            resume_command(&a),
            "trm launch --nproc 2 --master-port 29600 -- train --resume --device cuda --out 'runs/my run' lr=1e-4 --set lr=1e-4"
        );
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn launching_without_gpus_is_refused_before_anything_starts() {
        let e = format!("{:#}", check(&args(&["train", "--data", "d", "--out", "o"])).unwrap_err());
        assert!(e.contains("needs CUDA GPUs") && e.contains("without a launcher"), "{e}");
        let e = format!("{:#}", check(&args(&["train", "--device", "cpu"])).unwrap_err());
        assert!(e.contains("`cpu`"), "{e}");
        assert!(format!("{:#}", check(&args(&["eval"])).unwrap_err()).contains("runs `train` ranks"));
        assert!(format!("{:#}", check(&args(&["train", "--device=cuda:1"])).unwrap_err()).contains("LOCAL_RANK"));
        let linux = cfg!(target_os = "linux");
        let cuda = check(&args(&["train", "--device", "cuda"]));
        if cfg!(feature = "libtorch") && linux {
            // Two ranks need two GPUs: on a machine without them, refused before anything starts.
            if let Err(e) = &cuda {
                let e = format!("{e:#}");
                assert!(e.contains("--nproc 2: one rank per GPU") && e.contains("CUDA device"), "{e}");
            }
        } else {
            assert!(cuda.is_err());
        }
        let cubecl = check(&args(&["train", "--device", "cubecl"]));
        assert_eq!(cubecl.is_ok(), cfg!(feature = "cubecl") && linux, "{cubecl:?}");
        if !linux {
            assert!(format!("{:#}", cuda.unwrap_err()).contains("only on Linux"));
        }
    }
}
