run() { # shape arch batch mode
  out=$(/work/main/target/release/trm bench --shape $1 --arch $2 --batch $3 --mode $4 --warmup 1 --reps 1 2>&1 | tail -1)
  echo "$1 $2 $3 $4 $(echo "$out" | grep -o 'peak RSS [0-9]* MiB') | $(echo "$out" | grep -o 'median [0-9.]* s')"
}
run sudoku-att trm 64 eval; run sudoku-att trm 256 eval
run sudoku-mlp trm 64 eval; run sudoku-mlp trm 256 eval
run sudoku-att hrm 64 eval; run sudoku-att hrm 256 eval
run arc-att trm 4 eval; run arc-att trm 16 eval
