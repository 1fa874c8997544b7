#!/usr/bin/env bash
# HTTP benchmark (README "HTTP"): bastion-cgi vs the shell baseline
# (busybox httpd + CGI, ../shared/baseline/serve-http) and the floor, in one
# run.
#
#   1. What one request costs without HTTP: CPU time (user+sys) of the
#      process chain a request runs, 300 times in a loop: the floor (bare
#      exec of /bin/echo), the SSH path's bastion-wrapper -> echo (the
#      listener runs no wrapper: it starts echo itself), and the baseline's
#      CGI script -> wrapper.sh -> broker.sh -> echo.
#   2. Requests/s and p99 latency with `wrk` at 16 connections on a broker
#      request that runs `echo hello` (lock off, as the baseline runs):
#      the bastion as deployed (the real bastion-entrypoint booted on a
#      root of its own: bastion-monitor keeps the HTTP sockets and runs
#      bastion-cgi, every request is a session the monitor logs, its log
#      read through a pipe as `docker logs` reads it), bastion-cgi alone
#      (release build, started as root so it drops to `agent`, no monitor,
#      no audit events; lock and broker decision in-process, one spawn of
#      echo), the baseline, and the spawn floor (bench/spawn-floor.c, built here: 16
#      threads, then 16 processes, doing posix_spawn + wait of the same
#      /usr/bin/echo hello, no HTTP; the faster counts), interleaved over two rounds so a change in machine load hits
#      all three; and the HTTP floor, the same listener's /healthz (auth
#      path and HTTP stack, no process). RSS of bastion-cgi sampled under
#      that load (and VmHWM, its peak).
#   3. Streaming 1 GiB: a force command `head -c 1G /dev/zero` fetched with
#      curl, vs the floor `head -c 1G /dev/zero | cat | wc -c` (the same
#      bytes through one more process and pipe, no network).
#
#      CPU time per request (user+sys of the listener, the commands it
#      reaped and the monitor, from /proc, over each wrk run) is printed
#      beside it: it moves less with the load of a shared machine than
#      requests/s do.
# Needs root, the user `agent`, wrk, curl, busybox, cc, sshd, ssh-keygen.
# Bounded: seven wrk runs and four spawn-floor runs of DURATION seconds,
# 900 short process chains and four 1 GiB transfers, about three minutes
# by default.
# Usage: bench/http.sh [DURATION]     (seconds per wrk run, default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNS=16
BASELINE=${BASELINE:-../shared/baseline/serve-http}
[ -x "$BASELINE" ] || { echo "baseline $BASELINE not found" >&2; exit 2; }
BASELINE=$(cd "$(dirname "$BASELINE")" && pwd)/$(basename "$BASELINE")
[ "$(id -u)" = 0 ] || { echo "run as root (the listener drops to agent)" >&2; exit 2; }
id agent >/dev/null || { echo "user agent missing (tests/setup-host)" >&2; exit 2; }

cargo build --release --quiet --bins 2>/dev/null || cargo build --release --bins
BIN=$PWD/target/release

WORK=$(mktemp -d /tmp/bastion-bench-http.XXXXXX)
chmod 755 "$WORK"
cc -O2 -pthread -o "$WORK/spawn-floor" bench/spawn-floor.c
# The program the broker runs for "echo hello", found as it finds it.
ECHO=$(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin type -P echo)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  sleep 0.5 # the monitor and its listener end with sshd
  # The key index the logins started (its own process group, detached).
  for p in $(pgrep -f -- "--serve-index $WORK/" || true); do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

TOKEN=bench-token-0123456789
REQ="echo hello"
RULE='echo [a-z]+'

runtime() { # FILE MODE_JSON
  : > "$WORK/command.lock"
  cat > "$1" <<EOF
{"user":"agent","mode":$2,"allowed_commands":"$RULE","allowed_commands_file":"$WORK/none.list",
 "command_prefix":"","command_lock":"none","lock_file":"$WORK/command.lock",
 "authorized_keys_dir":"$WORK/users.d","merged_keys_file":"$WORK/merged","pty":false}
EOF
  chmod 644 "$1"
}

free_port() {
  local p
  while :; do
    p=$(shuf -i 20000-59999 -n 1)
    ss -Hltn "sport = :$p" | grep -q . || { echo "$p"; return; }
  done
}

wait_port() { # PORT LOG
  for _ in $(seq 1 300); do
    curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
    sleep 0.1
  done
  echo "nothing listens on $1:" >&2; cat "$2"* >&2; exit 1
}

# Starts bastion-cgi on a port the kernel picks; sets PORT and PID.
start_cgi() { # RUNTIME LOG
  env -i PATH=/usr/bin:/bin HTTP_TOKEN=$TOKEN "$BIN/bastion-cgi" --runtime "$1" \
    --listen 127.0.0.1 --port 0 >"$2" 2>"$2.err" &
  PID=$!
  PIDS+=($PID)
  PORT=
  for _ in $(seq 1 300); do
    PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$2.err")
    [ -n "$PORT" ] && return 0
    sleep 0.1
  done
  echo "bastion-cgi did not start:" >&2; cat "$2.err" >&2; exit 1
}

runtime "$WORK/broker.json" '{"kind":"broker"}'
runtime "$WORK/force.json" '{"kind":"force","command":"head -c 1073741824 /dev/zero"}'
printf '%s\n' "$RULE" > "$WORK/rules"

start_cgi "$WORK/broker.json" "$WORK/cgi.log"
P_CGI=$PORT CGI_PID=$PID
P_BASE=$(free_port)
"$BASELINE" "$P_BASE" "$TOKEN" "$WORK/rules" >"$WORK/base.log" 2>&1 &
PIDS+=($!)
wait_port "$P_BASE" "$WORK/base.log"

# The bastion as deployed: the real entrypoint on its own root (sshd on
# loopback, the monitor keeping HTTP_PORT), broker mode with the same rule,
# lock off; its log through a pipe, as a container's.
R=$WORK/root
mkdir -p "$R/etc/bastion/users.d"
cp -a rootfs/. "$R/"
cp /etc/group "$R/etc/group"
ssh-keygen -q -t ed25519 -N '' -C bench -f "$WORK/client-key"
install -m 0644 "$WORK/client-key.pub" "$R/etc/bastion/users.d/bench.pub"
P_MON=$(free_port)
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin BASTION_ROOT="$R" \
  ALLOWED_COMMANDS="$RULE" COMMAND_LOCK=none SSH_PORT="$(free_port)" SSH_LISTEN_ADDRESS=127.0.0.1 \
  HTTP_TOKEN=$TOKEN HTTP_PORT="$P_MON" "$BIN/bastion-entrypoint" > >(cat >"$WORK/bastion.log") 2>&1 &
PIDS+=($!)
wait_port "$P_MON" "$WORK/bastion.log"
MON_PID=$(pgrep -f "^$BIN/bastion-monitor --runtime $R/")
MON_CGI=$(pgrep -P "$MON_PID" -f "^$BIN/bastion-cgi ")

# 1. CPU per request of the process chains, no HTTP (bash `time` counts
# the children's user+sys).
mkdir -p "$WORK/bb"
for a in sh grep sed cat printf dirname; do ln -s "$(command -v busybox)" "$WORK/bb/$a"; done
N=300
cpu_ms() { # prints CPU ms per run of "$@", run N times
  local t
  t=$( { TIMEFORMAT='%U %S'; time { for _ in $(seq $N); do "$@" >/dev/null 2>&1; done; }; } 2>&1 )
  awk -v t="$t" -v n=$N 'BEGIN { split(t, a, " "); printf "%.2f", (a[1] + a[2]) * 1000 / n }'
}
CPU_FLOOR=$(cpu_ms /bin/echo hello)
CPU_CGI=$(cpu_ms env -i PATH=/usr/bin:/bin SSH_ORIGINAL_COMMAND="$REQ" "$BIN/bastion-wrapper" \
  --runtime "$WORK/broker.json")
CPU_BASE=$(cpu_ms env -i PATH="$WORK/bb:/usr/bin:/bin" BASELINE_DIR="$(dirname "$BASELINE")" \
  BASELINE_TOKEN=$TOKEN BASELINE_RULES="$WORK/rules" BASELINE_BROKER=1 BASELINE_NOLOCK=1 \
  HTTP_AUTHORIZATION="Bearer $TOKEN" HTTP_X_BASTION_COMMAND="$REQ" \
  sh "$(dirname "$BASELINE")/www/cgi-bin/run")

# Both must answer the same thing before they are timed.
for p in "$P_CGI" "$P_MON" "$P_BASE"; do
  body=$(curl -sS -H "Authorization: Bearer $TOKEN" -H "X-Bastion-Command: $REQ" \
    "http://127.0.0.1:$p/cgi-bin/run")
  case "$body" in *hello*) ;; *) echo "port $p answered: $body" >&2; exit 1;; esac
done

# busybox httpd closes every connection, which wrk counts as a read
# error; for bastion-cgi (keep-alive) any socket error fails the run.
wrk_run() { # NAME URL ERRORS_PATTERN
  local name=$1 url=$2 errors=$3
  wrk -t2 -c$CONNS -d"${DURATION}s" --latency \
    -H "Authorization: Bearer $TOKEN" -H "X-Bastion-Command: $REQ" "$url" \
    > "$WORK/$name.wrk"
  if grep -q "$errors" "$WORK/$name.wrk"; then
    echo "$name: errors during the run:" >&2; cat "$WORK/$name.wrk" >&2; exit 1
  fi
}
rps() { awk '/^Requests\/sec:/ {print $2}' "$WORK/$1.wrk"; }
p99() { awk '$1=="99%" {print $2}' "$WORK/$1.wrk"; }
count() { awk '/requests in/ {print $1}' "$WORK/$1.wrk"; }

rss_kib() { awk -v f="$2:" '$1==f {print $2}' "/proc/$1/status"; }
# CPU clock ticks so far of PIDs (own user+sys, plus that of their reaped
# children for the first).
ticks() { for p in "$@"; do awk '{ sub(/.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$p/stat"; done | paste -sd+ | bc; }
HZ=$(getconf CLK_TCK)
# wrk_run plus the CPU microseconds per request of PIDS, into NAME.cpu.
wrk_cpu() { # NAME URL ERRORS_PATTERN PIDS...
  local name=$1 url=$2 errors=$3 t0 t1
  shift 3
  t0=$(ticks "$@")
  wrk_run "$name" "$url" "$errors"
  t1=$(ticks "$@")
  echo "($t1 - $t0) * 1000000 / $HZ / $(count "$name")" | bc -l > "$WORK/$name.cpu"
}
RSS_IDLE=$(rss_kib "$CGI_PID" VmRSS)

wrk_run floor "http://127.0.0.1:$P_CGI/healthz" 'Non-2xx\|Socket errors'
RSS_MAX=0
for round in 1 2; do
  wrk_cpu monitor$round "http://127.0.0.1:$P_MON/cgi-bin/run" 'Non-2xx\|Socket errors' "$MON_CGI" "$MON_PID"
  wrk_cpu cgi$round "http://127.0.0.1:$P_CGI/cgi-bin/run" 'Non-2xx\|Socket errors' "$CGI_PID" &
  WRK=$!
  while kill -0 "$WRK" 2>/dev/null; do
    r=$(rss_kib "$CGI_PID" VmRSS || echo 0)
    [ "${r:-0}" -gt "$RSS_MAX" ] && RSS_MAX=$r
    sleep 0.2
  done
  wait "$WRK"
  wrk_run baseline$round "http://127.0.0.1:$P_BASE/cgi-bin/run" 'Non-2xx\|connect [1-9]\|timeout [1-9]'
  # The faster of 16 spawning threads and 16 spawning processes.
  t=$("$WORK/spawn-floor" "$DURATION" $CONNS "$ECHO" hello)
  p=$("$WORK/spawn-floor" "$DURATION" -$CONNS "$ECHO" hello)
  echo "$t $p" | awk '{ print ($1 > $2 ? $1 : $2) }' > "$WORK/spawn$round"
  echo "spawn floor round $round: threads $t/s, processes $p/s" >&2
done
SPAWN=$(echo "($(cat "$WORK/spawn1") + $(cat "$WORK/spawn2")) / 2" | bc -l)
RSS_HWM=$(rss_kib "$CGI_PID" VmHWM)
# Mean over the rounds; the worse p99.
mean_rps() { echo "($(rps "${1}1") + $(rps "${1}2")) / 2" | bc -l; }
mean_cpu() { echo "($(cat "$WORK/${1}1.cpu") + $(cat "$WORK/${1}2.cpu")) / 2" | bc -l; }
# Every request of the deployed bastion is one logged session.
SESSIONS=$(grep -c 'event=session.end.*transport=http' "$WORK/bastion.log" || true)
sum_count() { echo "$(count "${1}1") + $(count "${1}2")" | bc; }
worst_p99() { printf '%s\n%s\n' "$(p99 "${1}1")" "$(p99 "${1}2")" | awk '
  { v = $1 + 0; if ($1 ~ /us$/) v /= 1000; else if ($1 ~ /ms$/) v += 0; else if ($1 ~ /s$/) v *= 1000
    if (v > m) { m = v; s = $1 } } END { print s }'; }

# Streaming 1 GiB.
start_cgi "$WORK/force.json" "$WORK/force.log"
P_FORCE=$PORT
GIB=1073741824
# Two interleaved rounds, the faster of each kept (noise only slows down).
S_CGI=999 S_FLOOR=999
for round in 1 2; do
  t0=$(date +%s.%N)
  got=$(curl -sS -H "Authorization: Bearer $TOKEN" -o /dev/null -w '%{size_download}' \
    "http://127.0.0.1:$P_FORCE/cgi-bin/run")
  t1=$(date +%s.%N)
  [ "$got" = "$GIB" ] || { echo "streamed $got bytes, expected $GIB" >&2; exit 1; }
  floor_got=$(head -c $GIB /dev/zero | cat | wc -c)
  t2=$(date +%s.%N)
  [ "$floor_got" = "$GIB" ] || exit 1
  S_CGI=$(echo "s = $t1 - $t0; if (s < $S_CGI) s else $S_CGI" | bc)
  S_FLOOR=$(echo "s = $t2 - $t1; if (s < $S_FLOOR) s else $S_FLOOR" | bc)
done

awk -v c="$(mean_rps cgi)" -v b="$(mean_rps baseline)" -v f="$(rps floor)" \
    -v cp="$(worst_p99 cgi)" -v bp="$(worst_p99 baseline)" -v fp="$(p99 floor)" \
    -v cn="$(sum_count cgi)" -v bn="$(sum_count baseline)" -v fn="$(count floor)" \
    -v m="$(mean_rps monitor)" -v mp="$(worst_p99 monitor)" -v mn="$(sum_count monitor)" \
    -v mc="$(mean_cpu monitor)" -v cc="$(mean_cpu cgi)" -v ms="$SESSIONS" \
    -v xf="$CPU_FLOOR" -v xc="$CPU_CGI" -v xb="$CPU_BASE" -v n=$N \
    -v ri="$RSS_IDLE" -v rm="$RSS_MAX" -v rh="$RSS_HWM" \
    -v s_cgi="$S_CGI" -v s_floor="$S_FLOOR" -v sp="$SPAWN" -v echo="$ECHO" \
    -v conns=$CONNS -v dur="$DURATION" 'BEGIN {
  printf "CPU per request without HTTP (user+sys, %d runs)\n", n
  printf "  floor: exec /bin/echo            %6.2f ms\n", xf
  printf "  SSH path: bastion-wrapper -> echo %6.2f ms\n", xc
  printf "  baseline CGI -> wrapper.sh -> broker.sh -> echo %6.2f ms\n", xb
  printf "  ratio baseline / wrapper: %.1fx\n", xb / xc
  printf "HTTP, wrk -c%d, 2 interleaved rounds of %ds each, broker request \"echo hello\", lock off\n", conns, dur
  printf "  %-34s %10s %10s %10s %12s\n", "", "req/s", "p99", "requests", "CPU us/req"
  printf "  %-34s %10.0f %10s %10d %12.0f\n", "bastion (monitor) /cgi-bin/run", m, mp, mn, mc
  printf "  %-34s %10.0f %10s %10d %12.0f\n", "bastion-cgi alone /cgi-bin/run", c, cp, cn, cc
  printf "  %-34s %10.0f %10s %10d\n", "baseline busybox httpd + CGI", b, bp, bn
  printf "  %-34s %10.0f %10s %10d\n", "HTTP floor: bastion-cgi /healthz", f, fp, fn
  printf "  %-34s %10.0f\n", "spawn floor: posix_spawn+wait " echo, sp
  printf "  ratio bastion (monitor) / baseline: %.1fx req/s (target >= 10x); alone %.1fx\n", m / b, c / b
  printf "  ratio bastion (monitor) / spawn floor: %.0f%% (target >= 70%%); alone %.0f%%\n", 100 * m / sp, 100 * c / sp
  printf "  sessions the monitor logged (session.end, http): %d of %d requests\n", ms, mn
  printf "  bastion-cgi RSS: idle %.1f MiB, under load max %.1f MiB (VmHWM %.1f MiB)\n", ri/1024, rm/1024, rh/1024
  printf "Streaming 1 GiB (best of 2 rounds)\n"
  printf "  bastion-cgi + curl:     %6.2f s  %6.2f GiB/s\n", s_cgi, 1/s_cgi
  printf "  floor head|cat|wc -c:   %6.2f s  %6.2f GiB/s\n", s_floor, 1/s_floor
  printf "  ratio bastion-cgi / floor: %.2fx the time\n", s_cgi / s_floor
}'
