#!/usr/bin/env bash
# The MCP conformance suite's client command: translates MCP_CONFORMANCE_CONTEXT (pre-registered
# or client-credentials credentials, a workload JWT, an enterprise IdP and the user's ID token) into mcp-auth flags and runs `mcp-auth test` headless
# against the URL the suite appends. No scenario-specific behaviour lives here; the library
# decides everything (which registration, which grant, which scopes, what to refuse).
set -euo pipefail
url=${!#}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${MCP_AUTH_BIN:-}
if [ -z "$bin" ]; then
  for b in "$root/target/release/mcp-auth" "$root/target/debug/mcp-auth"; do
    [ -x "$b" ] && { bin=$b; break; }
  done
fi
[ -n "$bin" ] || { echo "client.sh: build mcp-auth first (cargo build --release)" >&2; exit 70; }

# A fresh store per run: scenarios run in parallel and must not see each other's tokens.
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
export MCP_AUTH_HOME=$home

# The "user's browser" is curl: it follows the authorization server's redirect to our
# loopback listener. Port 0: parallel scenarios must not compete for one port.
args=(test --browser "curl -sS -L -o /dev/null" --callback-port 0
      --client-metadata-url https://conformance-test.local/client-metadata.json
      --call test-tool --auth-timeout 20 --timeout 10 -v)

if [ -n "${MCP_CONFORMANCE_CONTEXT:-}" ]; then
  # One `--flag value` pair per line, from the context's credential fields.
  while IFS= read -r -d '' flag && IFS= read -r -d '' value; do
    args+=("$flag" "$value")
  done < <(python3 - "$home" <<'PY'
import json, os, sys
ctx = json.loads(os.environ["MCP_CONFORMANCE_CONTEXT"])
home = sys.argv[1]
out = []
if ctx.get("client_id"):
    out += ["--client-id", ctx["client_id"]]
if ctx.get("client_secret"):
    out += ["--client-secret", ctx["client_secret"]]
if ctx.get("issuer"):
    out += ["--client-issuer", ctx["issuer"]]
if ctx.get("private_key_pem"):
    path = os.path.join(home, "client-key.pem")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(ctx["private_key_pem"])
    out += ["--private-key", path]
if ctx.get("signing_algorithm"):
    out += ["--signing-alg", ctx["signing_algorithm"]]
if ctx.get("valid_jwt"):
    # A workload's platform-issued JWT: kept in a file, as platforms mount it.
    path = os.path.join(home, "workload.jwt")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(ctx["valid_jwt"])
    out += ["--workload-token-file", path]
if ctx.get("idp_id_token"):
    # Enterprise-managed authorization: the user's ID token from the company IdP.
    path = os.path.join(home, "id-token.jwt")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(ctx["idp_id_token"])
    out += ["--id-token-file", path]
if ctx.get("idp_issuer"):
    out += ["--idp-issuer", ctx["idp_issuer"]]
if ctx.get("idp_token_endpoint"):
    out += ["--idp-token-endpoint", ctx["idp_token_endpoint"]]
if ctx.get("idp_client_id"):
    out += ["--idp-client-id", ctx["idp_client_id"]]
if ctx.get("idp_client_secret"):
    out += ["--idp-client-secret", ctx["idp_client_secret"]]
sys.stdout.write("".join(x + "\0" for x in out))
PY
)
fi

exec "$bin" "${args[@]}" "$url"
