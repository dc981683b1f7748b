//! Metrics sinks: a JSON-lines log (`metrics.jsonl`, one object per step or evaluation) and a
//! TensorBoard event file (`events.out.tfevents.*`, scalars only), both append-only so a resumed
//! run continues them.

use crate::store::checkpoint::LogMark;
use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

pub struct MetricsLog {
    jsonl: File,
    tb: File,
    /// Their paths, for the errors (a full disk names the file).
    jsonl_path: std::path::PathBuf,
    tb_path: std::path::PathBuf,
}

/// Splits an event file into its complete, checksum-valid records (a kill can tear the last one).
fn records(bytes: &[u8]) -> Vec<&[u8]> {
    let (mut out, mut i) = (Vec::new(), 0);
    while i + 12 <= bytes.len() {
        let len = u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes")) as usize;
        if masked_crc(&bytes[i..i + 8]).to_le_bytes() != bytes[i + 8..i + 12] {
            break;
        }
        let Some(end) = len.checked_add(i + 16).filter(|&e| e <= bytes.len()) else { break };
        let data = &bytes[i + 12..i + 12 + len];
        if masked_crc(data).to_le_bytes() != bytes[end - 4..end] {
            break;
        }
        out.push(&bytes[i..end]);
        i = end;
    }
    out
}

/// The `step` field of an Event record (0 when absent).
fn record_step(record: &[u8]) -> u64 {
    let data = &record[12..record.len() - 4];
    let mut p = 0;
    while p < data.len() {
        let (key, n) = varint(&data[p..]);
        p += n;
        match (key >> 3, key & 7) {
            (2, 0) => return varint(&data[p..]).0,
            (_, 0) => p += varint(&data[p..]).1,
            (_, 1) => p += 8,
            (_, 2) => {
                let (l, n) = varint(&data[p..]);
                p += n + l as usize;
            }
            _ => break,
        }
    }
    0
}

/// Before a resumed run appends: drops what the killed run logged after its checkpoint at `step`
/// (and any torn last line or record), so every step appears once in both logs. With the
/// checkpoint's `mark`, each log is cut back to its length then (which also drops an evaluation
/// of that same step logged after the checkpoint, and redone by the resumed run); a log that does
/// not fit its mark (shorter, or not ending there on a record's end: not the log the checkpoint
/// saw), or any log without a mark, is filtered by step instead.
fn truncate_logs(dir: &Path, tb_path: &Path, step: u64, mark: Option<LogMark>) -> Result<()> {
    let jsonl = dir.join("metrics.jsonl");
    let by_step_jsonl = |bytes: &[u8]| -> Vec<u8> {
        String::from_utf8_lossy(bytes)
            .lines()
            .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["step"].as_u64().is_some_and(|s| s <= step)))
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect()
    };
    let by_step_tb =
        |bytes: &[u8]| -> Vec<u8> { records(bytes).into_iter().filter(|r| record_step(r) <= step).flatten().copied().collect() };
    let logs: [(&Path, Option<u64>, fn(&[u8], usize) -> bool, &dyn Fn(&[u8]) -> Vec<u8>); 2] = [
        (&jsonl, mark.map(|m| m.metrics_jsonl), jsonl_boundary, &by_step_jsonl),
        (tb_path, mark.map(|m| m.tensorboard), tb_boundary, &by_step_tb),
    ];
    for (path, len, boundary, by_step) in logs {
        let Ok(bytes) = std::fs::read(path) else { continue };
        let fits = len.and_then(|l| usize::try_from(l).ok()).filter(|&n| n <= bytes.len() && boundary(&bytes, n));
        let kept = match fits {
            Some(n) => bytes[..n].to_vec(),
            None => by_step(&bytes),
        };
        if kept != bytes {
            crate::util::fs::write_atomic(path, &kept)?;
        }
    }
    Ok(())
}

/// Whether `bytes[..len]` ends on a line's end.
fn jsonl_boundary(bytes: &[u8], len: usize) -> bool {
    len == 0 || bytes[len - 1] == b'\n'
}

/// Whether `bytes[..len]` is whole, valid event records.
fn tb_boundary(bytes: &[u8], len: usize) -> bool {
    records(&bytes[..len]).iter().map(|r| r.len()).sum::<usize>() == len
}

impl MetricsLog {
    /// Opens the logs of `dir`. `resume` = the step a resumed run restarts from and the logs'
    /// lengths recorded with that checkpoint: what was logged after it is dropped and the logs
    /// continue. None = a new run: logs left by an earlier attempt that never reached a
    /// checkpoint are removed.
    pub fn open(dir: &Path, resume: Option<(u64, Option<LogMark>)>) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        if resume.is_none() {
            for e in std::fs::read_dir(dir)?.filter_map(|e| e.ok()) {
                let name = e.file_name().to_string_lossy().to_string();
                if name == "metrics.jsonl" || name.starts_with("events.out.tfevents.") {
                    std::fs::remove_file(e.path())?;
                }
            }
        }
        let tb_path = match std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("events.out.tfevents.")))
        {
            Some(p) => p,
            None => dir
                .join(format!("events.out.tfevents.{}.trm", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs())),
        };
        if let Some((step, mark)) = resume {
            truncate_logs(dir, &tb_path, step, mark)?;
        }
        let jsonl_path = dir.join("metrics.jsonl");
        let jsonl = OpenOptions::new().create(true).append(true).open(&jsonl_path).context("cannot open metrics.jsonl")?;
        let fresh = !tb_path.exists();
        let mut tb = OpenOptions::new().create(true).append(true).open(&tb_path).context("cannot open the TensorBoard event file")?;
        if fresh {
            // Event { wall_time = 1, file_version = 3: "brain.Event:2" }
            let mut ev = Vec::new();
            put_double(&mut ev, 1, now());
            put_bytes(&mut ev, 3, b"brain.Event:2");
            write_record(&mut tb, &ev).with_context(|| format!("cannot write {}", tb_path.display()))?;
        }
        Ok(MetricsLog { jsonl, tb, jsonl_path, tb_path })
    }

    /// Logs `values` under `prefix/` (e.g. `train/lm_loss`) at `step`.
    pub fn log(&mut self, step: u64, prefix: &str, values: &[(&str, f64)]) -> Result<()> {
        let mut obj = serde_json::Map::new();
        obj.insert("step".into(), step.into());
        obj.insert("split".into(), prefix.into());
        obj.insert("time".into(), now().into());
        for (k, v) in values {
            obj.insert((*k).into(), serde_json::Number::from_f64(*v).map_or(serde_json::Value::Null, serde_json::Value::Number));
        }
        writeln!(self.jsonl, "{}", serde_json::Value::Object(obj))
            .with_context(|| format!("cannot write {}", self.jsonl_path.display()))?;
        // Event { wall_time = 1, step = 2, summary = 5 { value = 1 { tag = 1, simple_value = 2 } } }
        let mut summary = Vec::new();
        for (k, v) in values {
            let mut val = Vec::new();
            put_bytes(&mut val, 1, format!("{prefix}/{k}").as_bytes());
            val.push((2 << 3) | 5); // field 2, fixed32
            val.extend_from_slice(&(*v as f32).to_le_bytes());
            put_bytes(&mut summary, 1, &val);
        }
        let mut ev = Vec::new();
        put_double(&mut ev, 1, now());
        put_varint_field(&mut ev, 2, step);
        put_bytes(&mut ev, 5, &summary);
        write_record(&mut self.tb, &ev).with_context(|| format!("cannot write {}", self.tb_path.display()))?;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.jsonl.flush().with_context(|| format!("cannot write {}", self.jsonl_path.display()))?;
        self.tb.flush().with_context(|| format!("cannot write {}", self.tb_path.display()))?;
        Ok(())
    }

    /// How far both logs reach now (call after `flush`).
    pub fn mark(&self) -> Result<LogMark> {
        Ok(LogMark { metrics_jsonl: self.jsonl.metadata()?.len(), tensorboard: self.tb.metadata()?.len() })
    }
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}
fn put_varint_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    put_varint(buf, (field as u64) << 3);
    put_varint(buf, v);
}
fn put_double(buf: &mut Vec<u8>, field: u32, v: f64) {
    put_varint(buf, ((field as u64) << 3) | 1);
    buf.extend_from_slice(&v.to_le_bytes());
}
fn put_bytes(buf: &mut Vec<u8>, field: u32, b: &[u8]) {
    put_varint(buf, ((field as u64) << 3) | 2);
    put_varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

/// TFRecord's checksum: CRC32C, rotated right by 15 bits, plus a constant.
fn masked_crc(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes).rotate_right(15).wrapping_add(0xa282_ead8)
}

/// TFRecord framing: length, masked CRC32C of the length, data, masked CRC32C of the data.
fn write_record(w: &mut impl Write, data: &[u8]) -> Result<()> {
    let len = (data.len() as u64).to_le_bytes();
    w.write_all(&len)?;
    w.write_all(&masked_crc(&len).to_le_bytes())?;
    w.write_all(data)?;
    w.write_all(&masked_crc(data).to_le_bytes())?;
    Ok(())
}

/// Reads back the scalar values of an event file: (step, tag, value). Used by tests and `trm report`.
pub fn read_events(path: &Path) -> Result<Vec<(u64, String, f32)>> {
    let bytes = crate::util::fs::read_bytes_capped(path, 4 << 30, "a TensorBoard event file")?;
    let mut out = Vec::new();
    for rec in records(&bytes) {
        let data = &rec[12..rec.len() - 4];
        let mut step = 0;
        let mut p = 0;
        while p < data.len() {
            let (key, n) = varint(&data[p..]);
            p += n;
            match (key >> 3, key & 7) {
                (2, 0) => {
                    let (v, n) = varint(&data[p..]);
                    step = v;
                    p += n;
                }
                (_, 1) => p += 8,
                (f, 2) => {
                    let (l, n) = varint(&data[p..]);
                    p += n;
                    if f == 5 {
                        parse_summary(&data[p..p + l as usize], step, &mut out);
                    }
                    p += l as usize;
                }
                _ => break,
            }
        }
    }
    Ok(out)
}

fn parse_summary(s: &[u8], step: u64, out: &mut Vec<(u64, String, f32)>) {
    let mut p = 0;
    while p < s.len() {
        let (_, n) = varint(&s[p..]);
        p += n;
        let (l, n) = varint(&s[p..]);
        p += n;
        let val = &s[p..p + l as usize];
        p += l as usize;
        let (mut tag, mut value, mut q) = (String::new(), 0f32, 0);
        while q < val.len() {
            let (key, n) = varint(&val[q..]);
            q += n;
            if key == (1 << 3) | 2 {
                let (l, n) = varint(&val[q..]);
                q += n;
                tag = String::from_utf8_lossy(&val[q..q + l as usize]).into();
                q += l as usize;
            } else if key == (2 << 3) | 5 {
                value = f32::from_le_bytes(val[q..q + 4].try_into().unwrap());
                q += 4;
            } else {
                break;
            }
        }
        out.push((step, tag, value));
    }
}

fn varint(b: &[u8]) -> (u64, usize) {
    let (mut v, mut shift, mut i) = (0u64, 0, 0);
    while i < b.len() {
        v |= ((b[i] & 0x7f) as u64) << shift;
        i += 1;
        if b[i - 1] < 0x80 {
            break;
        }
        shift += 7;
    }
    (v, i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_file_roundtrip_and_crc() {
        // Check values: CRC32C's published one, and the masked values that TensorBoard 2.18's own
        // implementation (tensorflow_stub/pywrap_tensorflow.py, masked_crc32c) gives.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
        assert_eq!(masked_crc(b"brain.Event:2"), 0x7c06_01ee);
        assert_eq!(masked_crc(&24u64.to_le_bytes()), 0x224b_7fa3);
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = MetricsLog::open(dir.path(), None).unwrap();
            log.log(7, "train", &[("lm_loss", 1.5), ("accuracy", 0.25)]).unwrap();
            log.flush().unwrap();
        }
        let tb =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_string_lossy().contains("tfevents")).unwrap();
        let ev = read_events(&tb).unwrap();
        assert_eq!(ev, vec![(7, "train/lm_loss".to_string(), 1.5), (7, "train/accuracy".to_string(), 0.25)]);
        let line = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        assert!(line.contains("\"lm_loss\":1.5"));
    }

    #[test]
    fn resume_drops_entries_after_the_checkpoint_and_torn_tails_and_a_new_run_starts_fresh() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = MetricsLog::open(dir.path(), None).unwrap();
            for step in 1..=5 {
                log.log(step, "train", &[("lm_loss", step as f64)]).unwrap();
            }
            log.flush().unwrap();
        }
        let tb =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_string_lossy().contains("tfevents")).unwrap();
        // A kill mid-write: a torn JSON line and a torn event record.
        let mut f = OpenOptions::new().append(true).open(dir.path().join("metrics.jsonl")).unwrap();
        f.write_all(b"{\"step\":6,\"lm").unwrap();
        let mut t = OpenOptions::new().append(true).open(&tb).unwrap();
        t.write_all(&[9, 0, 0, 0, 0, 0, 0]).unwrap();
        drop((f, t));
        {
            let mut log = MetricsLog::open(dir.path(), Some((3, None))).unwrap();
            log.log(4, "train", &[("lm_loss", 40.0)]).unwrap();
            log.flush().unwrap();
        }
        let steps: Vec<u64> = std::fs::read_to_string(dir.path().join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, vec![1, 2, 3, 4]);
        let ev: Vec<(u64, f32)> = read_events(&tb).unwrap().into_iter().map(|(s, _, v)| (s, v)).collect();
        assert_eq!(ev, vec![(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]);
        // Not resuming: the old logs go.
        drop(MetricsLog::open(dir.path(), None).unwrap());
        assert_eq!(std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap(), "");
    }

    /// A checkpoint written after step 2's training record but before its evaluation (an
    /// interval checkpoint at the end of an iteration), then a kill after the evaluation was
    /// logged: the resumed run redoes that evaluation, so the log mark drops the first one. By
    /// step alone it would stay, and appear twice.
    #[test]
    fn resume_cuts_the_logs_at_the_checkpoints_mark() {
        let dir = tempfile::tempdir().unwrap();
        let mark = {
            let mut log = MetricsLog::open(dir.path(), None).unwrap();
            log.log(1, "train", &[("lm_loss", 1.0)]).unwrap();
            log.log(2, "train", &[("lm_loss", 2.0)]).unwrap();
            log.flush().unwrap();
            let mark = log.mark().unwrap();
            log.log(2, "eval", &[("accuracy", 0.5)]).unwrap();
            log.log(3, "train", &[("lm_loss", 3.0)]).unwrap();
            log.flush().unwrap();
            mark
        };
        let tb =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).find(|p| p.to_string_lossy().contains("tfevents")).unwrap();
        let records = |dir: &Path| -> Vec<(u64, String)> {
            std::fs::read_to_string(dir.join("metrics.jsonl"))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .map(|v| (v["step"].as_u64().unwrap(), v["split"].as_str().unwrap().to_string()))
                .collect()
        };
        let copy = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, copy.path().join(f.file_name().unwrap())).unwrap();
        }
        drop(MetricsLog::open(dir.path(), Some((2, Some(mark)))).unwrap());
        assert_eq!(records(dir.path()), vec![(1, "train".into()), (2, "train".into())]);
        assert_eq!(read_events(&tb).unwrap().iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 2]);
        // A mark that does not fit its log (not on a line's end): that log is filtered by step
        // instead (the evaluation stays); the other is cut at its mark.
        let bad = LogMark { metrics_jsonl: mark.metrics_jsonl - 3, ..mark };
        drop(MetricsLog::open(copy.path(), Some((2, Some(bad)))).unwrap());
        assert_eq!(records(copy.path()), vec![(1, "train".into()), (2, "train".into()), (2, "eval".into())]);
        let tb_copy = copy.path().join(tb.file_name().unwrap());
        assert_eq!(read_events(&tb_copy).unwrap().iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 2]);
    }
}
