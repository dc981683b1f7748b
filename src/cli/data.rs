//! `trm data ...`: data set builders.

use crate::data::{arc, format, maze, sudoku};
use anyhow::Result;
use clap::builder::TypedValueParser as _;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Sudoku-Extreme from CSV (`question,answer` columns; plain or .gz)
    Sudoku(SudokuArgs),
    /// Maze-Hard from CSV (`question,answer` columns of `# SGo` characters; plain or .gz)
    Maze(MazeArgs),
    /// ARC-AGI-1/2 and ConceptARC from Kaggle-format challenges/solutions JSON
    Arc(ArcArgs),
    /// The embedded default: generate unique-solution Sudoku puzzles (no download needed)
    Generate(GenerateArgs),
    /// Check every file of a built data set folder, print its statistics, and with --show N
    /// print N examples as text (question beside answer)
    Inspect {
        /// Data set folder (holding train/ and test/)
        dir: PathBuf,
        /// Print N examples of --split, spread evenly over it, with their identifiers' names
        #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=super::limits::MAX_PUZZLES).map(|v| v as usize))]
        show: usize,
        /// The split --show draws from [default: train]
        #[arg(long, value_parser = ["train", "test"])]
        split: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct SudokuArgs {
    /// Training CSV file
    #[arg(long)]
    pub train: PathBuf,
    /// Test CSV file (never augmented)
    #[arg(long)]
    pub test: PathBuf,
    /// Output folder (gets train/, test/, identifiers.json)
    #[arg(long)]
    pub out: PathBuf,
    /// Keep N training puzzles drawn at random (seeded; all of them when the file has no more) [default: all]
    #[arg(long)]
    pub subsample: Option<usize>,
    /// Keep N test puzzles drawn at random (seeded; all of them when the file has no more) [default: all]
    #[arg(long)]
    pub test_subsample: Option<usize>,
    /// Random validity-preserving shuffles per training puzzle (reference README: 1000)
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=super::limits::MAX_AUG).map(|v| v as usize))]
    pub num_aug: usize,
    /// Seed of every random choice: --subsample, --test-subsample and the --num-aug shuffles (same
    /// seed, byte-identical output) [default: 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Replace a data set already in the output folder
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct MazeArgs {
    /// Training CSV file
    #[arg(long)]
    pub train: PathBuf,
    /// Test CSV file
    #[arg(long)]
    pub test: PathBuf,
    /// Output folder
    #[arg(long)]
    pub out: PathBuf,
    /// Add the 8 dihedral transforms of each training maze
    #[arg(long)]
    pub aug: bool,
    /// Refused: the maze builder draws nothing at random (its augmentation is the 8 fixed
    /// transforms); kept so that a command line with it says why
    #[arg(long, hide = true)]
    pub seed: Option<u64>,
    /// Replace a data set already in the output folder
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ArcArgs {
    /// Prefix of the JSON files: PREFIX_<subset>_challenges.json / _solutions.json
    #[arg(long, alias = "input-file-prefix")]
    pub input_prefix: String,
    /// Subsets to include, in order (e.g. training evaluation concept)
    #[arg(long, num_args = 1.., required = true)]
    pub subsets: Vec<String>,
    /// Subset(s) whose test pairs form the test split (e.g. evaluation)
    #[arg(long = "test-set", alias = "test-set-name", num_args = 1.., required = true)]
    pub test_set: Vec<String>,
    /// Output folder
    #[arg(long)]
    pub out: PathBuf,
    /// Augmentations per task (dihedral x colour permutation; reference: 1000)
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=super::limits::MAX_AUG).map(|v| v as usize))]
    pub num_aug: usize,
    /// Seed of every random choice
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Do not translate training examples on the 30x30 canvas (reference translates)
    #[arg(long)]
    pub no_translate: bool,
    /// Replace a data set already in the output folder
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Output folder
    #[arg(long)]
    pub out: PathBuf,
    /// Training puzzles to generate
    #[arg(long, default_value_t = 1000)]
    pub train: usize,
    /// Test puzzles to generate
    #[arg(long, default_value_t = 200)]
    pub test: usize,
    /// Target number of givens (clues): one number, or a range like 24-40 from which each puzzle
    /// draws its own; fewer is harder. 17 is the minimum possible.
    #[arg(long, default_value = "30")]
    pub givens: sudoku::Givens,
    /// Shuffled copies per training puzzle
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=super::limits::MAX_AUG).map(|v| v as usize))]
    pub num_aug: usize,
    /// Seed
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write train.csv / test.csv (Sudoku-Extreme format) into the output folder
    #[arg(long)]
    pub csv: bool,
    /// Replace a data set already in the output folder (and, with --csv, its train.csv / test.csv)
    #[arg(long)]
    pub force: bool,
}

pub fn run(cmd: DataCommand) -> Result<()> {
    let t0 = Instant::now();
    match cmd {
        DataCommand::Sudoku(a) => {
            anyhow::ensure!(
                a.seed.is_none() || a.subsample.is_some() || a.test_subsample.is_some() || a.num_aug > 0,
                "--seed draws --subsample, --test-subsample and the --num-aug shuffles; without any of them it would do nothing"
            );
            crate::util::fs::check_data_out(&a.out, a.force)?;
            let seed = a.seed.unwrap_or(0);
            let opt = sudoku::BuildOptions { subsample: a.subsample, test_subsample: a.test_subsample, num_aug: a.num_aug, seed };
            sudoku::build(&a.train, &a.test, &a.out, &opt)?;
            print_summary(&a.out)?;
        }
        DataCommand::Maze(a) => {
            anyhow::ensure!(
                a.seed.is_none(),
                "--seed: the maze builder draws nothing at random (--aug adds the 8 fixed dihedral transforms); drop it"
            );
            crate::util::fs::check_data_out(&a.out, a.force)?;
            maze::build(&a.train, &a.test, &a.out, a.aug)?;
            print_summary(&a.out)?;
        }
        DataCommand::Arc(a) => {
            crate::util::fs::check_data_out(&a.out, a.force)?;
            let opt = arc::BuildOptions {
                input_prefix: a.input_prefix,
                subsets: a.subsets,
                test_sets: a.test_set,
                num_aug: a.num_aug,
                seed: a.seed,
                translate: !a.no_translate,
            };
            let s = arc::build(&a.out, &opt)?;
            println!(
                "identifiers: {} (incl. blank); {} of {} groups got fewer than {} members",
                s.identifiers,
                s.groups_below_full,
                s.train.groups.max(s.test.groups),
                opt.num_aug + 1
            );
            print_summary(&a.out)?;
        }
        DataCommand::Generate(a) => {
            // Ten million puzzles (with their augmentations, gigabytes) is far past any use here.
            for (flag, n) in [("--train", a.train), ("--test", a.test)] {
                anyhow::ensure!(n <= 10_000_000, "{flag} {n}: at most 10,000,000 puzzles are generated at once");
            }
            // A data set without training puzzles is one no command can use (train and eval refuse it).
            anyhow::ensure!(a.train >= 1, "--train 0: a data set needs training puzzles; give at least 1");
            sudoku::check_size(a.train, a.num_aug)?;
            crate::util::fs::check_data_out(&a.out, a.force)?;
            if a.csv {
                // The folder may hold the user's own CSVs (Sudoku-Extreme's train.csv): checked first.
                for name in ["train.csv", "test.csv"] {
                    crate::util::fs::check_output(&a.out.join(name), "--csv", &[], a.force)?;
                }
            }
            let train = sudoku::generate(a.train, a.givens, a.seed, 0);
            let test = sudoku::generate(a.test, a.givens, a.seed, 1);
            print_givens(&train, &test, a.givens);
            sudoku::write_dataset_with(&a.out, &train, &test, a.num_aug, a.seed, |out| {
                if a.csv {
                    write_sudoku_csv(&out.join("train.csv"), &train)?;
                    write_sudoku_csv(&out.join("test.csv"), &test)?;
                }
                Ok(())
            })?;
            print_summary(&a.out)?;
        }
        DataCommand::Inspect { dir, show, split } => {
            anyhow::ensure!(split.is_none() || show > 0, "--split picks the split --show N draws from; without --show it would do nothing");
            let split = split.unwrap_or_else(|| "train".into());
            let (kept, names) = inspect(&dir, (show > 0).then_some(split.as_str()))?;
            if show > 0 {
                // The split was read and checked once, above, unless it is neither train nor test.
                let s = match kept {
                    Some(s) => s,
                    None => format::read_dataset_split(&dir, &split)?,
                };
                super::data_show::show(&s, &split, names.as_deref(), show);
            }
        }
    }
    eprintln!("done in {:.1}s", t0.elapsed().as_secs_f64());
    Ok(())
}

fn write_sudoku_csv(path: &std::path::Path, puzzles: &[sudoku::Puzzle]) -> Result<()> {
    use crate::data::sudoku_solver::{format_grid, solve};
    let mut text = String::from("source,question,answer,rating\n");
    for p in puzzles {
        let rating = solve(&p.question, 2).guesses;
        text += &format!("trm-generated,{},{},{rating}\n", format_grid(&p.question), format_grid(&p.answer));
    }
    crate::util::fs::write_atomic(path, text.as_bytes())
}

/// The givens the generated puzzles have: a target below what uniqueness allows (17 is the
/// proven minimum, and a random removal order stops well above it) is not reached, and is said.
fn print_givens(train: &[sudoku::Puzzle], test: &[sudoku::Puzzle], target: sudoku::Givens) {
    let counts: Vec<usize> = train.iter().chain(test).map(|p| p.question.iter().filter(|&&c| c != 0).count()).collect();
    let (Some(&lo), Some(&hi)) = (counts.iter().min(), counts.iter().max()) else { return };
    let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    println!("givens: {lo}-{hi}, mean {mean:.1}");
    let above = counts.iter().filter(|&&c| c > target.max).count();
    if above > 0 {
        println!(
            "note: {above} of {} puzzles have more givens than --givens asks ({}): removing any more of their givens would \
             leave more than one solution",
            counts.len(),
            target
        );
    }
}

/// Prints the metadata of both splits (reads only dataset.json and the index arrays' sizes).
fn print_summary(dir: &std::path::Path) -> Result<()> {
    for split in ["train", "test"] {
        let m = format::read_metadata(&dir.join(split))?;
        println!(
            "{split:>5}: {} groups, {} puzzles, {:.0} examples (mean {:.4}/puzzle), seq_len {}, vocab {}, identifiers {}",
            m.total_groups,
            puzzles_in(&dir.join(split))?,
            m.mean_puzzle_examples * puzzles_in(&dir.join(split))? as f64,
            m.mean_puzzle_examples,
            m.seq_len,
            m.vocab_size,
            m.num_puzzle_identifiers
        );
    }
    Ok(())
}

/// `trm data inspect`: every file of the data set read and checked as training and evaluation
/// read them (shapes, tokens below vocab_size, offsets, identifiers), then its summary. A data set
/// that would fail later fails here, naming the file. Gives back the split named `keep` (when it
/// is one it read: train or test) and the identifier names, for `--show`.
fn inspect(dir: &std::path::Path, keep: Option<&str>) -> Result<(Option<format::Split>, Option<Vec<String>>)> {
    let mut kept = None;
    for split in ["train", "test"] {
        if split == "test" && !dir.join(split).exists() {
            println!(" test: none (training runs without evaluation)");
            continue;
        }
        let s = format::read_dataset_split(dir, split)?;
        let m = &s.metadata;
        let groups: usize = s.sets.iter().map(|(_, d)| d.num_groups()).sum();
        let puzzles: usize = s.sets.iter().map(|(_, d)| d.num_puzzles()).sum();
        println!(
            "{split:>5}: {groups} groups, {puzzles} puzzles, {} examples in {} set(s), seq_len {}, vocab {}, identifiers {}",
            s.num_examples(),
            s.sets.len(),
            m.seq_len,
            m.vocab_size,
            m.num_puzzle_identifiers
        );
        if keep == Some(split) {
            kept = Some(s);
        }
    }
    // identifiers.json is optional (training copies it when there); one that is there must read
    // and name every identifier, as an ARC evaluation requires (`read_identifiers` checks).
    let path = dir.join("identifiers.json");
    let names = if path.exists() {
        let names = format::read_identifiers(dir)?;
        println!("identifiers.json: {} names", names.len());
        Some(names)
    } else {
        println!("identifiers.json: none");
        None
    };
    println!("every file checked");
    Ok((kept, names))
}

fn puzzles_in(split_dir: &std::path::Path) -> Result<usize> {
    let a = crate::data::npy::read_i32(&format::array_path(split_dir, "all", "puzzle_identifiers"))?;
    Ok(a.data.len())
}
