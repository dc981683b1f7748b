#!/usr/bin/env bash
# trm on Windows (x86_64-pc-windows-gnu), checked from an x86-64 Linux machine (CI runs this on
# every change): the binary and the integration tests that touch what differs on Windows (paths,
# file replacement, closed pipes, processes, golden-fixture parity, training and exact resume)
# built with MinGW-w64, warnings as errors, and run under Wine. Wine is not Windows: what passes
# here is strong evidence, not proof (README.md, "Platforms").
# `--full` also lints for Windows (clippy on every target) and runs the unit tests and every test
# file. CI leaves those out for time (2 cores, cold: CI's set built in 6 min and ran in 40 s; a
# build of the unit tests and 7 test files took 9.5 min, Windows clippy 2 min, and every test ran
# in 4.9 min). Run it when changing code under cfg(windows).
# What it needs and installs where missing: the Rust target (rustup), and on Debian MinGW-w64's
# gcc (it links) and Wine. Wine 8 lacks bcryptprimitives.dll, which Rust's std imports; a stand-in
# built from scripts/windows/ gives it (Windows 10 and later have the real one).
# Usage: scripts/check-windows.sh [--full] [TARGET_DIR]   (default: target/win)
set -euo pipefail
cd "$(dirname "$0")/.."
full=0 dir=target/win
for arg in "$@"; do
  case $arg in
    --full) full=1 ;;
    -*) echo "usage: scripts/check-windows.sh [--full] [TARGET_DIR]" >&2; exit 2 ;;
    *) dir=$arg ;;
  esac
done
case $dir in /*) abs=$dir ;; *) abs=$PWD/$dir ;; esac
win=x86_64-pc-windows-gnu

installed=$(rustup target list --installed)
grep -qx "$win" <<<"$installed" || rustup target add "$win"
need=()
command -v x86_64-w64-mingw32-gcc >/dev/null || need+=(gcc-mingw-w64-x86-64)
command -v wine >/dev/null || need+=(wine64 wine)
if ((${#need[@]})); then
  command -v apt-get >/dev/null || { echo "error: needs ${need[*]} (Debian package names) and cannot install them here" >&2; exit 1; }
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  # Package lists may be missing or stale on a fresh machine: refreshed once when the install fails.
  $sudo apt-get install -y "${need[@]}" >/dev/null 2>&1 ||
    { $sudo apt-get update -qq || exit 1; $sudo apt-get install -y "${need[@]}" >/dev/null || exit 1; }
fi

shim="$abs/wine-shim"
mkdir -p "$shim"
x86_64-w64-mingw32-gcc -O2 -shared -o "$shim/bcryptprimitives.dll" \
  scripts/windows/bcryptprimitives.c scripts/windows/bcryptprimitives.def -ladvapi32

export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine
# No Mono or Gecko: nothing here needs .NET or a browser engine, and their installers would ask.
export WINEPREFIX="$abs/wine-prefix" WINEDEBUG=-all WINEPATH="Z:${shim//\//\\}" WINEDLLOVERRIDES="mscoree,mshtml="

if ((full)); then
  echo "-- $win: clippy on the library, the binary and the tests"
  cargo clippy --all-targets --target $win --target-dir "$dir" -- -D warnings
fi

# The Wine prefix is made once (about 10 s), here, so that its set-up messages stay out of the tests.
# Up to three tries: one CI run (stop 46) saw this fail once, with its output hidden, where every try
# by hand passed; a failed try's server is stopped and its half-made prefix removed, and the last
# try's messages are shown.
for try in 1 2 3; do
  if wine_log=$(wine cmd /c exit 2>&1 </dev/null); then break; fi
  wineserver -k 2>/dev/null || true
  rm -rf "$WINEPREFIX"
  if ((try == 3)); then
    printf '%s\n' "$wine_log" | tail -n 20 >&2
    echo "error: Wine cannot start (prefix $WINEPREFIX, 3 tries); run: wine cmd /c exit" >&2
    exit 1
  fi
  echo "   Wine did not start (try $try of 3); trying again" >&2
  sleep 5
done
# Flags given to the target's crates only (build scripts run on the host without them).
if ((full)); then
  echo "-- $win: every test under Wine (tests/hostile.rs is Unix-only)"
  RUSTFLAGS="-D warnings" cargo test --target $win --target-dir "$dir"
else
  echo "-- $win: the platform-sensitive integration tests under Wine"
  files=(parity reliability solve distributed)
  RUSTFLAGS="-D warnings" cargo test --target $win --target-dir "$dir" --no-run $(printf -- '--test %s ' "${files[@]}")
  # A file that fails runs once more, one test at a time, and must pass then. Wine itself fails
  # now and then: one CI run (stop 49) saw a test's spawn of trm.exe fail with "Internal error"
  # (os error 1359, Wine's CreateProcess) while the file's tests ran in parallel, where every
  # earlier run passed. A real fault fails both times; the first failure stays in the log.
  for file in "${files[@]}"; do
    RUSTFLAGS="-D warnings" cargo test --target $win --target-dir "$dir" --test "$file" && continue
    echo "   WARNING: $file failed under Wine; running it once more, one test at a time (see the failure above)" >&2
    wineserver -k 2>/dev/null || true # with whatever the failed run left running
    RUSTFLAGS="-D warnings" cargo test --target $win --target-dir "$dir" --test "$file" -- --test-threads=1
  done
fi
