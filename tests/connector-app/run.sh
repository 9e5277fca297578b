#!/usr/bin/env bash
# Browser test of the connector example app (examples/connector-app) in headless Chromium:
# installs the pinned playwright-core from package-lock.json (no browser download: it drives
# Debian's /usr/bin/chromium, which .ci/run installs), then runs test.mjs (120 s limit), which
# starts `mcp-auth serve` (a local account, no auto-approve) and the app, signs in to the app
# as alice, connects her account on the demo MCP server through the authorization server's
# login and consent page, checks the status and the server's tools, that bob is not
# connected, and disconnects; it saves a screenshot of the connected page to
# docs/screenshots/connector-app.png ($SCREENSHOT_DIR). Exits with the test's status.
# Needs node >= 20, npm and the npm registry; target/release/mcp-auth (or $MCP_AUTH_BIN) and
# target/release/connector-app (or $CONNECTOR_APP_BIN).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${MCP_AUTH_BIN:-$root/target/release/mcp-auth}
app=${CONNECTOR_APP_BIN:-$root/target/release/connector-app}
[ -x "$bin" ] || { echo "connector-app: $bin not found (cargo build --release -p mcp-auth-cli, or set MCP_AUTH_BIN)" >&2; exit 1; }
[ -x "$app" ] || { echo "connector-app: $app not found (cargo build --release -p connector-app, or set CONNECTOR_APP_BIN)" >&2; exit 1; }
chromium=${CHROMIUM:-/usr/bin/chromium}
[ -x "$chromium" ] || {
  echo "connector-app: $chromium not found: install Debian's chromium (apt-get install -y chromium; .ci/run installs it), or set CHROMIUM" >&2
  exit 1
}

(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

rc=0
start=$(date +%s)
MCP_AUTH_BIN="$bin" CONNECTOR_APP_BIN="$app" CHROMIUM="$chromium" \
  SCREENSHOT_DIR="${SCREENSHOT_DIR:-$root/docs/screenshots}" \
  timeout -k 5 150 node "$here/test.mjs" || rc=$?
if [ "$rc" -eq 124 ]; then echo "connector-app: test.mjs timed out after 150 s" >&2; fi
echo "connector-app: $(( $(date +%s) - start )) s, exit $rc" >&2
exit "$rc"
