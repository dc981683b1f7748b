run() { # shape arch batch
  out=$(/work/main/target/release/trm bench --shape $1 --arch $2 --batch $3 --warmup 1 --reps 1 2>&1 | tail -1)
  echo "$1 $2 $3 $(echo "$out" | grep -o 'peak RSS [0-9]* MiB') | $(echo "$out" | grep -o 'median [0-9.]* s')"
}
run sudoku-mlp trm 16; run sudoku-mlp trm 64
run sudoku-att hrm 16; run sudoku-att hrm 64
run sudoku-att trm_singlez 16; run sudoku-att trm_singlez 64
run sudoku-att transformers_baseline 16; run sudoku-att transformers_baseline 64
run arc-att trm 2; run arc-att trm 6
run maze-att hrm 2; run maze-att hrm 6
