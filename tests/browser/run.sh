#!/usr/bin/env bash
# Browser tests of the authorization server's pages in headless Chromium: installs the pinned
# playwright-core from package-lock.json (no browser download: it drives Debian's
# /usr/bin/chromium, which .ci/run installs), then runs test.mjs (120 s limit), which chains
# two `mcp-auth serve` instances (an upstream with a local account, a downstream offering it
# as an OpenID Connect provider), logs in with `mcp-auth login` through the pages (approve,
# deny, keyboard only, without JavaScript), then runs the device flow tests of device.mjs (a
# third `serve --dpop`; `mcp-auth login --device` while Chromium enters the code on the
# verification page: typed or prefilled, approve, deny, a wrong code), checks headers and
# accessibility basics, and saves screenshots to docs/screenshots/. Exits with the test's
# status.
# Needs node >= 20, npm and the npm registry; target/release/mcp-auth (or $MCP_AUTH_BIN).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${MCP_AUTH_BIN:-$root/target/release/mcp-auth}
[ -x "$bin" ] || { echo "browser: $bin not found (cargo build --release -p mcp-auth-cli, or set MCP_AUTH_BIN)" >&2; exit 1; }
chromium=${CHROMIUM:-/usr/bin/chromium}
[ -x "$chromium" ] || {
  echo "browser: $chromium not found: install Debian's chromium (apt-get install -y chromium; .ci/run installs it), or set CHROMIUM" >&2
  exit 1
}

(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

rc=0
start=$(date +%s)
MCP_AUTH_BIN="$bin" CHROMIUM="$chromium" SCREENSHOT_DIR="${SCREENSHOT_DIR:-$root/docs/screenshots}" \
  timeout -k 5 150 node "$here/test.mjs" || rc=$?
if [ "$rc" -eq 124 ]; then echo "browser: test.mjs timed out after 150 s" >&2; fi
echo "browser: $(( $(date +%s) - start )) s, exit $rc" >&2
exit "$rc"
