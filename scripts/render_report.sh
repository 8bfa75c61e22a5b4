#!/usr/bin/env bash
# Renders a tinyqat HTML report to a PNG with headless Chromium (Debian's
# `chromium` package), then trims the white margin and reduces the palette with
# ImageMagick (`imagemagick`), so the picture stays small enough to commit.
#
#   scripts/render_report.sh                      # runs the pipeline first (build/tinyqat), writes docs/report.png
#   scripts/render_report.sh REPORT.html [OUT.png] [HEIGHT]
#
# HEIGHT is the browser window's height in pixels (default 6000): the page must
# fit in it, the white rest is trimmed away. Missing packages are installed
# with apt-get (as scripts/setup.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."

html="${1:-}"
out="${2:-docs/report.png}"
height="${3:-6000}"
width=1400

need() {  # need COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "render_report: installing $2"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}
need chromium chromium
need convert-im6.q16 imagemagick

if [ -z "$html" ]; then
  [ -x build/tinyqat ] || { echo "render_report: build/tinyqat missing; run scripts/build.sh first" >&2; exit 1; }
  workdir="$(mktemp -d)"
  ./build/tinyqat pipeline --workdir "$workdir" --report "$workdir"
  html="$workdir/report.html"
fi
[ -f "$html" ] || { echo "render_report: no such file: $html" >&2; exit 1; }

profile="$(mktemp -d)"
raw="$(mktemp --suffix=.png)"
trap 'rm -rf "$profile" "$raw"' EXIT
# No network, no first-run or background services: the page is self-contained.
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --hide-scrollbars --user-data-dir="$profile" --screenshot="$raw" \
  --window-size="$width,$height" "file://$(realpath "$html")" >/dev/null 2>&1
[ -s "$raw" ] || { echo "render_report: chromium wrote no screenshot" >&2; exit 1; }

# Trim the white page margin (and the unused window height), keep a 16 px
# border, and store with a 256-colour palette: the charts use few colours.
mkdir -p "$(dirname "$out")"
convert-im6.q16 "$raw" -fuzz 1% -trim +repage -bordercolor white -border 16 -colors 256 "PNG8:$out"
echo "render_report: $out ($(identify -format '%wx%h' "$out"), $(du -k "$out" | cut -f1) KB)"
