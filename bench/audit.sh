#!/usr/bin/env bash
# Audit trail cost (README "Audit trail and metrics", issue 11), in one run
# on loopback:
#   1. SSH login + command with the monitor (the real boot: bastion-monitor
#      relaying sshd's log, the wrapper reporting start and end) vs the
#      floor: the same rendered sshd config with ForceCommand /bin/true and
#      sshd's log to a file. Interleaved rounds, medians and per-round ratios.
#   2. HTTP requests/s (wrk, 16 connections, a force command `true`, lock
#      off) through the monitor's sockets with the audit trail on vs the
#      same listener standalone (no monitor, no events). Interleaved.
#   3. The monitor's RSS (VmRSS now, VmHWM peak) before and after a burst of
#      BURST sessions (8 at a time), with its stderr going into a pipe whose
#      reader is stopped (a stuck `docker logs`): sessions must all finish,
#      lines are dropped and counted (bastion_log_lines_dropped_total).
# Run as root (tests/setup-host prepares the machine). Bounded by RUNS,
# DURATION and BURST.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-40}
DURATION=${DURATION:-10}
BURST=${BURST:-1000}
cargo build --release --locked --bins -q
BIN=$(pwd)/target/release
T=$(mktemp -d /tmp/bastion-bench-audit.XXXXXX)
chmod 0755 "$T"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  sleep 0.5
  rm -rf "$T"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
P_SSH=$(free_port); P_FLOOR=$(free_port); P_HTTP=$(free_port); P_METRICS=$(free_port); P_PLAIN=$(free_port)

R=$T/root
mkdir -p "$R/etc/bastion/users.d" "$T/client"
cp -a rootfs/. "$R/"
cp /etc/group "$R/etc/group"
ssh-keygen -q -t ed25519 -N '' -C bench -f "$T/client/id"
install -m 0644 "$T/client/id.pub" "$R/etc/bastion/users.d/bench.pub"
TOKEN=bench-token-$RANDOM$RANDOM
ENV=(env -i BASTION_ROOT="$R" FORCE_COMMAND=true COMMAND_LOCK=none SSH_PORT="$P_SSH"
     SSH_LISTEN_ADDRESS=127.0.0.1 HTTP_TOKEN="$TOKEN" HTTP_PORT="$P_HTTP" METRICS_PORT="$P_METRICS")

# The floor: the config the entrypoint renders, ForceCommand /bin/true.
CFG=$("${ENV[@]}" "$BIN/bastion-entrypoint" --prepare-only 2>"$T/prepare.log")
sed -e "s|^Port .*|Port $P_FLOOR|" -e "s|^ForceCommand .*|ForceCommand /bin/true|" "$CFG" >"$T/floor.conf"
SSHD=$(command -v sshd || echo /usr/sbin/sshd)
"$SSHD" -D -e -f "$T/floor.conf" 2>"$T/floor.log" &
PIDS+=($!)

# The bastion, booted for real; its log into a FIFO read by `cat`, which
# part 3 stops.
mkfifo "$T/log.fifo"
cat "$T/log.fifo" >"$T/bastion.log" &
READER=$!
PIDS+=($READER)
"${ENV[@]}" "$BIN/bastion-entrypoint" >"$T/log.fifo" 2>&1 &
PIDS+=($!)
wait_port "$P_FLOOR"; wait_port "$P_SSH"; wait_port "$P_HTTP"; wait_port "$P_METRICS"
MON=$(pgrep -n -f "$BIN/bastion-monitor")

SSH=(ssh -F /dev/null -T -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=no
     -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -i "$T/client/id")
"${SSH[@]}" -p "$P_SSH" agent@127.0.0.1 x
"${SSH[@]}" -p "$P_FLOOR" agent@127.0.0.1 x

echo "== 1. ssh login + command, $RUNS interleaved rounds"
python3 - "$RUNS" "$P_FLOOR" "$P_SSH" "${SSH[@]}" <<'PY'
import random, statistics, subprocess, sys, time
rounds, floor, bastion, ssh = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
cmds = {"floor": ssh + ["-p", floor, "agent@127.0.0.1", "x"], "bastion": ssh + ["-p", bastion, "agent@127.0.0.1", "x"]}
t = {k: [] for k in cmds}
for i in range(rounds + 3):
    order = list(cmds); random.shuffle(order)
    for k in order:
        s = time.perf_counter()
        r = subprocess.run(cmds[k], stdin=subprocess.DEVNULL, capture_output=True)
        if r.returncode != 0:
            sys.exit(f"{k}: {r.stderr.decode()}")
        if i >= 3:
            t[k].append((time.perf_counter() - s) * 1000)
m = {k: statistics.median(v) for k, v in t.items()}
for k, v in t.items():
    print(f"  {k:8} median {m[k]:7.2f} ms  mean {statistics.mean(v):7.2f} ms  min {min(v):7.2f} ms")
print(f"  bastion/floor: ratio of medians {m['bastion']/m['floor']:.3f}x, median per-round {statistics.median(b/f for b, f in zip(t['bastion'], t['floor'])):.3f}x")
PY

echo "== 2. HTTP requests/s, wrk -c 16 -d ${DURATION}s, audit on (monitor) vs off (standalone listener)"
RT_PLAIN=$T/runtime-plain.json
python3 - "$R/run/bastion/runtime.json" "$RT_PLAIN" <<'PY'
import json, sys
rt = json.load(open(sys.argv[1])); rt.pop("monitor_socket", None)
json.dump(rt, open(sys.argv[2], "w"))
PY
env -i HTTP_TOKEN="$TOKEN" "$BIN/bastion-cgi" --runtime "$RT_PLAIN" --listen 127.0.0.1 --port "$P_PLAIN" >"$T/plain.log" 2>&1 &
PIDS+=($!)
wait_port "$P_PLAIN"
for round in 1 2; do
  for which in on off; do
    port=$P_HTTP; [ "$which" = off ] && port=$P_PLAIN
    rps=$(wrk -t 2 -c 16 -d "${DURATION}s" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/cgi-bin/run" | awk '/Requests\/sec/ {print $2}')
    echo "  round $round audit $which: $rps requests/s"
  done
done

echo "== 3. monitor memory through $BURST sessions, log reader stopped"
rss() { awk '/^VmRSS|^VmHWM/ {printf "%s %s kB  ", $1, $2}' "/proc/$MON/status"; echo; }
echo -n "  before: "; rss
kill -STOP "$READER"
start=$(date +%s.%N)
seq "$BURST" | xargs -P 8 -I{} "${SSH[@]}" -p "$P_SSH" agent@127.0.0.1 x >/dev/null 2>"$T/burst.err" || true
end=$(date +%s.%N)
echo -n "  after:  "; rss
metrics=$(curl -sS "http://127.0.0.1:$P_METRICS/metrics")
echo "  $(grep -c . "$T/burst.err" || true) client error lines; $(python3 -c "print(f'{$end-$start:.1f}')") s for the burst"
echo "$metrics" | grep -E '^bastion_sessions_total|^bastion_log_lines_dropped_total|^bastion_sessions_active' | sed 's/^/  /'
kill -CONT "$READER"
