#!/usr/bin/env bash
# Makes docs/img/status-page.png, the status page of strangler-proxy's admin
# listener as headless Chromium renders it, through the browser test of
# internal/statuspage (a running proxy with a flagged route and some
# traffic). Installs Chromium first when it is missing.
#
# Usage: scripts/status-page-screenshot.sh [FILE]   (default docs/img/status-page.png)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(realpath -m "${1:-$ROOT/docs/img/status-page.png}")
"$ROOT/scripts/ensure-ops-tools.sh"
command -v chromium >/dev/null || { echo "status-page-screenshot: Chromium could not be installed" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
cd "$ROOT"
STATUS_PAGE_SCREENSHOT=$out go test -count=1 -run '^TestPageInBrowser$' ./internal/statuspage/
echo "wrote $out"
