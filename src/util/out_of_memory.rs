//! Running out of memory in libtorch (on a GPU, or in the host's memory on `torch-cpu`) as an
//! error that says what to change, instead of a panic. tch's ops unwrap torch's errors, so a
//! failed allocation arrives as a panic whose message carries torch's words ("CUDA out of
//! memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of ...", "DefaultCPUAllocator:
//! not enough memory: you tried to allocate ..."). `catch` turns such a panic on the current
//! thread into an `OutOfMemory` error, and `install_hook` keeps the panic's own message off the
//! screen while a `catch` is running (every other panic prints and unwinds as before).
//!
//! Where it is caught: the training step (src/train/trainer.rs, which says which setting to
//! change and how to continue), and every command as a whole (src/main.rs). burn's CPU engine
//! aborts the process when a Rust allocation fails, as Rust does; nothing here changes that.

use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};

/// A libtorch allocation that failed, in torch's own words (its C++ backtrace left out).
#[derive(Debug, Clone, PartialEq)]
pub struct OutOfMemory {
    pub message: String,
}

impl fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "out of memory: {}", self.message)
    }
}

impl std::error::Error for OutOfMemory {}

/// What to change when a command other than training runs out of memory.
pub const SMALLER_BATCHES: &str = "smaller batches need less memory: `--batch` of trm eval, bench and adapt, `--views` of trm solve, \
    `micro_batch_size=` and `eval_batch_size=` of trm train";

thread_local! {
    /// How many `catch` calls are running on this thread.
    static CATCHING: Cell<u32> = const { Cell::new(0) };
}

/// Chains a panic hook that stays silent for an allocation failure that a `catch` on the same
/// thread will report; every other panic goes to the hook that was there before.
pub fn install_hook() {
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if CATCHING.with(Cell::get) > 0 && from_payload(info.payload()).is_some() {
            return;
        }
        previous(info);
    }));
}

/// Runs `f`, returning the allocation failure it panicked with as an error. Any other panic
/// continues to unwind. (What `f` was changing is left as the panic left it: callers give up the
/// state `f` worked on, or only retry work that reads it.)
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, OutOfMemory> {
    CATCHING.with(|c| c.set(c.get() + 1));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(c.get() - 1));
    match result {
        Ok(v) => Ok(v),
        Err(payload) => match from_payload(payload.as_ref()) {
            Some(oom) => Err(oom),
            None => panic::resume_unwind(payload),
        },
    }
}

fn from_payload(payload: &(dyn Any + Send)) -> Option<OutOfMemory> {
    let text = payload.downcast_ref::<String>().map(String::as_str).or_else(|| payload.downcast_ref::<&str>().copied())?;
    parse(text)
}

/// What torch says in a failed allocation: CUDA's caching allocator, the driver, cuBLAS and
/// cuDNN on a GPU, the default allocator on the host.
const MARKS: [&str; 6] = [
    "out of memory",
    "DefaultCPUAllocator: not enough memory",
    "DefaultCPUAllocator: can't allocate memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "OutOfMemoryError",
];

/// The allocation failure a panic message reports, if it reports one. tch's panics read
/// `called Result::unwrap() on an Err value: Torch("...")`, torch's message escaped inside; the
/// message is unescaped and cut before torch's C++ backtrace ("Exception raised from ...", or
/// its first "frame #0: ...").
pub fn parse(panic_message: &str) -> Option<OutOfMemory> {
    let lower = panic_message.to_ascii_lowercase();
    if !MARKS.iter().any(|m| lower.contains(&m.to_ascii_lowercase())) {
        return None;
    }
    let torch = match panic_message.find("Torch(\"") {
        Some(i) => {
            let inner = &panic_message[i + "Torch(\"".len()..];
            unescape(inner.strip_suffix("\")").unwrap_or(inner))
        }
        None => panic_message.to_string(),
    };
    let cut = ["Exception raised from", "\nframe #"].iter().filter_map(|m| torch.find(m)).min().map_or(torch.as_str(), |i| &torch[..i]);
    let message = cut.split_whitespace().collect::<Vec<_>>().join(" ");
    Some(OutOfMemory { message })
}

/// Undoes Rust's `{:?}` escaping of a string (`\n`, `\"`, `\\`, `\u{..}` and the like).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('u') => {
                let hex: String = chars.by_ref().skip_while(|&c| c == '{').take_while(|&c| c != '}').collect();
                out.extend(u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32));
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The largest pass size of at most half of `rows` that divides `share` (as `micro_batch_size`
/// must), or None when passes of one row already ran out of memory.
pub fn smaller_pass(rows: usize, share: usize) -> Option<usize> {
    (1..=rows / 2).rev().find(|d| share.is_multiple_of(*d))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CUDA allocation that does not fit, in the words of torch 2.11's caching allocator (its
    /// parts are strings of libc10_cuda.so: "CUDA out of memory. Tried to allocate ", " has a
    /// total capacity of ", " of which "), as tch's unwrap panics with it; not yet seen on a GPU.
    const CUDA: &str = "called `Result::unwrap()` on an `Err` value: Torch(\"CUDA out of memory. Tried to allocate 2.00 GiB. \
        GPU 0 has a total capacity of 79.19 GiB of which 1.06 GiB is free. Of the allocated memory 76.50 GiB is allocated by \
        PyTorch, and 186.47 MiB is reserved by PyTorch but unallocated.\\nException raised from malloc at \
        /pytorch/c10/cuda/CUDACachingAllocator.cpp:1357 (most recent call first):\\nframe #0: c10::Error::Error(...)\")";
    /// torch 2.11's message on the host, as a step under a memory cap (RLIMIT_DATA) panicked with
    /// it on torch-cpu (shortened backtrace).
    const CPU: &str = "called `Result::unwrap()` on an `Err` value: Torch(\"[enforce fail at alloc_cpu.cpp:127] err == 0. \
        DefaultCPUAllocator: can't allocate memory: you tried to allocate 33554432 bytes. Error code 12 (Cannot allocate memory)\
        \\nframe #0: c10::ThrowEnforceNotMet(char const*, int, char const*, std::__cxx11::basic_string<char> const&, void const*) \
        + 0x6a (0x7f3c0baeed6a in .../torch/lib/libc10.so)\\nframe #1: c10::alloc_cpu(unsigned long) + 0x365\\n\")";

    #[test]
    fn torch_allocation_failures_are_recognised_and_cleaned() {
        let oom = parse(CUDA).unwrap();
        assert!(oom.message.starts_with("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has"), "{}", oom.message);
        assert!(oom.message.ends_with("reserved by PyTorch but unallocated."), "{}", oom.message);
        assert!(!oom.message.contains('\\') && !oom.message.contains("frame #0"), "{}", oom.message);
        let oom = parse(CPU).unwrap();
        assert_eq!(
            oom.message,
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to allocate \
             33554432 bytes. Error code 12 (Cannot allocate memory)"
        );
        let older =
            "Torch(\"[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: not enough memory: you tried to allocate 8 bytes.\")";
        assert!(parse(older).is_some());
        assert!(parse("torch's backward of a fused op: CUDA error: out of memory").is_some());
        assert!(parse("CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`").is_some());
        // Not an allocation failure: a shape error, a defect.
        assert_eq!(parse("called `Result::unwrap()` on an `Err` value: Torch(\"shape '[2, 3]' is invalid\")"), None);
        assert_eq!(unescape("a\\\"b\\\\c\\u{e9}\\n"), "a\"b\\c\u{e9}\n");
    }

    #[test]
    fn catch_returns_an_allocation_failure_and_passes_other_panics_on() {
        install_hook();
        assert_eq!(catch(|| 7), Ok(7));
        let e = catch::<()>(|| panic!("{CPU}")).unwrap_err();
        assert!(e.to_string().starts_with("out of memory: [enforce fail"), "{e}");
        let other = panic::catch_unwind(|| catch(|| panic!("index out of bounds: the len is 3 but the index is 7")));
        assert!(other.is_err(), "a panic that is not an allocation failure must keep unwinding");
        assert_eq!(CATCHING.with(Cell::get), 0);
    }

    #[test]
    fn a_smaller_pass_divides_the_rows_and_halves_at_least() {
        assert_eq!(smaller_pass(768, 768), Some(384));
        assert_eq!(smaller_pass(384, 768), Some(192));
        assert_eq!(smaller_pass(96, 96), Some(48));
        assert_eq!(smaller_pass(12, 36), Some(6));
        assert_eq!(smaller_pass(9, 36), Some(4));
        assert_eq!(smaller_pass(7, 7), Some(1));
        assert_eq!(smaller_pass(1, 768), None);
    }
}
