#!/usr/bin/env bash
# trm on 64-bit ARM, checked from an x86-64 Linux machine (CI runs this on every change):
#   1. Linux on arm64 (aarch64-unknown-linux-gnu): builds the library with warnings as errors and
#      runs its unit tests and every golden fixture's parity under qemu-user. This runs the code
#      that ARM takes instead of the x86 kernels: the fused CPU block's portable element-wise
#      loops, gemm's NEON products, no bfloat16 products.
#   2. macOS on Apple silicon (aarch64-apple-darwin): lints the library, the binary and the tests
#      (clippy, warnings as errors). There is no macOS here, so nothing is linked or run for it.
# What it needs and installs where missing: the two Rust targets (rustup), and on Debian qemu-user,
# the aarch64 cross gcc (it links the test binaries) and clang (a dependency's build script
# assembles for macOS with it).
# Usage: scripts/check-arm.sh [TARGET_DIR]   (default: target/arm)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-target/arm}
linux=aarch64-unknown-linux-gnu
mac=aarch64-apple-darwin

installed=$(rustup target list --installed)
for t in $linux $mac; do
  grep -qx "$t" <<<"$installed" || rustup target add "$t"
done
need=()
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null && [ -e /usr/aarch64-linux-gnu/lib/libc.so.6 ] || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v clang >/dev/null || need+=(clang)
if ((${#need[@]})); then
  command -v apt-get >/dev/null || { echo "error: needs ${need[*]} (Debian package names) and cannot install them here" >&2; exit 1; }
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  # Package lists may be missing or stale on a fresh machine: refreshed once when the install fails.
  $sudo apt-get install -y "${need[@]}" >/dev/null 2>&1 ||
    { $sudo apt-get update -qq || exit 1; $sudo apt-get install -y "${need[@]}" >/dev/null || exit 1; }
fi

echo "-- $linux: unit tests and golden-fixture parity under qemu-user"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
# Flags given to the target's crates only (build scripts run on the host without them).
RUSTFLAGS="-D warnings" cargo test --target $linux --target-dir "$dir" --lib --test parity

echo "-- $mac: clippy on the library, the binary and the tests (nothing linked)"
CC_aarch64_apple_darwin=clang cargo clippy --all-targets --target $mac --target-dir "$dir" -- -D warnings
