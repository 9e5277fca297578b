#!/usr/bin/env bash
# Interoperability test against the official TypeScript MCP SDK client: installs the pinned
# @modelcontextprotocol/sdk from package-lock.json, starts `mcp-auth serve --dev-auto-approve`
# on a free port, runs test.mjs and then proxy.mjs (the SDK's stdio client spawning
# `mcp-auth proxy`; 60 s limit each) and stops the server. Exits with the test's status.
# Needs node >= 20, npm and the npm registry; target/release/mcp-auth (or $MCP_AUTH_BIN).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${MCP_AUTH_BIN:-$root/target/release/mcp-auth}
[ -x "$bin" ] || { echo "ts-sdk: $bin not found (cargo build --release -p mcp-auth-cli, or set MCP_AUTH_BIN)" >&2; exit 1; }

(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

work=$(mktemp -d)
server=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

MCP_AUTH_HOME=$work/home "$bin" serve --listen 127.0.0.1:0 --dev-auto-approve >"$work/serve.out" 2>"$work/serve.err" &
server=$!
for _ in $(seq 100); do
  grep -q '^Authorization server:' "$work/serve.out" 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
issuer=$(sed -n 's/^Authorization server: *//p' "$work/serve.out")
mcp=$(sed -n 's/^MCP server: *//p' "$work/serve.out")
if [ -z "$issuer" ] || [ -z "$mcp" ]; then
  echo "ts-sdk: the server did not start" >&2
  cat "$work/serve.out" "$work/serve.err" >&2
  exit 1
fi

rc=0
timeout 60 node "$here/test.mjs" "$mcp" "$issuer" || rc=$?
if [ "$rc" -eq 124 ]; then echo "ts-sdk: test.mjs timed out after 60 s" >&2; fi
if [ "$rc" -eq 0 ]; then
  # The SDK's stdio client through `mcp-auth proxy` (its own store, an empty one).
  timeout 60 node "$here/proxy.mjs" "$mcp" "$bin" "$work/proxy-home" || rc=$?
  if [ "$rc" -eq 124 ]; then echo "ts-sdk: proxy.mjs timed out after 60 s" >&2; fi
fi
if [ "$rc" -ne 0 ]; then
  echo "--- server stderr:" >&2
  cat "$work/serve.err" >&2
fi
exit "$rc"
