//! How much more memory this process can take before the system, or the container it runs in,
//! runs out: what `trm train` compares its memory estimate with before its first step
//! (`train::memory_check`).
//!
//! - Linux: `MemAvailable` of /proc/meminfo (free memory plus what the kernel can reclaim),
//!   lowered to what the process's memory cgroup still allows at its tightest level (cgroup v1
//!   or v2; its file cache other than shared memory counted as free, as the kernel reclaims it
//!   at the limit), and to
//!   what the process's own limits leave (`ulimit -v`, `ulimit -d`: RLIMIT_AS and RLIMIT_DATA
//!   less the VmSize and VmData of /proc/self/status), where an allocation fails instead.
//! - Elsewhere: unknown (`None`), and nothing is checked. On Windows, `GlobalMemoryStatusEx`
//!   reported almost nothing available in one CI run under Wine (2026-12-06), which refused every
//!   run, though a small program calling it under the same Wine read the right figure later;
//!   until it is tried on a real Windows machine, Windows is not checked.

/// What this process can still take, and what sets that figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Available {
    pub bytes: u64,
    pub bound: Bound,
}

/// The tightest of the limits `available` reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// The machine's own memory (MemAvailable): past it the system ends a process.
    Machine,
    /// A memory cgroup the process runs in (a container's limit): past it the kernel ends it.
    Cgroup,
    /// `ulimit -v` (RLIMIT_AS) or `ulimit -d` (RLIMIT_DATA): past it an allocation fails. Named
    /// as the shell's flag.
    ProcessLimit(&'static str),
}

impl Available {
    /// "this machine has 21.2 GiB available", said with the size written by `size`.
    pub fn said(&self, size: &str) -> String {
        match self.bound {
            Bound::Machine => format!("this machine has {size} available"),
            Bound::Cgroup => format!("this process's memory cgroup (its container's limit) leaves it {size}"),
            Bound::ProcessLimit(flag) => format!("`ulimit {flag}` leaves this process {size}"),
        }
    }
    /// What happens to a process that goes past the bound.
    pub fn past_it(&self) -> &'static str {
        match self.bound {
            Bound::Machine | Bound::Cgroup => "the system would end it with no message",
            Bound::ProcessLimit(_) => "an allocation would fail and end it",
        }
    }
}

/// Bytes this process can still allocate without the system reclaiming memory it cannot (or an
/// allocation failing under a process limit), and which limit that is; `None` where that is not
/// known.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn available() -> Option<Available> {
    let system = meminfo_available(&std::fs::read_to_string("/proc/meminfo").ok()?)?;
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let room = cgroup_dirs(std::path::Path::new("/sys/fs/cgroup"), &cgroups).iter().filter_map(|d| cgroup_room(d)).min();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    // The soft limit of a resource, when it has one (rlim_t is 32-bit on some targets).
    #[allow(clippy::unnecessary_cast)]
    let rlimit = |resource| {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit fills the struct it is given and keeps no pointer.
        (unsafe { libc::getrlimit(resource, &mut r) } == 0 && r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur as u64)
    };
    let limits =
        [(libc::RLIMIT_AS, "VmSize:", "-v"), (libc::RLIMIT_DATA, "VmData:", "-d")].into_iter().filter_map(|(resource, used, flag)| {
            Some(Available { bytes: rlimit(resource)?.saturating_sub(status_kib(&status, used)? * 1024), bound: Bound::ProcessLimit(flag) })
        });
    let cgroup = room.map(|bytes| Available { bytes, bound: Bound::Cgroup });
    Some(limits.chain(cgroup).fold(Available { bytes: system, bound: Bound::Machine }, |a, b| if b.bytes < a.bytes { b } else { a }))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn available() -> Option<Available> {
    None
}

/// A `Key:   N kB` value of /proc/self/status, in KiB.
#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
}

/// `MemAvailable` of a /proc/meminfo text, in bytes.
#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
fn meminfo_available(meminfo: &str) -> Option<u64> {
    status_kib(meminfo, "MemAvailable:").map(|kib| kib * 1024)
}

/// The memory cgroup folders of this process and every level above it, from a
/// /proc/self/cgroup text: `N:memory:/path` (v1, under ROOT/memory) or `0::/path` (v2, under
/// ROOT), ROOT being /sys/fs/cgroup. Only folders that exist are listed.
#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
fn cgroup_dirs(root: &std::path::Path, proc_self_cgroup: &str) -> Vec<std::path::PathBuf> {
    use std::path::Path;
    let v1 = root.join("memory");
    let mut dirs = Vec::new();
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let base = match controllers {
            "" => root,
            c if c.split(',').any(|c| c == "memory") => v1.as_path(),
            _ => continue,
        };
        let mut rel = Path::new(path.trim_start_matches('/'));
        loop {
            let dir = base.join(rel);
            if dir.is_dir() {
                dirs.push(dir);
            }
            match rel.parent() {
                Some(p) => rel = p,
                None => break,
            }
        }
    }
    dirs
}

/// What one cgroup level still allows: its limit less its usage without the file cache the
/// kernel reclaims at the limit; `None` when it sets no limit.
#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
fn cgroup_room(dir: &std::path::Path) -> Option<u64> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let number = |name: &str| read(name).and_then(|s| s.trim().parse::<u64>().ok());
    // v2 names first, then v1's. v1 writes "no limit" as a huge number (about 2^63).
    let limit = number("memory.max").or_else(|| number("memory.limit_in_bytes")).filter(|&l| l < 1 << 60)?;
    let usage = number("memory.current").or_else(|| number("memory.usage_in_bytes")).unwrap_or(0);
    let stat = read("memory.stat").unwrap_or_default();
    Some(limit.saturating_sub(usage.saturating_sub(reclaimable_cache(&stat))))
}

/// The file cache of a cgroup's memory.stat less its shared memory (tmpfs and shm pages count
/// as cache but cannot be dropped), in bytes: v1's subtree totals (`total_cache`,
/// `total_shmem`), else v2's `file` and `shmem`, else the inactive file cache alone.
#[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
fn reclaimable_cache(stat: &str) -> u64 {
    let value = |key: &str| {
        stat.lines().find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse::<u64>().ok()))
    };
    let file_less_shmem = |file: &str, shmem: &str| value(file).map(|f| f.saturating_sub(value(shmem).unwrap_or(0)));
    file_less_shmem("total_cache", "total_shmem")
        .or_else(|| file_less_shmem("file", "shmem"))
        .or_else(|| value("total_inactive_file"))
        .or_else(|| value("inactive_file"))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_gives_mem_available_in_bytes() {
        let text = "MemTotal:       24683772 kB\nMemFree:         1000 kB\nMemAvailable:   21884504 kB\n";
        assert_eq!(meminfo_available(text), Some(21884504 * 1024));
        assert_eq!(meminfo_available("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn file_cache_less_shared_memory_counts_as_reclaimable() {
        // v1: the subtree totals, not this level's own figures.
        assert_eq!(reclaimable_cache("cache 5\nshmem 1\ntotal_cache 90\ntotal_shmem 30\ninactive_file 7\n"), 60);
        // v2.
        assert_eq!(reclaimable_cache("anon 1\nfile 50\nshmem 20\ninactive_file 7\n"), 30);
        assert_eq!(reclaimable_cache("anon 1\nfile 50\n"), 50);
        // Neither: the inactive file cache alone, else nothing.
        assert_eq!(reclaimable_cache("anon 1\ninactive_file 7\n"), 7);
        assert_eq!(reclaimable_cache("anon 1\n"), 0);
    }

    #[test]
    fn a_cgroup_limit_less_its_working_set_is_the_room_left() {
        let dir = tempfile::tempdir().unwrap();
        // No limit (v1's "unlimited" value): no room figure.
        std::fs::write(dir.path().join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        assert_eq!(cgroup_room(dir.path()), None);
        // v2: 8 GiB limit, 5 GiB used of which 1 GiB file cache -> 4 GiB left.
        std::fs::write(dir.path().join("memory.max"), format!("{}\n", 8u64 << 30)).unwrap();
        std::fs::write(dir.path().join("memory.current"), format!("{}\n", 5u64 << 30)).unwrap();
        std::fs::write(dir.path().join("memory.stat"), format!("anon 1\nfile {}\nshmem 0\n", 1u64 << 30)).unwrap();
        assert_eq!(cgroup_room(dir.path()), Some(4 << 30));
        // v2 "max": no limit at this level.
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        std::fs::remove_file(dir.path().join("memory.limit_in_bytes")).unwrap();
        assert_eq!(cgroup_room(dir.path()), None);
    }

    #[test]
    fn cgroup_lines_give_the_memory_group_and_every_level_above_it() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for d in ["memory/a/b", "cpuset/a", "x/y"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        // v1's memory line, another controller's (not read), v2's line, and a group whose
        // folder is gone (left out).
        let text = "4:memory:/a/b\n3:cpuset:/a\n0::/x/y\n2:pids,memory:/gone\n";
        let want = ["memory/a/b", "memory/a", "memory", "x/y", "x", ""].map(|d| r.join(d));
        let mut want = want.to_vec();
        want.push(r.join("memory")); // /gone's parent, the v1 root itself
        assert_eq!(cgroup_dirs(r, text), want);
    }

    /// A process limit lowers the figure: a child with `ulimit -v` at 1 GiB above its current
    /// size reports at most 1 GiB (run as a child so the limit stays there). x86-64 only: CI runs
    /// the arm64 tests under qemu-user, whose own address space the limit would cap.
    #[test]
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    fn a_process_memory_limit_lowers_the_figure() {
        if std::env::var("TRM_TEST_RLIMIT_CHILD").is_ok() {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let size = status_kib(&status, "VmSize:").unwrap() * 1024;
            let limit = libc::rlimit { rlim_cur: size + (1 << 30), rlim_max: libc::RLIM_INFINITY };
            // SAFETY: setrlimit reads the struct it is given.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
            let a = available().unwrap();
            let system = meminfo_available(&std::fs::read_to_string("/proc/meminfo").unwrap()).unwrap();
            // Named as the bound where the machine (or a cgroup) leaves comfortably more.
            if system > 2 << 30 && a.bound != Bound::Cgroup {
                assert_eq!(a.bound, Bound::ProcessLimit("-v"), "{a:?}");
            }
            let a = a.bytes;
            assert!(a <= 1 << 30, "{a} bytes available under a 1 GiB allowance");
            // The allowance less what the process grew by since it was set.
            assert!(a > (900 << 20).min(system / 2), "{a} bytes available under a 1 GiB allowance ({system} on the machine)");
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args(["--exact", "util::host_memory::tests::a_process_memory_limit_lowers_the_figure", "--nocapture"])
            .env("TRM_TEST_RLIMIT_CHILD", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
    }

    /// On Linux the figure is positive and no larger than the memory this machine has.
    #[test]
    #[cfg(target_os = "linux")]
    fn this_machine_reports_some_memory_available() {
        let a = available().expect("a figure on this platform").bytes;
        assert!(a > 0);
        let total = std::fs::read_to_string("/proc/meminfo").unwrap();
        let kib: u64 = total.lines().next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(a <= kib * 1024, "{a} bytes available of {kib} KiB");
    }
}
