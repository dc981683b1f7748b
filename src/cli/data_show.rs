//! `trm data inspect DIR --show N`: examples of a built data set as text, question beside answer,
//! with the puzzle identifier's name, to see what a builder made (augmentations, translations,
//! the test split) without a model. Sudoku as digits, mazes as `# SGo`, ARC grids as colour
//! digits cropped to the cells in use; anything else as token numbers.

use crate::data::format::Split;
use crate::data::kind::PuzzleKind;
use crate::data::maze;

/// Prints `n` examples of `split`, spread evenly over it (all of them when it has fewer).
pub fn show(split: &Split, name: &str, identifiers: Option<&[String]>, n: usize) {
    let kind = PuzzleKind::of_split(split);
    let total = split.num_examples();
    let shown = n.min(total);
    println!("{name}: {shown} of {total} examples ({})", kind_name(kind));
    let mut offset = 0;
    let mut picks = (0..shown).map(|j| j * total / shown).peekable();
    for (set_name, set) in &split.sets {
        let end = offset + set.num_examples();
        while let Some(&i) = picks.peek().filter(|&&i| i < end) {
            picks.next();
            let local = i - offset;
            let puzzle = set.puzzle_indices.partition_point(|&s| s as usize <= local).saturating_sub(1);
            let id = set.puzzle_identifiers[puzzle];
            let label = identifiers.and_then(|names| names.get(id as usize)).map(|s| format!(" `{s}`")).unwrap_or_default();
            println!("\nexample {i} (set {set_name}, puzzle {puzzle}, identifier {id}{label})");
            let (q, a) = (render(kind, set.example_input(local)), render(kind, set.example_label(local)));
            print!("{}", beside(&q, &a));
        }
        offset = end;
    }
}

fn kind_name(kind: PuzzleKind) -> String {
    match kind {
        PuzzleKind::Sudoku => "Sudoku; question, then answer; . = blank".into(),
        PuzzleKind::Maze { side } => format!("{side}x{side} maze; question, then answer"),
        PuzzleKind::Arc => "ARC; input, then output; colour digits, cropped to the cells in use".into(),
        PuzzleKind::Other => "tokens".into(),
    }
}

/// One example's tokens as lines of text.
fn render(kind: PuzzleKind, tokens: &[u8]) -> Vec<String> {
    match kind {
        PuzzleKind::Sudoku => tokens
            .chunks(9)
            .map(|row| row.iter().map(|&t| if (2..=10).contains(&t) { char::from(b'0' + t - 1) } else { '.' }).collect())
            .collect(),
        PuzzleKind::Maze { side } => tokens.chunks(side).map(|row| row.iter().map(|&t| maze::char_of(t)).collect()).collect(),
        PuzzleKind::Arc => arc_grid(tokens),
        PuzzleKind::Other => vec![tokens.iter().map(u8::to_string).collect::<Vec<_>>().join(" ")],
    }
}

/// The 30 x 30 canvas (0 pad, 1 end of grid, 2..=11 colours 0-9) cropped to its colour cells.
fn arc_grid(tokens: &[u8]) -> Vec<String> {
    let side = crate::data::arc_task::MAX_SIDE;
    let used: Vec<(usize, usize)> = (0..tokens.len()).filter(|&i| tokens[i] >= 2).map(|i| (i / side, i % side)).collect();
    let (Some(r1), Some(c1)) = (used.iter().map(|p| p.0).max(), used.iter().map(|p| p.1).max()) else {
        return vec!["(no grid)".into()];
    };
    let (r0, c0) = (used.iter().map(|p| p.0).min().unwrap_or(0), used.iter().map(|p| p.1).min().unwrap_or(0));
    (r0..=r1)
        .map(|r| {
            (c0..=c1)
                .map(|c| match tokens[r * side + c] {
                    t @ 2..=11 => char::from(b'0' + t - 2),
                    _ => ' ',
                })
                .collect()
        })
        .collect()
}

/// Two blocks of lines side by side, the second starting three columns after the widest line of
/// the first.
fn beside(a: &[String], b: &[String]) -> String {
    let width = a.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for i in 0..a.len().max(b.len()) {
        let left = a.get(i).map_or("", String::as_str);
        let right = b.get(i).map_or("", String::as_str);
        out += format!("{left:<width$}   {right}").trim_end();
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_render_as_a_person_reads_them() {
        let mut canvas = vec![0u8; 900];
        // A 2 x 3 grid translated to row 4, column 5, then its end-of-grid marks.
        for (k, t) in [2u8, 3, 4, 11, 2, 2].into_iter().enumerate() {
            canvas[(4 + k / 3) * 30 + 5 + k % 3] = t;
        }
        canvas[4 * 30 + 8] = 1;
        assert_eq!(arc_grid(&canvas), vec!["012", "900"]);
        assert_eq!(arc_grid(&[0; 900]), vec!["(no grid)"]);
        let sudoku: Vec<u8> = (0..81).map(|i| if i % 10 == 0 { 1 } else { (i % 9) as u8 + 2 }).collect();
        assert_eq!(render(PuzzleKind::Sudoku, &sudoku)[0], ".23456789");
        assert_eq!(beside(&["ab".into(), "c".into()], &["x".into()]), "ab   x\nc\n");
    }
}
