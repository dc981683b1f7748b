//! `trm report`: the HTML page (and PNG charts) of a training run.

use crate::report::{ReportOptions, write_report};
use anyhow::Result;
use clap::builder::TypedValueParser as _;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Run folder (metrics.jsonl, checkpoints/)
    #[arg(long)]
    pub run: PathBuf,
    /// HTML file to write; the PNG charts go beside it with the extension .png. Never one of the
    /// run's or the data's files; an existing file is replaced only with --force
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing --out file (and its .png)
    #[arg(long)]
    pub force: bool,
    /// Data set whose test puzzles are drawn [default: the data the run was trained on]
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Test puzzles to solve and draw step by step
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=super::limits::MAX_PUZZLES).map(|v| v as usize))]
    pub puzzles: usize,
    /// Supervision steps per puzzle [default: the model's halt_max_steps]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=super::limits::MAX_STEPS).map(|v| v as usize))]
    pub steps: Option<usize>,
    /// Do not write the PNG charts
    #[arg(long)]
    pub no_png: bool,
    /// CPU threads [default: all cores]
    #[arg(long, value_parser = super::threads)]
    pub threads: Option<usize>,
}

pub fn run(a: ReportArgs) -> Result<()> {
    crate::backend::set_threads(a.threads);
    anyhow::ensure!(
        a.puzzles > 0 || (a.data.is_none() && a.steps.is_none()),
        "--data and --steps are for the puzzles drawn step by step; with --puzzles 0 none are drawn"
    );
    // The data set drawn from: --data, else the one the run recorded (never written over either).
    let data = a.data.clone().or_else(|| crate::report::recorded_data(&a.run)).unwrap_or_default();
    // A run's own files are never written over, but an earlier report inside it (`--out
    // RUN/report.html`, then again after more training) is nothing the report reads: it is
    // replaced like any file, with --force.
    let check = |out: &std::path::Path, flag: &str| {
        let run = crate::util::fs::Protected { path: &a.run, what: "the run being reported" };
        let data = crate::util::fs::Protected { path: &data, what: "the data set" };
        match is_earlier_report(out) {
            true => crate::util::fs::check_output(out, flag, &[data], a.force),
            false => crate::util::fs::check_output(out, flag, &[run, data], a.force),
        }
    };
    check(&a.out, "--out")?;
    if !a.no_png {
        anyhow::ensure!(
            a.out.extension().is_none_or(|e| !e.eq_ignore_ascii_case("png")),
            "--out {}: the report is HTML and its charts go beside it as a .png of the same name; name it .html (or pass --no-png)",
            a.out.display()
        );
        check(&a.out.with_extension("png"), "--out (its .png)")?;
    }
    let o = ReportOptions { run: a.run, out: a.out, data: a.data, puzzles: a.puzzles, steps: a.steps, png: !a.no_png };
    let n = write_report(&o)?;
    println!(
        "wrote {} ({n} puzzle{} drawn){}",
        o.out.display(),
        if n == 1 { "" } else { "s" },
        if o.png { format!(" and {}", o.out.with_extension("png").display()) } else { String::new() }
    );
    Ok(())
}

/// Whether `path` is a file a report wrote: an HTML page that starts as trm's report does, or a
/// PNG image (a run's own files are never images).
fn is_earlier_report(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 96];
    let Ok(n) = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)) else { return false };
    let head = &head[..n];
    head.starts_with(b"\x89PNG\r\n\x1a\n") || head.starts_with(crate::report::REPORT_HTML_START.as_bytes())
}
