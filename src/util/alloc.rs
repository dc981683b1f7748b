//! Allocator settings for the CPU backend's allocation pattern, and the process's memory peak.
//!
//! Every burn-flex op allocates a fresh, zeroed output (a `[B, T, 1536]` SwiGLU activation is
//! 19 MB at batch 32) and frees its inputs. glibc serves such sizes from `mmap` at first and
//! then, as its threshold adapts, from the heap top, which it trims back to the kernel when
//! freed. Either way the next op's output lands on fresh pages: a page fault and a kernel page
//! clear per 4 KiB, which a call-stack profile measured at half of the main thread's time in a
//! sudoku-att evaluation step (docs/benchmarks.md). Fixing the mmap threshold at its maximum
//! and never trimming keeps freed blocks in the heap for the next op; the cost is that the
//! process keeps its peak heap until it exits.

/// Keep freed memory for reuse (glibc on Linux; a no-op elsewhere). Call once, first thing.
/// `TRM_MALLOC_DEFAULT=1` leaves glibc's defaults (to compare, or to return memory early).
///
/// Under an address-space limit (`ulimit -v`), fewer malloc arenas: glibc gives each thread that
/// allocates its own arena (up to 8 per core), reserving 64 MiB of address space for each, which
/// the limit counts and the memory checks do not (measured: `trm eval --batch 250` on the demo's
/// tiny model passed its check under `ulimit -v 300000` and then failed to allocate 32 MiB; with
/// one arena it ran). `arenas_within` keeps their reservations to an eighth of the limit. A
/// `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` arena setting of the user's is kept.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if !crate::util::env::malloc_default()
        && !crate::util::env::malloc_arenas_set()
        && let Some(arenas) =
            address_space_limit().and_then(|l| arenas_within(l, std::thread::available_parallelism().map_or(1, |n| n.get())))
    {
        // SAFETY: as below; M_ARENA_MAX takes any positive count.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas as libc::c_int);
        }
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if !crate::util::env::malloc_default() {
        // SAFETY: mallopt only changes allocator parameters; it is called before any other
        // thread exists, and both values are within glibc's documented ranges.
        unsafe {
            // 32 MiB is glibc's largest mmap threshold on 64-bit; setting it also turns off the
            // dynamic adjustment. Larger blocks (ARC attention scores) still use mmap.
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, -1); // -1: never trim (mallopt(3))
        }
    }
}

/// This process's address-space limit in bytes (RLIMIT_AS, `ulimit -v`), if it has one.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
fn address_space_limit() -> Option<u64> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the struct it is given and keeps no pointer.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut r) } == 0;
    (ok && r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur as u64)
}

/// The malloc arenas whose 64 MiB reservations fit in an eighth of an address-space `limit`
/// (at least 1), when that is fewer than glibc's default of 8 per core; None when the default fits.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn arenas_within(limit: u64, cores: usize) -> Option<usize> {
    let fit = ((limit / 8) >> 26).max(1) as usize;
    (fit < 8 * cores).then_some(fit)
}

/// Peak resident set size of this process, in bytes: Linux's (and Android's) `VmHWM`, macOS's `ru_maxrss`,
/// Windows' peak working set; `None` elsewhere. What `trm bench` reports and training logs as
/// `host_peak_rss_mib`.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// See the other `peak_rss`. macOS gives `ru_maxrss` in bytes (Linux in KiB).
#[cfg(target_os = "macos")]
pub fn peak_rss() -> Option<u64> {
    // SAFETY: an all-zero rusage is a valid value; getrusage fills it and keeps no pointer.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    (unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } == 0).then_some(u.ru_maxrss as u64)
}

/// See the other `peak_rss`: Windows' `PeakWorkingSetSize`, its resident-memory peak.
#[cfg(windows)]
pub fn peak_rss() -> Option<u64> {
    use windows_sys::Win32::System::ProcessStatus::{K32GetProcessMemoryInfo, PROCESS_MEMORY_COUNTERS};
    let size = std::mem::size_of::<PROCESS_MEMORY_COUNTERS>() as u32;
    let mut c = PROCESS_MEMORY_COUNTERS { cb: size, ..Default::default() };
    // SAFETY: the pseudo-handle of this process, and a counters struct of the size given; the
    // call keeps no pointer.
    let ok = unsafe { K32GetProcessMemoryInfo(windows_sys::Win32::System::Threading::GetCurrentProcess(), &mut c, size) };
    (ok != 0).then_some(c.PeakWorkingSetSize as u64)
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "macos", windows)))]
pub fn peak_rss() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::arenas_within;

    #[test]
    fn arenas_are_capped_only_where_the_limit_is_tight() {
        // 300,000 KiB (the measured failure): one arena; 4 GiB: 8; a limit that fits the
        // default 8 per core of 2 cores (16 arenas: 1 GiB of reservations, 8 GiB of limit): none.
        assert_eq!(arenas_within(300_000 << 10, 2), Some(1));
        assert_eq!(arenas_within(4 << 30, 2), Some(8));
        assert_eq!(arenas_within(8 << 30, 2), None);
        assert_eq!(arenas_within(8 << 30, 64), Some(16));
    }

    /// The peak covers memory this process wrote to (on the platforms that report one).
    #[test]
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "macos", windows))]
    fn the_peak_counts_memory_this_process_touched() {
        let v = vec![1u8; 64 << 20];
        std::hint::black_box(&v);
        let peak = super::peak_rss().expect("a peak on this platform");
        assert!(peak >= 64 << 20, "peak {peak} bytes after touching 64 MiB");
    }
}
