#!/usr/bin/env bash
# Renders a trm HTML report in headless Chromium and saves a PNG screenshot, to check the page
# by eye without a browser window. Needs Debian's `chromium` package (apt-get install chromium).
# Usage: scripts/screenshot-report.sh REPORT.html OUT.png [WIDTHxHEIGHT]
set -euo pipefail
html=$(realpath "$1")
out=$(realpath -m "$2")
size=${3:-1400,1800}
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# Flags: no sandbox (root in containers), and no background networking (closed networks refuse it).
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --window-size="${size/x/,}" --screenshot="$out" "file://$html" 2>/dev/null
test -s "$out" && echo "wrote $out"
