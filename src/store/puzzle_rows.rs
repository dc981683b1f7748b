//! The puzzle-embedding table a run starts with when it starts from another model's weights
//! (`trm train --init-from`, `trm adapt`). A row belongs to a puzzle identifier, so a row is kept
//! only where it means the same puzzle:
//!
//! ```text
//! both identifier maps known      rows matched by name; a name the checkpoint lacks gets the fill
//! a map unknown, same row count   the table as it is (as the reference keeps a table of its shape)
//! a map unknown, other row count  every row the fill (the reference's `load_checkpoint` rule)
//! ```
//!
//! The fill is the mean of the checkpoint's rows (the reference's rule, for `--init-from`), or zero
//! (`trm adapt`, whose new identifiers continue the checkpoint's map: fresh rows, as training
//! starts them).

use anyhow::{Result, ensure};
use burn::prelude::*;
use std::collections::HashMap;
use std::path::Path;

/// What a row the checkpoint has no trained value for starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewRows {
    /// The mean of the checkpoint's rows (the reference's `load_checkpoint`).
    Mean,
    /// Zero, as a freshly initialised table.
    Zero,
}

/// The identifier map that goes with a weights file: a trm checkpoint's own (or its run's), else
/// an `identifiers.json` beside the file; None when there is none.
pub fn identifiers_of(weights: &Path) -> Result<Option<Vec<String>>> {
    let dir = weights.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if dir.join("state.json").is_file() {
        return super::checkpoint::read_identifiers(dir).map(Some).or_else(|_| Ok(None));
    }
    let beside = dir.join("identifiers.json");
    if beside.is_file() { crate::util::fs::read_json(&beside).map(Some) } else { Ok(None) }
}

/// The table for `n` identifiers (named `data`, when the data set has an identifiers.json) from a
/// checkpoint's `stored` rows (named `checkpoint`), and a line that says what was done when rows
/// were not simply kept.
pub fn start_table<B: Backend>(
    stored: Tensor<B, 2>,
    n: usize,
    checkpoint: Option<&[String]>,
    data: Option<&[String]>,
    fill: NewRows,
) -> Result<(Tensor<B, 2>, Option<String>)> {
    let [old, _] = stored.dims();
    let fill_name = match fill {
        NewRows::Mean => format!("the mean of the checkpoint's {old} rows, as the reference's load_checkpoint does"),
        NewRows::Zero => "zero".to_string(),
    };
    let source: Vec<usize> = match (checkpoint, data) {
        (Some(cn), Some(dn)) => {
            ensure!(cn.len() == old, "the checkpoint's identifiers.json names {} identifiers, its puzzle table has {old} rows", cn.len());
            ensure!(dn.len() >= n, "the data set's identifiers.json names {} identifiers, it has {n}", dn.len());
            let mut row_of = HashMap::with_capacity(old);
            for (i, name) in cn.iter().enumerate() {
                row_of.entry(name.as_str()).or_insert(i);
            }
            dn[..n].iter().map(|name| row_of.get(name.as_str()).copied().unwrap_or(old)).collect()
        }
        _ if old == n => return Ok((stored, None)),
        _ => vec![old; n],
    };
    if source.iter().copied().eq(0..n) && old == n {
        return Ok((stored, None));
    }
    let kept = source.iter().filter(|&&s| s < old).count();
    let why = if checkpoint.is_some() && data.is_some() {
        format!("{kept} of the data set's {n} puzzle identifiers keep the checkpoint's embedding row (matched by name)")
    } else {
        format!(
            "the checkpoint's puzzle table has {old} rows, the data set {n} identifiers, and no identifiers.json on {} side to match them by",
            if checkpoint.is_none() && data.is_none() {
                "either"
            } else if checkpoint.is_none() {
                "the checkpoint's"
            } else {
                "the data's"
            }
        )
    };
    let note = if kept == n { why } else { format!("{why}; {} start from {fill_name}", n - kept) };
    let device = stored.device();
    let fill_row = match fill {
        NewRows::Mean => stored.clone().mean_dim(0),
        NewRows::Zero => Tensor::zeros([1, stored.dims()[1]], &device),
    };
    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(source.iter().map(|&s| s as i64).collect(), [n]), &device);
    Ok((Tensor::cat(vec![stored, fill_row], 0).select(0, index), Some(note)))
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = crate::backend::Cpu;

    fn table(rows: &[[f32; 2]]) -> Tensor<B, 2> {
        Tensor::from_data(TensorData::new(rows.concat(), [rows.len(), 2]), &Default::default())
    }
    fn values(t: Tensor<B, 2>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }
    fn names(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn rows_follow_their_names() {
        let stored = table(&[[0.0, 0.0], [1.0, 2.0], [3.0, 6.0]]);
        let old = names(&["<blank>", "a", "b"]);
        // Same map: the table as it is, no note.
        let (t, note) = start_table(stored.clone(), 3, Some(&old), Some(&old), NewRows::Mean).unwrap();
        assert_eq!((values(t), note), (values(stored.clone()), None));
        // Another data set: b kept, a gone, c new from the mean (4/3, 8/3).
        let new = names(&["<blank>", "b", "c"]);
        let (t, note) = start_table(stored.clone(), 3, Some(&old), Some(&new), NewRows::Mean).unwrap();
        let v = values(t);
        assert_eq!(&v[..4], &[0.0, 0.0, 3.0, 6.0]);
        assert!((v[4] - 4.0 / 3.0).abs() < 1e-6 && (v[5] - 8.0 / 3.0).abs() < 1e-6, "{v:?}");
        let note = note.unwrap();
        assert!(note.contains("2 of the data set's 3") && note.contains("1 start from the mean"), "{note}");
        // trm adapt: the data's map continues the checkpoint's; the new rows start at zero.
        let grown = names(&["<blank>", "a", "b", "x", "y"]);
        let (t, note) = start_table(stored.clone(), 5, Some(&old), Some(&grown), NewRows::Zero).unwrap();
        assert_eq!(values(t), vec![0.0, 0.0, 1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 0.0]);
        assert!(note.unwrap().contains("2 start from zero"));
        // A map that does not fit the table is an error.
        let e = start_table(stored, 3, Some(&old[..2]), Some(&new), NewRows::Mean).unwrap_err();
        assert!(format!("{e}").contains("names 2 identifiers, its puzzle table has 3 rows"));
    }

    #[test]
    fn without_names_the_reference_rule_applies() {
        let stored = table(&[[1.0, 0.0], [3.0, 4.0]]);
        let (t, note) = start_table(stored.clone(), 2, None, None, NewRows::Mean).unwrap();
        assert_eq!((values(t), note), (values(stored.clone()), None));
        let (t, note) = start_table(stored, 3, Some(&names(&["p", "q"])), None, NewRows::Mean).unwrap();
        assert_eq!(values(t), vec![2.0, 2.0, 2.0, 2.0, 2.0, 2.0]);
        let note = note.unwrap();
        assert!(note.contains("no identifiers.json on the data's side") && note.contains("3 start from the mean"), "{note}");
    }
}
