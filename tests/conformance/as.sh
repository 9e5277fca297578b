#!/usr/bin/env bash
# Runs the conformance suite's authorization-server scenarios (0.2.0-alpha.12:
# authorization-server-metadata-endpoint, authorization-code-grant) against
# `mcp-auth serve --dev-auto-approve`: registers a client by RFC 7591, plays the browser with
# curl on the authorization URL the suite prints, and fails on any FAILURE, WARNING or SKIPPED
# check (the suite's own exit status ignores warnings).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${MCP_AUTH_BIN:-$root/target/release/mcp-auth}
run=${CONFORMANCE_RUN:-}
if [ -z "$run" ]; then
  for c in "$root/../shared/conformance/run.sh" /work/shared/conformance/run.sh; do
    [ -x "$c" ] && { run=$c; break; }
  done
fi
[ -n "$run" ] || { echo "as.sh: run.sh not found (set CONFORMANCE_RUN)" >&2; exit 1; }
work=$(mktemp -d)
server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

MCP_AUTH_HOME=$work/home "$bin" serve --listen 127.0.0.1:0 --dev-auto-approve >"$work/serve.out" 2>"$work/serve.err" &
server=$!
for _ in $(seq 100); do grep -q '^Authorization server:' "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
issuer=$(sed -n 's/^Authorization server: *//p' "$work/serve.out")
mcp=$(sed -n 's/^MCP server: *//p' "$work/serve.out")
[ -n "$issuer" ] || { echo "as.sh: the server did not start"; cat "$work/serve.err"; exit 1; }

port=$(free_port)
client_id=$(curl -sS -X POST "$issuer/register" -H 'Content-Type: application/json' \
  -d "{\"client_name\":\"conformance\",\"redirect_uris\":[\"http://127.0.0.1:$port/callback\"],\"token_endpoint_auth_method\":\"none\",\"grant_types\":[\"authorization_code\",\"refresh_token\"]}" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')

CONF_VERSION=0.2.0-alpha.12 "$run" authorization --url "$issuer" --client-id "$client_id" \
  --resource "$mcp" --port "$port" -o "$work/results" >"$work/suite.out" 2>&1 &
suite=$!
url=
for _ in $(seq 300); do
  url=$(grep -m1 -E '^https?://.*[?&]response_type=code' "$work/suite.out" || true)
  if [ -n "$url" ] && grep -q 'Callback server started' "$work/suite.out"; then break; fi
  url=; kill -0 "$suite" 2>/dev/null || break; sleep 0.2
done
[ -n "$url" ] && curl -sS -L -o /dev/null "$url"
rc=0; wait "$suite" || rc=$?
cat "$work/suite.out"
count() { { grep -h -o "$1" "$work"/results/*/checks.json 2>/dev/null || true; } | wc -l; }
bad=$(count '"status": *"\(WARNING\|FAILURE\|SKIPPED\)"')
checks=$(count '"status": *"SUCCESS"')
echo "authorization-server conformance: $checks successful checks, $bad failed/warned/skipped, suite exit $rc"
if [ "$rc" -ne 0 ] || [ "$bad" -ne 0 ] || [ "$checks" -lt 3 ]; then
  grep -h -B2 -A6 '"status": *"\(WARNING\|FAILURE\|SKIPPED\)"' "$work"/results/*/checks.json 2>/dev/null || true
  exit 1
fi
