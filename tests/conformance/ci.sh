#!/usr/bin/env bash
# Runs the MCP conformance suite against the mcp-auth client, as CI does:
#   1. the stable suite's `auth` suite (0.1.16), which must pass outright;
#   2. every auth/* scenario of 0.1.16 and of 0.2.0-alpha.12 (the 2026-07-28 revision), one by
#      one so the client's exit status counts too, against the expected-failures baseline;
#   3. the 0.2.0-alpha.12 `auth` suite again at --spec-version 2026-07-28 (stateless wire).
# Needs target/release/mcp-auth (or MCP_AUTH_BIN) and ../shared/conformance/run.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
run=${CONFORMANCE_RUN:-}
if [ -z "$run" ]; then
  for c in "$root/../shared/conformance/run.sh" /work/shared/conformance/run.sh; do
    [ -x "$c" ] && { run=$c; break; }
  done
fi
[ -n "$run" ] || { echo "conformance: run.sh not found (set CONFORMANCE_RUN)" >&2; exit 1; }
client=$root/tests/conformance/client.sh
baseline=$root/tests/conformance/expected-failures.yml
logs=${CONFORMANCE_LOGS:-$(mktemp -d)}
failed=()

step() { printf '\n== %s\n' "$*"; }

step "0.1.16 --suite auth"
if ! CONF_VERSION=0.1.16 "$run" client "$client" --suite auth >"$logs/suite-0.1.16.txt" 2>&1; then
  failed+=("0.1.16 suite auth"); sed -n '/SUITE SUMMARY/,$p' "$logs/suite-0.1.16.txt"
else
  grep -E '^Total' "$logs/suite-0.1.16.txt" || true
fi

for ver in 0.1.16 0.2.0-alpha.12; do
  step "$ver: every auth/* scenario against the baseline"
  mapfile -t scenarios < <(CONF_VERSION=$ver "$run" list 2>/dev/null | sed -n 's/^ *- \(auth\/[^ ]*\).*/\1/p')
  [ "${#scenarios[@]}" -gt 0 ] || { echo "no scenarios listed for $ver"; exit 1; }
  for s in "${scenarios[@]}"; do
    log="$logs/$ver-${s//\//_}.txt"
    if CONF_VERSION=$ver "$run" client "$client" --scenario "$s" --expected-failures "$baseline" >"$log" 2>&1; then
      printf '  ok    %s\n' "$s"
    else
      printf '  FAIL  %s (log: %s)\n' "$s" "$log"
      failed+=("$ver $s")
    fi
  done
done

step "0.2.0-alpha.12 --suite auth --spec-version 2026-07-28"
if ! CONF_VERSION=0.2.0-alpha.12 "$run" client "$client" --suite auth --spec-version 2026-07-28 \
    --expected-failures "$baseline" >"$logs/suite-2026.txt" 2>&1; then
  failed+=("0.2.0-alpha.12 suite auth 2026-07-28"); sed -n '/SUITE SUMMARY/,$p' "$logs/suite-2026.txt"
else
  grep -E '^Total' "$logs/suite-2026.txt" || true
fi

if [ "${#failed[@]}" -gt 0 ]; then
  printf '\nconformance: %d failing run(s):\n' "${#failed[@]}"; printf '  %s\n' "${failed[@]}"
  exit 1
fi
echo; echo "conformance: all runs passed"
