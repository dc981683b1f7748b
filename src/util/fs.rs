//! Crash-safe file writes: everything is written to a temporary file of the writer's own in the
//! same folder (`<name>.<pid>.<n>.tmp`), flushed, synced, then renamed over the destination, so a
//! reader never sees half a file, and two writers of one file at once each put a whole file in
//! place (the last rename wins). The same rename is what lets large files be read by mapping them
//! (`map_read_only`).

use anyhow::{Context, Result};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Made where the lock files are made (`util::lock`, below this module).
pub use super::lock::create_folder;

/// This process's mark in the names of its temporary files: its id and a random token, since a
/// later process can be given the same id (a container's command is PID 1 on every run).
fn writer_mark() -> &'static (u32, String) {
    static MARK: std::sync::OnceLock<(u32, String)> = std::sync::OnceLock::new();
    MARK.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let token = std::collections::hash_map::RandomState::new().build_hasher().finish() as u32;
        (std::process::id(), format!("{token:08x}"))
    })
}

/// The temporary file one write of `path` stages it in: `<name>.<pid>.<token>.<n>.tmp`, this
/// process's n-th, so that no other writer of `path` (another process, another thread) ever
/// opens, removes or renames it.
fn temp_path(path: &Path) -> PathBuf {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (pid, token) = writer_mark();
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{pid}.{token}.{n}.tmp"));
    path.with_file_name(name)
}

/// A killed write's temporary file is removed once it is this old: a writer touches its file as
/// it goes, and a younger file may be a live writer's on another machine (or in another PID
/// namespace) sharing the folder, whose process id says nothing here.
const LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes what killed writes of `path` left beside it, never following a link: the temporary
/// files of writers that no longer run (another process id that runs no process, or this id with
/// another token), once `LEFTOVER_AGE` old, as far as they can be removed; and `<name>.tmp`, where
/// trm before 2026-12-07 staged every write, which is an error to leave (as it was then).
fn remove_leftovers(path: &Path) -> Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return Ok(()) };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    let prefix = format!("{name}.");
    let (own_pid, own_token) = writer_mark();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
        if rest == "tmp" {
            match std::fs::remove_file(entry.path()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("cannot remove the leftover {}", entry.path().display()));
                }
                _ => continue,
            }
        }
        let Some(mark) = rest.strip_suffix(".tmp") else { continue };
        let parts: Vec<&str> = mark.split('.').collect();
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let [pid, token, n] = parts[..] else { continue };
        if !(digits(pid) && digits(n) && token.len() == 8 && token.bytes().all(|b| b.is_ascii_hexdigit())) {
            continue;
        }
        let ended = match pid.parse::<u32>() {
            Ok(pid) if pid == *own_pid => token != own_token,
            Ok(pid) => !process_running(pid),
            Err(_) => true,
        };
        let old = entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|age| age >= LEFTOVER_AGE));
        if ended && old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Whether a process with this id runs (or may: where that cannot be told, it is taken to run,
/// so that its temporary files are kept).
#[cfg(unix)]
fn process_running(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    // SAFETY: signal 0 only asks whether the process exists; pid > 0 names one process.
    pid > 0 && (unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

#[cfg(windows)]
fn process_running(pid: u32) -> bool {
    use windows_sys::Win32::Foundation::{CloseHandle, ERROR_ACCESS_DENIED, GetLastError, STILL_ACTIVE};
    use windows_sys::Win32::System::Threading::{GetExitCodeProcess, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION};
    // SAFETY: the handle is checked before use and closed once.
    unsafe {
        let handle = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
        if handle.is_null() {
            return GetLastError() == ERROR_ACCESS_DENIED;
        }
        let mut code = 0u32;
        let asked = GetExitCodeProcess(handle, &mut code);
        CloseHandle(handle);
        asked == 0 || code == STILL_ACTIVE as u32
    }
}

#[cfg(not(any(unix, windows)))]
fn process_running(_pid: u32) -> bool {
    true
}

/// `file` mapped read-only, or None where it cannot be (not a regular file, empty, a file system
/// that does not map). For the large files trm reads once (data set arrays, checkpoints): trm
/// replaces them by renaming a new file over the old one, and a mapping keeps the old file, so
/// the mapped bytes never change. A foreign tool that truncates such a file in place would end
/// the reader with SIGBUS (docs/data.md).
pub fn map_read_only(file: &File) -> Option<memmap2::Mmap> {
    if !file.metadata().is_ok_and(|m| m.is_file() && m.len() > 0) {
        return None;
    }
    // SAFETY: a read-only mapping of a file whose bytes do not change while it is mapped (above).
    unsafe { memmap2::Mmap::map(file) }.ok()
}

/// Writes a file atomically through a buffered writer handed to `fill`.
pub fn write_atomic_with(path: &Path, fill: impl FnOnce(&mut BufWriter<File>) -> Result<()>) -> Result<()> {
    stage_with(path, fill)?.commit()
}

/// A file written in full and synced beside its final name, not yet in place: `commit` puts it
/// there with one rename. Staging several files first makes their replacement as close to one
/// step as separate files allow.
#[must_use = "a staged file is put in place by commit"]
pub struct Staged {
    tmp: PathBuf,
    path: PathBuf,
}

impl Staged {
    pub fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("cannot write {} (the rename of its temporary file {})", self.path.display(), self.tmp.display()))?;
        self.tmp = PathBuf::new();
        Ok(())
    }
}

/// A staged file never put in place (an error came first) is removed, not left beside its name.
impl Drop for Staged {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes bytes beside `path`, to be put in place by `Staged::commit`.
pub fn stage(path: &Path, bytes: &[u8]) -> Result<Staged> {
    stage_with(path, |w| Ok(w.write_all(bytes)?))
}

/// Writes a file beside `path` through a buffered writer handed to `fill`, synced, to be put in
/// place by `Staged::commit`.
pub fn stage_with(path: &Path, fill: impl FnOnce(&mut BufWriter<File>) -> Result<()>) -> Result<Staged> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_folder(parent)?;
    }
    remove_leftovers(path)?;
    // Created fresh and exclusively: never through a link planted at its name (a name taken,
    // which no live writer of this process holds, is passed over for the next).
    let mut tries = 0;
    let (tmp, file) = loop {
        let tmp = temp_path(path);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => break (tmp, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
            // Named by the file being written (the temporary name means nothing to the user).
            Err(e) => return Err(e).with_context(|| format!("cannot write {} (its temporary file {})", path.display(), tmp.display())),
        }
    };
    // From here the guard removes the temporary file if writing fails (a full disk must not be
    // left fuller by a partial file).
    let staged = Staged { tmp, path: path.to_path_buf() };
    let mut w = BufWriter::with_capacity(1 << 20, file);
    fill(&mut w).with_context(|| format!("while writing {}", path.display()))?;
    let file = w.into_inner().map_err(|e| e.into_error()).with_context(|| format!("cannot flush {}", staged.tmp.display()))?;
    file.sync_all().with_context(|| format!("cannot sync {}", staged.tmp.display()))?;
    Ok(staged)
}

/// Writes bytes atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| Ok(w.write_all(bytes)?))
}

/// Serialises `value` as pretty JSON, atomically.
pub fn write_json<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_atomic(path, text.as_bytes())
}

/// Reads and parses a JSON file, naming the file (and line/column) on failure.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = read_text_capped(path, MAX_JSON_BYTES, "a JSON file")?;
    serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))
}

/// Files a writing command must never replace: a folder (every file in it and its subfolders,
/// three levels down: a run's logs and its checkpoints) or a file, with what it is for the message.
pub struct Protected<'a> {
    pub path: &'a Path,
    pub what: &'a str,
}

/// Checks that `path` (named by `flag`) may be written: a new file; or an existing regular file
/// that is none of `protected` (compared by identity, so a link or another spelling of a
/// protected file counts) and is replaced only with `force`. A folder, pipe or device is never a
/// target. A protected file is refused even with `force`.
pub fn check_output(path: &Path, flag: &str, protected: &[Protected], force: bool) -> Result<()> {
    // `out/` names a folder, which a file cannot be written as (the rename to it failed, after
    // all the work, naming a temporary file).
    let text = path.as_os_str().to_string_lossy();
    anyhow::ensure!(
        !(text.ends_with('/') || cfg!(windows) && text.ends_with('\\')),
        "{flag} {}: ends with a path separator, so it names a folder; give a file path",
        path.display()
    );
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("{flag} {}: cannot check the target", path.display())),
    };
    anyhow::ensure!(meta.is_file(), "{flag} {}: a folder, pipe or device, not a file trm can write; give a file path", path.display());
    // A folder named twice (a run given as the model and found around its checkpoint) is
    // searched once.
    let mut searched = Vec::with_capacity(protected.len());
    for p in protected {
        let at = std::path::absolute(p.path).unwrap_or_else(|_| p.path.to_path_buf());
        if searched.contains(&at) {
            continue;
        }
        searched.push(at);
        if holds(p.path, &meta, 3) {
            anyhow::bail!(
                "{flag} {}: that file belongs to {} ({}), which this command reads; writing over it would destroy it. \
                 Choose another path (--force does not apply here)",
                path.display(),
                p.what,
                p.path.display()
            );
        }
    }
    anyhow::ensure!(force, "{flag} {}: the file exists; pass --force to replace it, or choose another path", path.display());
    Ok(())
}

/// Whether `at` is the file `meta` describes, or a folder holding it within `depth` levels.
fn holds(at: &Path, meta: &std::fs::Metadata, depth: usize) -> bool {
    let Ok(m) = std::fs::metadata(at) else { return false };
    if m.is_file() {
        return same_file(&m, meta);
    }
    if !m.is_dir() || depth == 0 {
        return false;
    }
    std::fs::read_dir(at).into_iter().flatten().flatten().any(|e| holds(&e.path(), meta, depth - 1))
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.len() == b.len() && a.modified().ok() == b.modified().ok() && a.created().ok() == b.created().ok()
}

/// Largest JSON file read (ARC's largest challenge file is about 4 MB).
pub const MAX_JSON_BYTES: u64 = 512 << 20;

/// The file that marks a folder a command rebuilds on every run (`trm demo`, `trm adapt`).
pub const MADE_BY: &str = ".made-by";

/// The file a data builder keeps in its folder while it writes (`data::format::BUILDING`).
pub const BUILDING: &str = ".trm-building";

/// Whether `dir` is a folder that `maker` made (`fresh_own_folder`): its `.made-by` names it.
pub fn made_by(dir: &Path, maker: &str) -> bool {
    let marker = dir.join(MADE_BY);
    dir.symlink_metadata().is_ok_and(|m| m.is_dir())
        && marker.symlink_metadata().is_ok_and(|m| m.is_file())
        && std::fs::read_to_string(&marker).is_ok_and(|t| t.trim() == maker)
}

/// `dir` and those of its parent folders that do not exist yet, `dir` first: what
/// `create_dir_all(dir)` would make.
pub fn missing_folders(dir: &Path) -> Vec<std::path::PathBuf> {
    dir.ancestors().take_while(|p| !p.as_os_str().is_empty() && p.symlink_metadata().is_err()).map(Path::to_path_buf).collect()
}

/// After a command failed before writing anything: removes the folders it made (`made`, from
/// `missing_folders` before it ran) when the first holds nothing but a run lock that no other
/// process holds (another run may have started in the same new folder meanwhile: it keeps it),
/// then each parent it made while it is empty. Best effort; a folder that holds anything else is
/// kept.
pub fn remove_made_folders(made: &[std::path::PathBuf]) {
    let Some((dir, parents)) = made.split_first() else { return };
    if !dir.is_dir() {
        return; // (taking the lock would make it)
    }
    let Ok(lock) = crate::util::lock::RunLock::acquire(dir) else { return };
    let only_lock = std::fs::read_dir(dir).is_ok_and(|mut e| e.all(|e| e.is_ok_and(|e| e.file_name() == crate::util::lock::LOCK_FILE)));
    if !only_lock {
        return;
    }
    // Removed under the lock where the system allows it (Unix); else (Windows keeps an open file
    // until it is closed) right after letting it go.
    if std::fs::remove_dir_all(dir).is_err() {
        drop(lock);
        let _ = std::fs::remove_dir_all(dir);
    }
    if dir.symlink_metadata().is_ok() {
        return;
    }
    for parent in parents {
        if std::fs::remove_dir(parent).is_err() {
            break;
        }
    }
}

/// Refuses a `dir` that exists and was not made by `maker` (what `fresh_own_folder` would remove),
/// so that a command checks all its folders before it changes any.
pub fn check_own_folder(dir: &Path, maker: &str) -> Result<()> {
    anyhow::ensure!(
        dir.symlink_metadata().is_err() || made_by(dir, maker),
        "{} exists and was not made by `{maker}`; trm removes only folders it made itself. Choose another --out, or move it away",
        dir.display()
    );
    Ok(())
}

/// Makes `dir` an empty folder for `maker` (a command that rebuilds it on every run): a folder
/// that `maker` made before (its `.made-by` names it) is removed first; any other existing folder
/// or file is refused, so a user's own run or data are never deleted.
pub fn fresh_own_folder(dir: &Path, maker: &str) -> Result<()> {
    if dir.symlink_metadata().is_ok() {
        check_own_folder(dir, maker)?;
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    create_folder(dir)?;
    write_atomic(&dir.join(MADE_BY), maker.as_bytes())
}

/// What a data builder writes into its output folder.
const DATA_SET_ENTRIES: [&str; 4] = ["train", "test", "identifiers.json", "test_puzzles.json"];

/// A data builder's output folder: new, empty, or holding other files (left alone). One that
/// already holds a data set is rebuilt only with `force`, so a data set someone built is never
/// rebuilt over by accident. Checked before the build reads anything.
pub fn check_data_out(out: &Path, force: bool) -> Result<()> {
    let found: Vec<&str> = DATA_SET_ENTRIES.into_iter().filter(|n| out.join(n).symlink_metadata().is_ok()).collect();
    anyhow::ensure!(
        found.is_empty() || force,
        "--out {}: it already holds a data set ({}); pass --force to replace it, or choose another folder",
        out.display(),
        found.join(", ")
    );
    Ok(())
}

/// In a Sudoku or maze build (before it marks itself finished): the ARC task list of the data
/// set it replaces, so that a Sudoku set built over an ARC set is not scored as ARC.
pub fn drop_stale_arc_tasks(out: &Path) -> Result<()> {
    let p = out.join("test_puzzles.json");
    if p.symlink_metadata().is_ok() {
        std::fs::remove_file(&p).with_context(|| format!("cannot remove the old data set's {}", p.display()))?;
    }
    Ok(())
}

/// Makes `data` and `run` (`OUT/data`, `OUT/run` of `trm demo` and `trm adapt`) empty folders for
/// `maker`: both are checked before either changes, and a data folder that an older trm wrote
/// unmarked is claimed first (`claim_unmarked_data_folder`).
/// Nothing is removed when either holds, at its top level, an entry that trm does not write there
/// (a user's notes, a copied weights file, a report written into the run folder), or when one of
/// `inputs` (the files the command reads) lies in either.
pub fn fresh_own_data_and_run(data: &Path, run: &Path, maker: &str, inputs: &[&Path]) -> Result<()> {
    claim_unmarked_data_folder(data, run, maker)?;
    check_own_folder(data, maker)?;
    check_own_folder(run, maker)?;
    check_only_written_entries(data, maker, &[&DATA_SET_ENTRIES[..], &[MADE_BY, BUILDING, "*.tmp"]].concat())?;
    check_only_written_entries(run, maker, &RUN_FOLDER_ENTRIES)?;
    let canonical = |p: &Path| std::fs::canonicalize(p).or_else(|_| std::path::absolute(p));
    for input in inputs {
        let at = canonical(input)?;
        for dir in [data, run] {
            anyhow::ensure!(
                !at.starts_with(canonical(dir)?),
                "{} lies in {}, which `{maker}` clears and rebuilds on every run: move the file elsewhere, or choose another --out",
                input.display(),
                dir.display()
            );
        }
    }
    fresh_own_folder(data, maker)?;
    fresh_own_folder(run, maker)
}

/// What training writes in its run folder (the TensorBoard file is `events.out.tfevents.*`), with
/// the folder's mark.
const RUN_FOLDER_ENTRIES: [&str; 9] = [
    "checkpoints",
    "config.toml",
    "identifiers.json",
    "metrics.jsonl",
    "submission.json",
    "events.out.tfevents.*",
    crate::util::lock::LOCK_FILE,
    MADE_BY,
    "*.tmp",
];

/// Refuses a folder `maker` made that holds an entry not in `written` (names, or `prefix*`/`*suffix`
/// patterns), which clearing it would delete.
fn check_only_written_entries(dir: &Path, maker: &str, written: &[&str]) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    let ours = |name: &str| {
        written.iter().any(|w| match (w.strip_suffix('*'), w.strip_prefix('*')) {
            (Some(prefix), _) => name.starts_with(prefix),
            (_, Some(suffix)) => name.ends_with(suffix),
            _ => name == *w,
        })
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        anyhow::ensure!(
            ours(&name),
            "{} holds {name}, which `{maker}` did not write; it clears that folder on every run, so move {name} away first \
             (or choose another --out)",
            dir.display()
        );
    }
    Ok(())
}

/// Marks as `maker`'s an unmarked data folder that `maker` wrote before its data folders were
/// marked (trm before 2026-12-05): the run folder beside it is `maker`'s and it holds nothing but
/// a data set's entries. Anything else is left for `check_own_folder` to refuse.
pub fn claim_unmarked_data_folder(data: &Path, run: &Path, maker: &str) -> Result<()> {
    if !data.is_dir() || data.join(MADE_BY).symlink_metadata().is_ok() || !made_by(run, maker) {
        return Ok(());
    }
    let only_data = std::fs::read_dir(data)?.flatten().all(|e| DATA_SET_ENTRIES.contains(&e.file_name().to_string_lossy().as_ref()));
    if only_data {
        write_atomic(&data.join(MADE_BY), maker.as_bytes())?;
    }
    Ok(())
}

/// Reads a text file the user named, refusing before reading anything that is not a regular file
/// (a pipe, a device such as /dev/zero) or is larger than `max` bytes (`what` says what it should
/// be, for the message).
pub fn read_text_capped(path: &Path, max: u64, what: &str) -> Result<String> {
    let bytes = read_bytes_capped(path, max, what)?;
    let mut text = String::from_utf8(bytes).map_err(|e| anyhow::anyhow!("cannot read {} as text: {e}", path.display()))?;
    // A byte-order mark (Windows editors write one) is no character of the text.
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

/// The bytes of a file the user named or a run folder holds, as `read_text_capped` reads text:
/// a link to /dev/zero or a pipe in its place is refused, not read until memory runs out.
pub fn read_bytes_capped(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(meta.is_file(), "{} is not a regular file (a folder, pipe or device): give {what}", path.display());
    anyhow::ensure!(
        meta.len() <= max,
        "{} is {} bytes; {what} is at most {} KB here, so this is not one",
        path.display(),
        meta.len(),
        max >> 10
    );
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| std::io::Read::take(f, max + 1).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(bytes.len() as u64 <= max, "{} grew past {} KB while being read", path.display(), max >> 10);
    Ok(bytes)
}

/// Opens a text file for reading, transparently gunzipping names ending in `.gz`.
pub fn open_text(path: &Path) -> Result<Box<dyn std::io::Read>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file))))
    } else {
        Ok(Box::new(std::io::BufReader::new(file)))
    }
}

/// Flushes a folder's entries (renames into it) to disk where the OS allows; best effort.
pub fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        d.sync_all().ok();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_where_a_file_is_is_named_as_such() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("notes.txt");
        std::fs::write(&file, "mine").unwrap();
        for dir in [file.clone(), file.join("run")] {
            let e = format!("{:#}", create_folder(&dir).unwrap_err());
            assert!(e.contains(&format!("{} is a file, not a folder", file.display())), "{e}");
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
        create_folder(&d.path().join("a/b")).unwrap();
        assert!(d.path().join("a/b").is_dir());
    }

    /// What a failed start made is removed, parents included, down to what was there before; a
    /// new folder that another run locked meanwhile, or that holds anything but the lock, stays.
    #[test]
    fn a_failed_start_removes_only_the_folders_it_made_and_nobody_holds() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("a/b/c");
        let made = missing_folders(&out);
        assert_eq!(made, [d.path().join("a/b/c"), d.path().join("a/b"), d.path().join("a")]);
        assert!(missing_folders(d.path()).is_empty());

        // Another run took the lock of the new folder: kept (the lock is per open file, so this
        // process's second open of it is refused as another process's would be).
        let other = crate::util::lock::RunLock::acquire(&out).unwrap();
        remove_made_folders(&made);
        assert!(out.join(crate::util::lock::LOCK_FILE).is_file());
        drop(other);
        // A file beside the lock: kept.
        std::fs::write(out.join("config.toml"), "").unwrap();
        remove_made_folders(&made);
        assert!(out.join("config.toml").is_file());
        std::fs::remove_file(out.join("config.toml")).unwrap();
        // Only a lock nobody holds: removed, with the parents made for it, not the folder above.
        remove_made_folders(&made);
        assert!(!d.path().join("a").exists() && d.path().is_dir());
    }

    /// Many writers of one file at once: each write succeeds and puts a whole file in place, a
    /// reader never sees a mixture, and no temporary file stays (trm before 2026-12-07 shared one
    /// temporary name, so two `trm report --out X --force` at once could end in a rename error).
    #[test]
    fn writers_of_one_file_at_once_never_meet() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("out.json");
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(bytes) = std::fs::read(&path) {
                        assert!(!bytes.is_empty() && bytes.len() == 4096 * bytes[0] as usize, "a reader saw a torn file");
                        assert!(bytes.iter().all(|&b| b == bytes[0]), "a reader saw two writes mixed");
                    }
                }
            });
            let writers: Vec<_> = (1..=6u8)
                .map(|i| {
                    let path = &path;
                    s.spawn(move || (0..40).map(|_| write_atomic(path, &vec![i; 4096 * i as usize])).collect::<Result<Vec<()>>>())
                })
                .collect();
            let ended: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            for result in ended {
                result.map_err(|e| format!("{e:#}")).unwrap();
            }
        });
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["out.json"]);
    }

    /// A write removes what killed writes of the same file left beside it, once old enough, and
    /// nothing else.
    #[test]
    fn leftovers_of_killed_writers_are_removed_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let at = |n: &str| d.path().join(n);
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let plant = |name: &str, old: bool| {
            std::fs::write(at(name), "left").unwrap();
            if old {
                std::fs::File::options().write(true).open(at(name)).unwrap().set_modified(hour_ago).unwrap();
            }
        };
        // A process that has ended: its id names no running process (short of reuse).
        let mut child =
            std::process::Command::new(std::env::current_exe().unwrap()).arg("--list").stdout(std::process::Stdio::null()).spawn().unwrap();
        let ended = child.id();
        child.wait().unwrap();
        let (own, token) = writer_mark();
        let other_token = if token == "0123abcd" { "4567ef01" } else { "0123abcd" };
        let gone = [
            format!("out.json.{ended}.0123abcd.0.tmp"),
            // This process's id with another token: an earlier process given the same id.
            format!("out.json.{own}.{other_token}.0.tmp"),
            "out.json.tmp".to_string(),
        ];
        let kept_old = [
            format!("out.json.{own}.{token}.999999.tmp"),
            "out.jsonx.tmp".into(),
            "out.json.a.0123abcd.1.tmp".into(),
            format!("other.{ended}.0123abcd.0.tmp"),
            format!("out.json.{ended}.0.tmp"),
        ];
        // Young: perhaps a live writer on another machine sharing the folder.
        let young = format!("out.json.{ended}.0123abcd.5.tmp");
        gone.iter().chain(&kept_old).for_each(|n| plant(n, true));
        plant(&young, false);
        #[cfg(unix)]
        let live = {
            let mut sleeper = std::process::Command::new("sleep").arg("30").spawn().unwrap();
            let live = format!("out.json.{}.0123abcd.3.tmp", sleeper.id());
            plant(&live, true);
            // A link planted at a leftover's name is removed, not followed.
            std::fs::write(at("victim"), "keep me").unwrap();
            let link = at(&format!("out.json.{ended}.0123abcd.1.tmp"));
            std::os::unix::fs::symlink(at("victim"), &link).unwrap();
            let path = std::ffi::CString::new(link.as_os_str().as_encoded_bytes()).unwrap();
            let t = libc::timespec { tv_sec: hour_ago.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as _, tv_nsec: 0 };
            // SAFETY: a valid path and two timespecs; the link itself is touched, not its target.
            assert_eq!(unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), [t, t].as_ptr(), libc::AT_SYMLINK_NOFOLLOW) }, 0);
            write_atomic(&at("out.json"), b"{}").unwrap();
            assert!(at(&live).exists(), "a running writer's file was removed");
            assert!(link.symlink_metadata().is_err(), "the planted link stayed");
            assert_eq!(std::fs::read_to_string(at("victim")).unwrap(), "keep me");
            sleeper.kill().unwrap();
            sleeper.wait().unwrap();
            live
        };
        write_atomic(&at("out.json"), b"{}").unwrap();
        assert_eq!(std::fs::read_to_string(at("out.json")).unwrap(), "{}");
        for name in &gone {
            assert!(!at(name).exists(), "{name} stayed");
        }
        for name in kept_old.iter().chain([&young]) {
            assert!(at(name).exists(), "{name} was removed");
        }
        #[cfg(unix)]
        assert!(!at(&live).exists(), "the ended writer's file stayed");
    }
}
