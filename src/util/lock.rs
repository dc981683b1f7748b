//! One writer per run folder: an exclusive OS lock on `RUN/.lock`, held while a process trains
//! into it. The OS releases it when the process ends however it ends (kill -9 included), so a
//! stale lock cannot exist; the file only records the holder's pid for the error message.

use anyhow::{Context, Result, bail};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

pub const LOCK_FILE: &str = ".lock";

/// Makes the folder `dir` and its parents where missing; a file in its place is named as such.
pub fn create_folder(dir: &Path) -> Result<()> {
    if let Some(file) = dir.ancestors().find(|a| a.is_file()) {
        anyhow::bail!("cannot create the folder {}: {} is a file, not a folder", dir.display(), file.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the folder {}", dir.display()))
}

/// Opens (creating it and its folder) a file that a process locks: never through a link, since a
/// planted `.lock -> ~/file` would otherwise be truncated, and only a regular file. Used by the
/// run lock and by a data set build's marker (`data::format::Building`).
pub fn open_lock_file(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        create_folder(dir)?;
    }
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut opts, libc::O_NOFOLLOW);
    let file = opts.open(path).with_context(|| {
        if path.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
            format!("{} is a symbolic link; trm opens its lock files only directly (remove the link)", path.display())
        } else {
            format!("cannot open {}", path.display())
        }
    })?;
    anyhow::ensure!(file.metadata()?.is_file(), "{} is not a regular file (remove it)", path.display());
    Ok(file)
}

/// Held for as long as it lives.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock of `dir` (created if needed), or says who holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        Self::acquire_with(dir, |who| {
            format!(
                "{} is in use by {who}: two processes writing one run folder would overwrite each other's checkpoints. \
                 Wait for it to finish or stop it (Ctrl-C checkpoints it), then --resume; or choose another --out",
                dir.display()
            )
        })
    }

    /// The lock of the folder `command` (`trm demo`, `trm adapt`) clears and fills, taken before it
    /// clears anything and held until it ends: a second such command into the folder is refused
    /// rather than deleting the first one's files under it.
    pub fn acquire_output(dir: &Path, command: &str) -> Result<RunLock> {
        Self::acquire_with(dir, |who| {
            format!(
                "{} is in use by {who}: a second `{command}` there would delete the first one's data and run while it \
                 works. Wait for it to finish, or choose another --out",
                dir.display()
            )
        })
    }

    fn acquire_with(dir: &Path, refusal: impl FnOnce(&str) -> String) -> Result<RunLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = open_lock_file(&path)?;
        // A lock released an instant ago can still be held for a moment by a process being
        // forked from this one (it shares the file until it execs): wait briefly before refusing.
        let mut attempt = 0;
        let locked = loop {
            match file.try_lock() {
                Err(std::fs::TryLockError::WouldBlock) if attempt < 50 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other,
            }
        };
        match locked {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                file.read_to_string(&mut holder).ok();
                let who = match holder.trim() {
                    "" => "another process".to_string(),
                    pid => format!("another trm process (pid {pid})"),
                };
                bail!("{}", refusal(&who));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e).with_context(|| format!("cannot lock {}", path.display())),
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(RunLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_lets_go() {
        let t = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(t.path()).unwrap();
        let e = format!("{:#}", RunLock::acquire(t.path()).unwrap_err());
        assert!(e.contains(&format!("pid {}", std::process::id())) && e.contains("in use"), "{e}");
        drop(first);
        RunLock::acquire(t.path()).unwrap();
    }

    #[test]
    #[cfg(unix)]
    fn a_planted_link_is_refused_and_its_target_untouched() {
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("victim.txt");
        std::fs::write(&victim, "keep me").unwrap();
        let run = t.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::os::unix::fs::symlink(&victim, run.join(LOCK_FILE)).unwrap();
        let e = format!("{:#}", RunLock::acquire(&run).unwrap_err());
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    }
}
