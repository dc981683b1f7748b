//! Reads the `question,answer[,...]` CSV files of Sudoku-Extreme and Maze-Hard (plain or `.gz`),
//! with errors that name the file and the line.

use anyhow::{Context, Result, anyhow, bail};
use std::path::Path;

/// One puzzle row: its 1-based line in the file, question and answer strings, optional rating.
#[derive(Debug, Clone)]
pub struct Row {
    pub line: u64,
    pub question: String,
    pub answer: String,
    pub rating: Option<f64>,
}

/// Reads every row; `question` and `answer` columns are found by header name.
pub fn read(path: &Path) -> Result<Vec<Row>> {
    let reader = crate::util::fs::open_text(path)?;
    let mut csv = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(reader);
    let where_ = |line: Option<u64>| format!("{}:{}", path.display(), line.unwrap_or(1));
    let headers = csv.headers().with_context(|| format!("{}: cannot read the CSV header", where_(Some(1))))?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let q = col("question").ok_or_else(|| anyhow!("{}: no `question` column in header {:?}", where_(Some(1)), headers))?;
    let a = col("answer").ok_or_else(|| anyhow!("{}: no `answer` column in header {:?}", where_(Some(1)), headers))?;
    let r = col("rating");
    let mut rows = Vec::new();
    for rec in csv.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map(|p| p.line());
            match e.kind() {
                csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                    anyhow!("{}: {len} fields where the header has {expected_len} (truncated or malformed line)", where_(line))
                }
                _ => anyhow!("{}: {e}", where_(line)),
            }
        })?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let rating = match r.map(|i| rec[i].trim()) {
            Some(t) if !t.is_empty() => {
                Some(t.parse::<f64>().map_err(|_| anyhow!("{}: rating `{t}` is not a number", where_(Some(line))))?)
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
