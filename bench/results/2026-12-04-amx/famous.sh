#!/bin/bash
# famous.sh BIN [extra args]: trm solve on three famous extreme puzzles: Inkala 2012, AI Escargot, Easter Monster
BIN=$1; shift
for p in "8..........36......7..9.2...5...7.......457.....1...3...1....68..85...1..9....4.." "1....7.9..3..2...8..96..5....53..9...1..8...26....4...3......1..4......7..7...3.." "1.......2.9.4...5...6...7...5.9.3.......7.......85..4.7.....6...3...9.8...2.....1"; do
  /usr/bin/time -f "%e s" $BIN solve --sudoku "$p" "$@" 2>&1 | grep -E "^checked|^NOT|^[0-9.]+ s$" | sed 's/^/  /'
done
