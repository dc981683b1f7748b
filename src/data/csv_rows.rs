//! Reads the `question,answer[,...]` CSV files of Sudoku-Extreme and Maze-Hard (plain or `.gz`),
//! with errors that name the file and the line.

use anyhow::{Context, Result, anyhow, bail};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

/// One puzzle row: its 1-based line in the file, question and answer strings, optional rating.
#[derive(Debug, Clone)]
pub struct Row {
    pub line: u64,
    pub question: String,
    pub answer: String,
    pub rating: Option<f64>,
}

/// The line numbers of a stream's bytes, counted as they are read: the csv crate's own count
/// is one short after a CRLF header (the real Sudoku-Extreme files end lines with CRLF). Newlines
/// behind the position asked about are dropped, so memory stays that of the read-ahead buffer.
#[derive(Clone, Default)]
struct Lines(Rc<RefCell<(VecDeque<u64>, u64)>>);

impl Lines {
    /// The 1-based line of byte offset `byte` (asked about in increasing order).
    fn at(&self, byte: u64) -> u64 {
        let mut s = self.0.borrow_mut();
        // `<=`: after a CRLF the csv crate places a record at the `\n` that ends the line before.
        while s.0.front().is_some_and(|&p| p <= byte) {
            s.0.pop_front();
            s.1 += 1;
        }
        s.1 + 1
    }

    /// The line being read: the one after every newline read so far.
    fn current(&self) -> u64 {
        let s = self.0.borrow();
        s.1 + s.0.len() as u64 + 1
    }
}

/// The longest line read: a Maze-Hard row (two 30×30 grids) is under 2 KB, so a longer line
/// means this is not a puzzle CSV (a binary file, /dev/zero), and reading on would fill memory.
const MAX_LINE_BYTES: u64 = 1 << 20;

struct Counting<R> {
    inner: R,
    read: u64,
    /// Bytes since the last newline.
    line_bytes: u64,
    lines: Lines,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut s = self.lines.0.borrow_mut();
        s.0.extend(buf[..n].iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| self.read + i as u64));
        self.line_bytes = match buf[..n].iter().rposition(|&b| b == b'\n') {
            Some(i) => (n - 1 - i) as u64,
            None => self.line_bytes + n as u64,
        };
        self.read += n as u64;
        if self.line_bytes > MAX_LINE_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a line longer than {} KB: not a puzzle CSV", MAX_LINE_BYTES >> 10),
            ));
        }
        Ok(n)
    }
}

/// `text` for an error message: at most 40 characters, then "…".
fn clip(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Reads every row; `question` and `answer` columns are found by header name.
pub fn read(path: &Path) -> Result<Vec<Row>> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(meta.is_file(), "{} is not a regular file (a folder, pipe or device): give a CSV file", path.display());
    let lines = Lines::default();
    let reader = Counting { inner: crate::util::fs::open_text(path)?, read: 0, line_bytes: 0, lines: lines.clone() };
    let mut csv = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(reader);
    let where_ = |line: Option<u64>| format!("{}:{}", path.display(), line.unwrap_or(1));
    let headers = csv.headers().map_err(|e| anyhow!("{}: cannot read the CSV header: {e}", where_(Some(1))))?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let names = || {
        let shown: Vec<String> = headers.iter().take(8).map(|h| format!("`{}`", clip(h))).collect();
        let more = headers.len().saturating_sub(8);
        shown.join(", ") + &if more > 0 { format!(" and {more} more") } else { String::new() }
    };
    let q = col("question").ok_or_else(|| anyhow!("{}: no `question` column in the header (it has {})", where_(Some(1)), names()))?;
    let a = col("answer").ok_or_else(|| anyhow!("{}: no `answer` column in the header (it has {})", where_(Some(1)), names()))?;
    let r = col("rating");
    let mut rows = Vec::new();
    for rec in csv.records() {
        let rec = rec.map_err(|e| {
            let line = Some(e.position().map_or_else(|| lines.current(), |p| lines.at(p.byte())));
            match e.kind() {
                csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                    anyhow!("{}: {len} fields where the header has {expected_len} (truncated or malformed line)", where_(line))
                }
                _ => anyhow!("{}: {e}", where_(line)),
            }
        })?;
        let line = rec.position().map(|p| lines.at(p.byte())).unwrap_or(0);
        let rating = match r.map(|i| rec[i].trim()) {
            Some(t) if !t.is_empty() => {
                Some(t.parse::<f64>().map_err(|_| anyhow!("{}: rating `{}` is not a number", where_(Some(line)), clip(t)))?)
            }
            _ => None,
        };
        rows.push(Row { line, question: rec[q].to_string(), answer: rec[a].to_string(), rating });
    }
    if rows.is_empty() {
        bail!("{}: no puzzles in file", path.display());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    /// The line a bad row is reported at is its line in the file, with LF or CRLF line ends, and
    /// with a quoted field that spans two lines before it.
    #[test]
    fn rows_are_named_by_their_line_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text, line) in [
            ("lf.csv", "q,answer,question,rating\na,b,c,1\nd,e,f,x\n", 3),
            ("crlf.csv", "q,answer,question,rating\r\na,b,c,1\r\na,b,c,2\r\nd,e,f,x\r\n", 4),
            ("quoted.csv", "q,answer,question,rating\r\n\"a\r\nb\",b,c,1\r\nd,e,f,x\r\n", 4),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            let e = format!("{:#}", super::read(&p).unwrap_err());
            assert!(e.contains(&format!("{name}:{line}: rating `x`")), "{name}: {e}");
        }
    }

    /// A file that is no puzzle CSV is refused early, in a short message: a line of 2 MB (as
    /// /dev/zero would give without end) stops the reading, a header of long names is clipped,
    /// and a device or pipe is not read at all.
    #[test]
    fn hostile_csv_files_are_refused_in_a_few_words() {
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join("long.csv");
        std::fs::write(&long, vec![b'0'; 2 << 20]).unwrap();
        let e = format!("{:#}", super::read(&long).unwrap_err());
        assert!(e.contains("longer than 1024 KB") && e.len() < 300, "{e}");
        let late = dir.path().join("late.csv");
        let mut text = b"question,answer\na,b\n".to_vec();
        text.extend(vec![b'x'; 2 << 20]);
        std::fs::write(&late, text).unwrap();
        let e = format!("{:#}", super::read(&late).unwrap_err());
        assert!(e.contains("late.csv:3") && e.contains("longer than"), "{e}");
        let wide = dir.path().join("wide.csv");
        std::fs::write(&wide, format!("{},x\n1,2\n", "h".repeat(100_000))).unwrap();
        let e = format!("{:#}", super::read(&wide).unwrap_err());
        assert!(e.contains("no `question` column") && e.len() < 300, "{e}");
        #[cfg(unix)]
        {
            let e = format!("{:#}", super::read(std::path::Path::new("/dev/zero")).unwrap_err());
            assert!(e.contains("not a regular file"), "{e}");
        }
    }
}
