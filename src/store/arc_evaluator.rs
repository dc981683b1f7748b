//! The reference's `evaluators` key, as its hydra command line writes it
//! (`evaluators=[{name: arc@ARC, aggregated_voting: False}]`): the evaluators' names, and the ARC
//! evaluator's arguments (`evaluators/arc.py`, class `ARC`).
//!
//! Hydra replaces the whole list, so an `evaluators=...` override sets every argument: those it
//! leaves out take the reference's defaults.

use anyhow::{Result, bail, ensure};
use serde::{Deserialize, Serialize};

/// The reference's name of its ARC evaluator, the one trm has.
pub const ARC_EVALUATOR: &str = "arc@ARC";

/// The most attempts per test input `submission.json` may hold: each test input's list has
/// exactly `submission_K` entries, so a huge one would fill memory and disk with blank attempts.
pub const MAX_SUBMISSION_K: usize = 1000;

/// The arguments of the ARC evaluator, by the reference's names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArcEvaluatorArgs {
    /// Every evaluation of a run adds its votes to one pool, and pass@k and the submission are
    /// those of the pool: the predictions of every checkpoint evaluated so far vote together
    /// (the reference's default). False: each evaluation votes alone.
    pub aggregated_voting: bool,
    /// Attempts per test input in `submission.json`.
    #[serde(rename = "submission_K")]
    pub submission_k: usize,
    /// The k of each `ARC/pass@k` reported.
    #[serde(rename = "pass_Ks")]
    pub pass_ks: Vec<usize>,
}

impl Default for ArcEvaluatorArgs {
    /// The reference's defaults.
    fn default() -> Self {
        ArcEvaluatorArgs { aggregated_voting: true, submission_k: 2, pass_ks: vec![1, 2, 5, 10, 100, 1000] }
    }
}

impl ArcEvaluatorArgs {
    /// What a checkpoint of a trm version that did not record these arguments did: the
    /// reference's defaults, except that each evaluation voted alone.
    pub fn unrecorded() -> Self {
        ArcEvaluatorArgs { aggregated_voting: false, ..Default::default() }
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(
            (1..=MAX_SUBMISSION_K).contains(&self.submission_k),
            "evaluators: submission_K must be from 1 to {MAX_SUBMISSION_K} (attempts per test input; Kaggle scores 2), not {}",
            self.submission_k
        );
        ensure!(!self.pass_ks.is_empty(), "evaluators: pass_Ks is empty; give the k of each pass@k to report, e.g. pass_Ks: [1,2]");
        ensure!(self.pass_ks.iter().all(|&k| k >= 1), "evaluators: every k of pass_Ks must be at least 1, not {:?}", self.pass_ks);
        let mut seen = self.pass_ks.clone();
        seen.sort_unstable();
        seen.dedup();
        ensure!(seen.len() == self.pass_ks.len(), "evaluators: pass_Ks lists a k twice: {:?}", self.pass_ks);
        Ok(())
    }
}

/// Splits `s` at the commas outside brackets, braces and quotes.
fn split_top(s: &str) -> Vec<&str> {
    let (mut depth, mut quote, mut start, mut out) = (0i32, None, 0, vec![]);
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect()
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner.trim();
        }
    }
    s
}

/// Parses the value of an `evaluators=` override (not `null`): `[]`, `[arc@ARC]`, a bare
/// `arc@ARC`, or the reference's maps `[{name: arc@ARC, aggregated_voting: False, submission_K: 2,
/// pass_Ks: [1,2,5]}]`. Returns the names and the ARC evaluator's arguments. Names are checked
/// by the configuration (`TrainConfig::validate`), the arguments' values here.
pub fn parse_evaluators(raw: &str) -> Result<(Vec<String>, ArcEvaluatorArgs)> {
    let v = unquote(raw);
    let inner = v.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(v);
    let mut args = ArcEvaluatorArgs::default();
    let mut names = vec![];
    for item in split_top(inner) {
        let Some(map) = item.strip_prefix('{').and_then(|r| r.strip_suffix('}')) else {
            ensure!(!item.contains([':', '{', '}', '[', ']']), "evaluators={}: `{item}` is not an evaluator's name", raw.trim());
            names.push(unquote(item).to_string());
            continue;
        };
        let mut name = None;
        for pair in split_top(map) {
            let Some((key, value)) = pair.split_once(':') else {
                bail!("evaluators={}: `{pair}` is not `key: value`", raw.trim());
            };
            let (key, raw_value, value) = (unquote(key), value.trim(), unquote(value));
            let what = || format!("evaluators={}: {key}: {raw_value}", raw.trim());
            match key {
                "name" => name = Some(value.to_string()),
                "aggregated_voting" => {
                    // Unquoted, as hydra reads a boolean (quoted, "False" is a string, which the
                    // reference's evaluator would take as true).
                    args.aggregated_voting = match raw_value.to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => bail!("{}: give True or False, unquoted", what()),
                    }
                }
                // Numbers unquoted too: quoted, hydra gives the reference's evaluator a string.
                "submission_K" => {
                    args.submission_k = raw_value.parse().map_err(|_| anyhow::anyhow!("{}: give a whole number, unquoted", what()))?
                }
                "pass_Ks" => {
                    let list = raw_value.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
                    let ks = list.map(|l| split_top(l).iter().map(|k| k.parse::<usize>()).collect::<Result<Vec<_>, _>>());
                    args.pass_ks = match ks {
                        Some(Ok(ks)) => ks,
                        _ => bail!("{}: give a list of whole numbers, unquoted, such as [1,2,5]", what()),
                    };
                }
                "data_path" | "eval_metadata" => {
                    bail!("evaluators={}: {key} is set by the run (its data set), not given", raw.trim())
                }
                _ => bail!(
                    "evaluators={}: the ARC evaluator has no argument `{key}`; its arguments are aggregated_voting, submission_K and \
                     pass_Ks",
                    raw.trim()
                ),
            }
        }
        let Some(name) = name else { bail!("evaluators={}: `{item}` has no name (name: {ARC_EVALUATOR})", raw.trim()) };
        names.push(name);
    }
    args.validate()?;
    Ok((names, args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_arguments_are_read_as_hydra_writes_them() {
        for ov in ["[]", "\"[]\"", "'[]'"] {
            assert_eq!(parse_evaluators(ov).unwrap(), (vec![], ArcEvaluatorArgs::default()), "{ov}");
        }
        for ov in ["[arc@ARC]", "arc@ARC", "\"[{name: arc@ARC}]\"", "[{name: 'arc@ARC'}]", "[{\"name\": \"arc@ARC\"}]"] {
            assert_eq!(parse_evaluators(ov).unwrap(), (vec![ARC_EVALUATOR.to_string()], ArcEvaluatorArgs::default()), "{ov}");
        }
        let (names, args) = parse_evaluators("[{name: arc@ARC, aggregated_voting: False, submission_K: 3, pass_Ks: [1, 2,10]}]").unwrap();
        assert_eq!(names, [ARC_EVALUATOR]);
        assert_eq!(args, ArcEvaluatorArgs { aggregated_voting: false, submission_k: 3, pass_ks: vec![1, 2, 10] });
        // Names are the configuration's to check; two items are two names.
        assert_eq!(parse_evaluators("[arc@ARC, x@Y]").unwrap().0, ["arc@ARC", "x@Y"]);
    }

    #[test]
    fn a_bad_argument_is_named() {
        let err = |ov: &str| parse_evaluators(ov).unwrap_err().to_string();
        assert!(err("[{name: arc@ARC, votes: 3}]").contains("no argument `votes`"));
        assert!(err("[{name: arc@ARC, aggregated_voting: maybe}]").contains("True or False"));
        assert!(err("[{name: arc@ARC, aggregated_voting: 'False'}]").contains("unquoted"));
        assert!(!parse_evaluators("\" [{name: arc@ARC, aggregated_voting: FALSE}] \"").unwrap().1.aggregated_voting);
        assert!(err("[{name: arc@ARC, submission_K: two}]").contains("whole number"));
        assert!(err("[{name: arc@ARC, submission_K: 0}]").contains("from 1 to 1000"));
        assert!(err("[{name: arc@ARC, submission_K: 1001}]").contains("from 1 to 1000"));
        assert_eq!(parse_evaluators("[{name: arc@ARC, submission_K: 1000}]").unwrap().1.submission_k, 1000);
        assert!(err("[{name: arc@ARC, submission_K: '3'}]").contains("unquoted"));
        assert!(err("[{name: arc@ARC, pass_Ks: '[1,2]'}]").contains("unquoted"));
        assert!(err("[{name: arc@ARC, pass_Ks: [1, '2']}]").contains("unquoted"));
        assert!(err("[{name: arc@ARC, pass_Ks: 3}]").contains("list of whole numbers"));
        assert!(err("[{name: arc@ARC, pass_Ks: []}]").contains("pass_Ks is empty"));
        assert!(err("[{name: arc@ARC, pass_Ks: [1,1]}]").contains("twice"));
        assert!(err("[{name: arc@ARC, pass_Ks: [0]}]").contains("at least 1"));
        assert!(err("[{aggregated_voting: False}]").contains("has no name"));
        assert!(err("[{name: arc@ARC, data_path: x}]").contains("set by the run"));
        assert!(err("[{name: arc@ARC, submission_K}]").contains("not `key: value`"));
    }
}
