//! Checkpoint integrity: every checkpoint folder carries `SHA256SUMS` (the coreutils format, so
//! `sha256sum -c SHA256SUMS` checks it by hand too), written last, before the folder is renamed
//! into place. Every reader (eval, solve, adapt, report, resume) verifies it before trusting a
//! byte; a run folder resolves to its `latest` checkpoint, or, when `latest` is missing, empty or
//! dangling, to the newest intact one.
//!
//! ```text
//! resolve(RUN)            latest, verified; a corrupt one is refused, naming the newest intact one
//! resolve(RUN/ckpt)       that checkpoint, verified
//! resolve_for_resume(RUN) latest if intact, else the newest intact one, saying so
//! ```

use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The checksum file of a checkpoint folder.
pub const SUMS: &str = "SHA256SUMS";

/// The files a training checkpoint must have (a folder with only `model.safetensors` is a
/// weights-only checkpoint, as exported for inference).
const REQUIRED: [&str; 1] = ["model.safetensors"];

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `dir/SHA256SUMS` over every regular file of `dir` (sorted by name).
pub fn write_sums(dir: &Path) -> Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != SUMS && !n.ends_with(".tmp"))
        .collect();
    names.sort();
    let mut text = String::new();
    for n in &names {
        text.push_str(&format!("{}  {n}\n", sha256_file(&dir.join(n))?));
    }
    crate::util::fs::write_atomic(&dir.join(SUMS), text.as_bytes())
}

/// What verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    /// Every file listed in SHA256SUMS is present with its checksum.
    Verified,
    /// No SHA256SUMS: a checkpoint written before trm checked its checkpoints, or by hand.
    Unverified,
}

/// Folders verified by this process (verification reads every byte; loading reads them again).
/// trm replaces a checkpoint's files only through `checkpoint::save`, which forgets the folder;
/// files changed behind its back by another program while this process runs are not re-read.
static VERIFIED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Checks a checkpoint folder against its SHA256SUMS.
pub fn verify(dir: &Path) -> Result<Integrity> {
    if !dir.is_dir() {
        bail!("{} does not exist", dir.display());
    }
    let key = std::path::absolute(dir).unwrap_or(dir.to_path_buf());
    if VERIFIED.lock().unwrap().as_ref().is_some_and(|s| s.contains(&key)) {
        return Ok(Integrity::Verified);
    }
    let sums = dir.join(SUMS);
    if !sums.exists() {
        for f in REQUIRED {
            anyhow::ensure!(dir.join(f).is_file(), "{}: no {f}", dir.display());
        }
        return Ok(Integrity::Unverified);
    }
    let text = crate::util::fs::read_text_capped(&sums, 1 << 20, "a checkpoint's SHA256SUMS (a line per file)")?;
    let mut listed = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        // `sha256sum` writes "<hash>  <name>" (text mode) or "<hash> *<name>" (binary mode).
        let (hash, name) = line
            .split_once("  ")
            .or_else(|| line.split_once(" *"))
            .filter(|(h, n)| h.len() == 64 && !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| anyhow!("{}:{}: not a `<sha256>  <file>` line", sums.display(), i + 1))?;
        let file = dir.join(name);
        anyhow::ensure!(file.is_file(), "{}: {name} is listed in {SUMS} but missing", dir.display());
        let got = sha256_file(&file)?;
        anyhow::ensure!(got == hash, "{}: checksum mismatch (the file is corrupt or was changed after it was written)", file.display());
        listed.insert(name.to_string());
    }
    for f in REQUIRED {
        anyhow::ensure!(listed.contains(f), "{}: {SUMS} does not list {f}", dir.display());
    }
    if dir.join("state.json").exists() {
        for f in ["state.json", "state.safetensors"] {
            anyhow::ensure!(listed.contains(f), "{}: {SUMS} does not list {f}", dir.display());
        }
    }
    VERIFIED.lock().unwrap().get_or_insert_with(HashSet::new).insert(key);
    Ok(Integrity::Verified)
}

/// Drops a folder from the verified cache (its files are about to be replaced).
pub fn forget(dir: &Path) {
    let key = std::path::absolute(dir).unwrap_or(dir.to_path_buf());
    if let Some(s) = VERIFIED.lock().unwrap().as_mut() {
        s.remove(&key);
    }
}

/// `verify`, with a warning for a checkpoint without checksums.
fn verify_noisy(dir: &Path) -> Result<()> {
    if verify(dir)? == Integrity::Unverified {
        eprintln!("warning: {} has no {SUMS} (written by an older trm): its files are not verified", dir.display());
    }
    Ok(())
}

/// The `step_*` checkpoint folders of a run, newest first.
pub fn checkpoints(run: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_dir() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("step_") && !n.contains('.'))
                })
                .collect()
        })
        .unwrap_or_default();
    all.sort();
    all.reverse();
    all
}

/// The newest checkpoint of a run that verifies (other than `except`).
pub fn newest_intact(run: &Path, except: Option<&Path>) -> Option<PathBuf> {
    checkpoints(run).into_iter().filter(|p| Some(p.as_path()) != except).find(|p| verify(p).is_ok())
}

fn is_checkpoint_folder(path: &Path) -> bool {
    // A run folder (with checkpoints/) is never taken for a checkpoint, whatever else it holds.
    !path.join("checkpoints").is_dir()
        && (path.join("state.json").exists() || path.join("model.safetensors").exists() || path.join(SUMS).exists())
}

/// The run a checkpoint folder, or a file in one, belongs to (`RUN/checkpoints/step_N[/FILE]`):
/// what a command given the checkpoint must not write into either (its log, its other
/// checkpoints, its `latest`).
/// Only a real checkpoint folder counts (a user's folder that happens to be called `checkpoints`
/// does not make its parent a run); None for anything else.
pub fn run_holding(path: &Path) -> Option<PathBuf> {
    let folder = if path.is_file() { path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")) } else { path };
    if !is_checkpoint_folder(folder) {
        return None;
    }
    let abs = std::path::absolute(folder).ok()?;
    run_of(&abs).map(Path::to_path_buf)
}

fn run_of(ckpt: &Path) -> Option<&Path> {
    ckpt.parent().filter(|p| p.file_name().is_some_and(|n| n == "checkpoints")).and_then(Path::parent)
}

fn intact_hint(run: Option<&Path>, except: &Path) -> String {
    match run.and_then(|r| newest_intact(r, Some(except))) {
        Some(p) => format!("; the newest intact checkpoint is {}", p.display()),
        None => "; no intact checkpoint is left in this run".to_string(),
    }
}

/// What `latest` names, if it names an existing folder.
fn latest_of(run: &Path) -> Result<PathBuf, String> {
    let latest = run.join("checkpoints").join("latest");
    if !latest.exists() {
        return Err(format!("{} is missing", latest.display()));
    }
    let name = crate::util::fs::read_text_capped(&latest, 4096, "the name of a checkpoint folder").map_err(|e| format!("{e:#}"))?;
    let name = name.trim();
    if !name.starts_with("step_") || name.contains(['/', '\\', '.']) {
        return Err(format!("{} is empty or invalid", latest.display()));
    }
    let dir = run.join("checkpoints").join(name);
    if !dir.is_dir() {
        return Err(format!("{} names {name}, which does not exist", latest.display()));
    }
    Ok(dir)
}

/// The checkpoint a reader should load: a checkpoint folder itself, or a run's `latest`, verified.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if is_checkpoint_folder(path) {
        verify_noisy(path).map_err(|e| anyhow!("{e:#}{}", intact_hint(run_of(path), path)))?;
        return Ok(path.to_path_buf());
    }
    if !path.exists() {
        bail!(
            "{}: no such run or checkpoint folder (`trm train --out {}` makes one; `trm demo` makes runs/demo/run)",
            path.display(),
            path.display()
        );
    }
    if !path.join("checkpoints").is_dir() {
        bail!("{} is neither a checkpoint nor a run folder with checkpoints (`trm train --out DIR` makes one)", path.display());
    }
    match latest_of(path) {
        Ok(dir) => {
            verify_noisy(&dir).map_err(|e| anyhow!("{e:#}{}", intact_hint(Some(path), &dir)))?;
            Ok(dir)
        }
        Err(why) => {
            let dir = newest_intact(path, None).ok_or_else(|| anyhow!("{why}, and {} has no intact checkpoint", path.display()))?;
            eprintln!("warning: {why}; using the newest intact checkpoint, {}", dir.display());
            Ok(dir)
        }
    }
}

/// What to do with a folder without checkpoints that `--resume` was given: a run stopped before
/// its first checkpoint is started again; a folder no run wrote is named as such.
pub fn start_over_hint(run: &Path) -> &'static str {
    let a_run = ["config.toml", "metrics.jsonl", "checkpoints"].iter().any(|n| run.join(n).symlink_metadata().is_ok());
    if a_run {
        " (it stopped before its first checkpoint): start it again with the command that began it, without --resume; a run \
         folder trm made that holds no checkpoint is started over"
    } else {
        ", and no run was ever written there (no config.toml, metrics.jsonl or checkpoints/): --resume continues a run that \
         `trm train --out DIR` began; check the --out path"
    }
}

/// True when `run` has no checkpoint folder and no `latest` (a run stopped before its first).
pub fn holds_no_checkpoint(run: &Path) -> bool {
    checkpoints(run).is_empty() && run.join("checkpoints").join("latest").symlink_metadata().is_err()
}

/// The checkpoint a resumed run continues from: `latest` if it verifies, else the newest intact
/// checkpoint (saying so, when `say`: rank 0 of a launch says it once for all ranks).
pub fn resolve_for_resume(run: &Path, say: bool) -> Result<PathBuf> {
    let why = match latest_of(run) {
        Ok(dir) => match verify(&dir) {
            Ok(Integrity::Verified) => return Ok(dir),
            Ok(Integrity::Unverified) => {
                verify_noisy(&dir)?;
                return Ok(dir);
            }
            Err(e) => format!("{e:#}"),
        },
        Err(why) => why,
    };
    let dir = newest_intact(run, None).ok_or_else(|| {
        let none_yet = holds_no_checkpoint(run);
        anyhow!(
            "cannot resume {}: {why}, and no intact checkpoint is left{}",
            run.display(),
            if none_yet { start_over_hint(run) } else { "" }
        )
    })?;
    if say {
        eprintln!("warning: {why}; resuming from the newest intact checkpoint, {}", dir.display());
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The run around a checkpoint is found only from a real checkpoint folder: a user's folder
    /// that happens to be called `checkpoints` (`--out checkpoints/sudoku1`) makes nothing above
    /// it a run (a review found `trm eval --save-outputs` refused in such a layout).
    #[test]
    fn the_run_around_a_checkpoint_is_found_only_from_a_real_checkpoint() {
        let home = tempfile::tempdir().unwrap();
        let run = home.path().join("checkpoints/sudoku1");
        let c = ckpt(&run, 3, "w");
        assert_eq!(run_holding(&c), Some(std::path::absolute(&run).unwrap()));
        assert_eq!(run_holding(&c.join("model.safetensors")), Some(std::path::absolute(&run).unwrap()));
        // The run folder itself is no checkpoint: nothing above it is protected.
        assert_eq!(run_holding(&run), None);
        // A weights file in a plain folder called checkpoints is no checkpoint either.
        std::fs::write(home.path().join("checkpoints/model.safetensors"), "w").unwrap();
        assert_eq!(run_holding(&home.path().join("checkpoints/model.safetensors")), None);
    }

    fn ckpt(run: &Path, step: u64, body: &str) -> PathBuf {
        let d = run.join("checkpoints").join(format!("step_{step:08}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("model.safetensors"), body).unwrap();
        write_sums(&d).unwrap();
        d
    }

    #[test]
    fn corrupt_latest_is_refused_and_resume_falls_back() {
        let t = tempfile::tempdir().unwrap();
        let run = t.path();
        let old = ckpt(run, 1, "old weights");
        let new = ckpt(run, 2, "new weights");
        std::fs::write(run.join("checkpoints/latest"), "step_00000002").unwrap();
        assert_eq!(resolve(run).unwrap(), new);
        std::fs::write(new.join("model.safetensors"), "new weightz").unwrap();
        VERIFIED.lock().unwrap().take();
        let e = format!("{:#}", resolve(run).unwrap_err());
        assert!(e.contains("checksum mismatch") && e.contains(&old.display().to_string()), "{e}");
        assert_eq!(resolve_for_resume(run, true).unwrap(), old);
        // A dangling or empty `latest` falls back for readers too.
        for body in ["step_00000009", "", "  \n"] {
            std::fs::write(run.join("checkpoints/latest"), body).unwrap();
            assert_eq!(resolve(run).unwrap(), old, "latest = {body:?}");
        }
        // A missing listed file and a malformed line are refused.
        std::fs::remove_file(old.join("model.safetensors")).unwrap();
        VERIFIED.lock().unwrap().take();
        assert!(format!("{:#}", verify(&old).unwrap_err()).contains("missing"));
        std::fs::write(old.join(SUMS), "abc model.safetensors\n").unwrap();
        assert!(format!("{:#}", verify(&old).unwrap_err()).contains("SHA256SUMS:1"));
        assert!(resolve_for_resume(run, true).is_err());
    }
}
