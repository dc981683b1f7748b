//! Named configurations compiled into the binary: the preset files of `configs/` (the reference
//! README's runs, HRM's, and small CPU ones) and the rows of the TRM paper's tables
//! (`configs/paper.toml`: a base preset plus overrides each, with the numbers the paper prints).

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The preset files shipped in `configs/`.
pub const PRESETS: &[(&str, &str)] = &[
    ("sudoku-mlp", include_str!("../../configs/sudoku-mlp.toml")),
    ("sudoku-att", include_str!("../../configs/sudoku-att.toml")),
    ("maze", include_str!("../../configs/maze.toml")),
    ("arc1", include_str!("../../configs/arc1.toml")),
    ("arc2", include_str!("../../configs/arc2.toml")),
    ("hrm-sudoku", include_str!("../../configs/hrm-sudoku.toml")),
    ("hrm-maze", include_str!("../../configs/hrm-maze.toml")),
    ("hrm-arc1", include_str!("../../configs/hrm-arc1.toml")),
    ("sudoku-tiny", include_str!("../../configs/sudoku-tiny.toml")),
    ("demo", include_str!("../../configs/demo.toml")),
];

const PAPER: &str = include_str!("../../configs/paper.toml");

/// One row of a table of the TRM paper, as a preset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperRow {
    /// Table number in the paper (v1).
    pub table: String,
    /// The row's label in the paper.
    pub row: String,
    /// The preset it starts from, and the overrides (reference key names) that make the row.
    pub base: String,
    pub overrides: Vec<String>,
    /// Data set the row was measured on: sudoku, maze or arc.
    pub shape: String,
    /// What the paper prints for the row (absent where the table has no such column).
    pub accuracy: Option<f64>,
    pub depth: Option<usize>,
    pub nfp: Option<usize>,
    pub params: Option<String>,
}

/// Every paper row by preset name (`paper-t1-w-act`, ...).
pub fn paper_rows() -> BTreeMap<String, PaperRow> {
    toml::from_str(PAPER).expect("configs/paper.toml parses")
}

/// All preset names: the files, then the paper rows.
pub fn names() -> Vec<String> {
    let mut out: Vec<String> = PRESETS.iter().map(|(n, _)| n.to_string()).collect();
    out.extend(paper_rows().into_keys());
    out
}

/// The data set a preset is meant for (`trm info` uses it for the sequence length and vocabulary
/// when no data folder is given).
pub fn shape_of(name: &str) -> Option<String> {
    if let Some(row) = paper_rows().get(name) {
        return Some(row.shape.clone());
    }
    let shape = match name {
        n if n.starts_with("sudoku") || n == "demo" || n == "hrm-sudoku" => "sudoku",
        "maze" | "hrm-maze" => "maze",
        "arc1" | "arc2" | "hrm-arc1" => "arc",
        _ => return None,
    };
    Some(shape.into())
}

/// Loads a preset name or a TOML file path, with the overrides a paper row applies on top of its
/// base (to apply before the user's; empty for a preset or a file).
pub fn load_base(preset_or_file: &str) -> Result<(toml::Table, Vec<String>)> {
    if let Some((_, text)) = PRESETS.iter().find(|(n, _)| *n == preset_or_file) {
        return Ok((text.parse::<toml::Table>().with_context(|| format!("{preset_or_file}: invalid TOML"))?, vec![]));
    }
    if let Some(row) = paper_rows().get(preset_or_file) {
        let (t, mut overrides) = load_base(&row.base)?;
        overrides.extend(row.overrides.iter().cloned());
        return Ok((t, overrides));
    }
    let path = std::path::Path::new(preset_or_file);
    if !path.exists() {
        bail!(
            "`{preset_or_file}` is neither a preset ({}, or a paper row: trm info --list) nor a readable TOML file: no such file",
            PRESETS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
        );
    }
    // A configuration is a few KB; a pipe or /dev/zero is refused before it is read.
    let text = crate::util::fs::read_text_capped(path, 1 << 20, "a TOML configuration")?;
    Ok((text.parse::<toml::Table>().with_context(|| format!("{preset_or_file}: invalid TOML"))?, vec![]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_paper_row_names_an_existing_base_and_shape() {
        let rows = paper_rows();
        assert!(rows.len() >= 30, "{} rows", rows.len());
        for (name, row) in &rows {
            assert!(PRESETS.iter().any(|(n, _)| *n == row.base), "{name}: base {}", row.base);
            assert!(["sudoku", "maze", "arc"].contains(&row.shape.as_str()), "{name}: shape {}", row.shape);
            assert!(name.starts_with(&format!("paper-t{}-", row.table)), "{name} is in table {}", row.table);
        }
    }
}
