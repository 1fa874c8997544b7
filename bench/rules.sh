#!/usr/bin/env bash
# The SSH-path decision at 1, 10, 100 and 1,000 ALLOWED_COMMANDS rules:
# `bastion-wrapper` (static, non-PIE release build, as in the image) run
# the way sshd runs it, with the request in SSH_ORIGINAL_COMMAND and the
# runtime file the real `bastion-entrypoint --prepare-only` wrote (default
# exclusive lock, COMMAND_PREFIX=/bin/true, so an allowed request execs
# /bin/true). Compared in the same hyperfine run:
#   floor     bare exec of /bin/true with the request's words
#   compiled  the normal path: rules decided from the boot-compiled snapshot
#   parsed    the same runtime file without its `rules_snapshot` field and
#             with the rules in `allowed_commands`, so every rule is parsed
#             and translated per request (the path before the snapshot
#             existed), at 1 and 1,000 rules
# The request matches only the LAST rule (first-match worst case); rules
# are bench/broker.sh's mix. Ratios are of medians, of minimums and of
# CPU time (user + system, which the load of a shared machine inflates
# least).
#
# Usage: bench/rules.sh   (root; needs hyperfine, sshd, ssh-keygen)
#        BENCH_RUNS=N (default 300) runs per command. Bounded: ~1 minute.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${BENCH_RUNS:-300}
command -v hyperfine >/dev/null || { echo "hyperfine is not installed" >&2; exit 2; }

host=$(rustc -vV | sed -n 's/^host: //p')
CARGO_TARGET_DIR=$PWD/target/bench \
  RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
  cargo build --release --locked --quiet --target "$host" --bin bastion-wrapper --bin bastion-entrypoint
bin=$PWD/target/bench/$host/release
work=$(mktemp -d /tmp/bastion-bench-rules.XXXXXX)
chmod 0755 "$work"
trap 'rm -rf "$work"' EXIT

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

# One prepared root per rule count; host keys generated once.
keys=$work/hostkeys
mkdir -p "$keys"
for t in ed25519 rsa; do ssh-keygen -q -t "$t" -N '' -C '' -f "$keys/ssh_host_${t}_key"; done
for n in 1 10 100 1000; do
  r=$work/root$n
  mkdir -p "$r/etc/ssh/keys"
  cp -a rootfs/. "$r/"
  cp /etc/group "$r/etc/group"
  cp -a "$keys/." "$r/etc/ssh/keys/"
  rules "$n" >"$work/rules$n"
  env -i BASTION_ROOT="$r" ALLOWED_COMMANDS="$(cat "$work/rules$n")" COMMAND_PREFIX=/bin/true \
    "$bin/bastion-entrypoint" --prepare-only >/dev/null 2>"$work/entrypoint$n.log"
  # The parsed variant carries the rules in the runtime file, as before.
  python3 - "$r/run/bastion/runtime.json" "$r/run/bastion/parsed.json" "$work/rules$n" <<'PY'
import json, sys
rt = json.load(open(sys.argv[1]))
assert rt["rules_snapshot"], "no snapshot in the runtime file"
rt.pop("rules_snapshot")
rt["allowed_commands"] = open(sys.argv[3]).read()
json.dump(rt, open(sys.argv[2], "w"))
PY
done

req='svc-last status --since 15m'
export SSH_ORIGINAL_COMMAND=$req
w() { echo "$bin/bastion-wrapper --runtime $work/root$1/run/bastion/$2.json"; }
# Sanity: allowed on every path, a near miss refused.
for n in 1 10 100 1000; do
  $(w "$n" runtime) 2>/dev/null
  $(w "$n" parsed) 2>/dev/null
  ! SSH_ORIGINAL_COMMAND="$req x" $(w "$n" runtime) 2>/dev/null
done

hyperfine -N --warmup 20 --runs "$runs" --export-csv "$work/r.csv" --style none \
  "/bin/true $req" \
  "$(w 1 runtime)" "$(w 10 runtime)" "$(w 100 runtime)" "$(w 1000 runtime)" \
  "$(w 1 parsed)" "$(w 1000 parsed)" >/dev/null 2>&1
echo "$runs runs each (ms): wall-clock median and minimum, CPU time (user + system, mean);"
echo "ratios to the same path at 1 rule"
awk -F, '
  NR > 1 { m[NR - 1] = $4 * 1000; lo[NR - 1] = $7 * 1000; cpu[NR - 1] = ($5 + $6) * 1000 }
  function row(name, i, base) {
    printf "%-22s %8.3f %8.3f %8.3f %9.3fx %8.3fx %8.3fx\n", name, m[i], lo[i], cpu[i], m[i] / m[base], lo[i] / lo[base], cpu[i] / cpu[base]
  }
  END {
    split("1 10 100 1000", n, " ")
    printf "%-22s %8s %8s %8s %10s %9s %9s\n", "", "median", "min", "cpu", "median", "min", "cpu"
    printf "%-22s %8.3f %8.3f %8.3f\n", "floor (/bin/true)", m[1], lo[1], cpu[1]
    for (i = 1; i <= 4; i++) row("compiled, " n[i] " rules", i + 1, 2)
    row("parsed, 1 rule", 6, 6)
    row("parsed, 1000 rules", 7, 6)
  }' "$work/r.csv"
