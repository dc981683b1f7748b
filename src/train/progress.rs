//! What a person watching a training run sees: a progress bar with the loss and the examples per
//! second, the time per step measured after the first steps with the time left, and, without a
//! terminal for the bar (a log file, CI), a line every tenth of the run.

use indicatif::{ProgressBar, ProgressStyle};
use std::time::Instant;

/// Steps timed before the trainer prints its estimate of the time left.
const ESTIMATE_AFTER: u64 = 20;

/// The figures of a step that the display shows.
pub struct StepFigures {
    pub lm_loss: f64,
    pub accuracy: f64,
    pub exact: f64,
}

pub struct Progress {
    pb: ProgressBar,
    /// No lines at all (`--quiet`, or a rank other than 0).
    quiet: bool,
    stop_at: u64,
    first_step: u64,
    t_first: Instant,
    window_rows: usize,
    window_t: Instant,
    /// The run starts at a depth curriculum's shallow stage.
    shallow_start: bool,
}

impl Progress {
    pub fn new(quiet: bool, stop_at: u64, step: u64) -> Self {
        let pb = if quiet { ProgressBar::hidden() } else { ProgressBar::new(stop_at) };
        pb.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps, eta {eta} {msg}").unwrap().progress_chars("=> "),
        );
        pb.set_position(step);
        Progress {
            pb,
            quiet,
            stop_at,
            first_step: step,
            t_first: Instant::now(),
            window_rows: 0,
            window_t: Instant::now(),
            shallow_start: false,
        }
    }

    /// The first steps run shallower than the rest (a depth curriculum): the early estimate says so.
    pub fn starts_shallow(&mut self) {
        self.shallow_start = true;
    }

    /// A line above the bar, or on stderr where there is no bar; nothing when quiet.
    pub fn note(&self, line: String) {
        if !self.quiet {
            self.say(line);
        }
    }

    pub fn finish(&self) {
        self.pb.finish_and_clear();
    }

    /// A line above the bar, or on stderr where there is no bar.
    fn say(&self, line: String) {
        if self.pb.is_hidden() { eprintln!("{line}") } else { self.pb.println(line) }
    }

    /// After optimiser step `step` over `rows` examples.
    pub fn after_step(&mut self, step: u64, rows: usize, f: StepFigures) {
        self.window_rows += rows;
        self.pb.set_position(step);
        let left = self.stop_at.saturating_sub(step);
        if step == self.first_step + ESTIMATE_AFTER && left > 0 && !self.quiet {
            // One line early on: what this machine takes per step, and for the rest.
            let per = self.t_first.elapsed().as_secs_f64() / ESTIMATE_AFTER as f64;
            let caveat = if self.shallow_start { " at this depth (the depth curriculum's deeper stages take longer per step)" } else { "" };
            self.say(format!(
                "about {per:.2} s per step on this machine: about {} for the {left} steps left{caveat}",
                span(per * left as f64)
            ));
        }
        if self.pb.is_hidden() && !self.quiet && self.stop_at >= 10 && step.is_multiple_of(self.stop_at / 10) {
            // No terminal for the bar: a line every tenth of the run.
            let per = self.t_first.elapsed().as_secs_f64() / (step - self.first_step).max(1) as f64;
            eprintln!(
                "step {step}/{}: {per:.2} s per step, about {} left; lm_loss {:.4}, exact accuracy {:.3}",
                self.stop_at,
                span(per * left as f64),
                f.lm_loss,
                f.exact
            );
        }
        if step.is_multiple_of(10) || step == 1 {
            let rate = self.window_rows as f64 / self.window_t.elapsed().as_secs_f64().max(1e-9);
            self.pb.set_message(format!("loss {:.4} acc {:.3} exact {:.3} | {rate:.0} ex/s", f.lm_loss, f.accuracy, f.exact));
            (self.window_rows, self.window_t) = (0, Instant::now());
        }
    }
}

/// A duration for people: seconds, minutes, hours or days, whichever reads best.
fn span(secs: f64) -> String {
    match secs {
        s if s < 90.0 => format!("{s:.0} s"),
        s if s < 90.0 * 60.0 => format!("{:.1} minutes", s / 60.0),
        s if s < 48.0 * 3600.0 => format!("{:.1} hours", s / 3600.0),
        s => format!("{:.1} days", s / 86400.0),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn spans_read_in_the_unit_that_fits() {
        assert_eq!(super::span(42.0), "42 s");
        assert_eq!(super::span(600.0), "10.0 minutes");
        // The paper's Sudoku recipe at the first H200 estimate (11.31 s x 65084 steps).
        assert_eq!(super::span(11.31 * 65084.0), "8.5 days");
        assert_eq!(super::span(5.0 * 3600.0), "5.0 hours");
    }
}
