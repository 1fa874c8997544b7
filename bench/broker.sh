#!/usr/bin/env bash
# Broker benchmark: one allowed request per run, at 1, 10, 100 and 1,000
# rules, comparing in the same run
#   floor     bare exec of the command the request names (/bin/true ...)
#   broker    bastion-broker (release build) deciding, then exec'ing it
#   baseline  the shell version (../shared/baseline/broker.sh) under busybox
#             sh, with busybox sed/grep/cat first on PATH
# The request matches the LAST rule (first-match worst case). Rules are a
# realistic mix: plain commands, alternations, bracket expressions, bounds.
#
# Usage: bench/broker.sh [BASELINE_DIR]   (default: ../shared/baseline)
# Needs: hyperfine, busybox. Bounded: ~1 minute.
set -euo pipefail
cd "$(dirname "$0")/.."
baseline_dir=${1:-../shared/baseline}
runs=${BENCH_RUNS:-300}
[ -f "$baseline_dir/broker.sh" ] || { echo "no baseline at $baseline_dir" >&2; exit 2; }
command -v hyperfine >/dev/null || { echo "hyperfine is not installed" >&2; exit 2; }
command -v busybox >/dev/null || { echo "busybox is not installed" >&2; exit 2; }

cargo build --release --locked --quiet --bin bastion-broker
broker=$PWD/target/release/bastion-broker
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# busybox applets first on PATH for the baseline, as on Alpine.
mkdir -p "$work/bb"
for applet in sh sed grep cat; do ln -s "$(command -v busybox)" "$work/bb/$applet"; done

rules() { # N: N rules, the last one matching "svc-last status --since 15m"
  local n=$1 i
  for ((i = 1; i < n; i++)); do
    case $((i % 4)) in
      0) echo "plain-$i" ;;
      1) echo "svc$i (start|stop|status)" ;;
      2) echo "cmd$i [a-z]+ --n=[0-9]{1,4}" ;;
      3) echo "docker logs --tail [0-9]+ app$i" ;;
    esac
  done
  echo 'svc-last (start|stop|status)( --since [0-9]+[smh])?'
}

req='svc-last status --since 15m'
printf '%-6s %10s %10s %10s %12s %14s\n' rules floor_ms broker_ms baseline_ms broker/floor baseline/broker
for n in 1 10 100 1000; do
  rules "$n" >"$work/rules"
  export ALLOWED_COMMANDS
  ALLOWED_COMMANDS=$(cat "$work/rules")
  export ALLOWED_COMMANDS_FILE=/nonexistent COMMAND_PREFIX=/bin/true
  export BASELINE_RULES=$work/rules
  # busybox first on PATH for all three (the other two use absolute paths).
  PATH="$work/bb:$PATH" hyperfine -N --warmup 20 --runs "$runs" --export-csv "$work/r.csv" \
    --style none \
    "/bin/true $req" \
    "$broker '$req'" \
    "$work/bb/sh $baseline_dir/broker.sh '$req'" >/dev/null 2>&1
  awk -F, -v n="$n" '
    NR > 1 { m[NR - 1] = $2 }
    END {
      floor = m[1]; br = m[2]; base = m[3]
      printf "%-6s %10.3f %10.3f %10.3f %11.2fx %13.1fx\n", n, floor * 1000, br * 1000, base * 1000, br / floor, base / br
    }' "$work/r.csv"
  # Sanity: both tools allow the request and refuse a near miss.
  "$broker" --check "$req" >/dev/null
  ! "$broker" --check "$req x" 2>/dev/null
  PATH="$work/bb:$PATH" "$work/bb/sh" "$baseline_dir/broker.sh" "$req" 2>/dev/null
done
