#!/usr/bin/env bash
# SSH path benchmark, all in one run on loopback:
#   floor     the same sshd, same keys lookup, ForceCommand /bin/true
#             (for the wrapper alone: `/bin/sh -c true`, what FORCE_COMMAND
#             costs at the very least)
#   baseline  the same sshd, ForceCommand = the shell wrapper (busybox sh +
#             flock) running FORCE_COMMAND=true
#   bastion   the config bastion-entrypoint renders: bastion-wrapper with
#             its lock, FORCE_COMMAND=true
#   monitor   the bastion as deployed: the real bastion-entrypoint booted on
#             a root of its own (bastion-monitor relaying sshd's log, the
#             wrapper asking it for the session and reporting the end), its
#             log read through a pipe as `docker logs` reads it (end to end
#             only)
# End to end (`ssh agent@127.0.0.1 cmd`, a full login each), then the
# wrapper alone without ssh (vs the shell wrapper and a bare /bin/true).
# Prints means and ratios. Run as root (tests/setup-host prepares the
# machine). RUNS and MICRO_RUNS bound the count.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-40}
MICRO_RUNS=${MICRO_RUNS:-500}
BASELINE=${BASELINE:-$(cd .. && pwd)/shared/baseline}
[ -r "$BASELINE/wrapper.sh" ] || { echo "bench/ssh.sh: baseline not found at $BASELINE (set BASELINE=)" >&2; exit 2; }

cargo build --release --locked --bins -q
BIN=$(pwd)/target/release
T=$(mktemp -d /tmp/bastion-bench-ssh.XXXXXX)
chmod 0755 "$T"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5 # the monitor ends with its sshd
  # The key index the logins started (its own process group, detached).
  for p in $(pgrep -f -- "--serve-index $T/" || true); do kill "$p" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P_BASTION=$(free_port); P_FLOOR=$(free_port); P_BASE=$(free_port); P_MON=$(free_port)

# A bastion root: rootfs, a client key in users.d, the entrypoint's files.
R=$T/root
mkdir -p "$R/etc/bastion/users.d" "$T/client"
cp -a rootfs/. "$R/"
cp /etc/group "$R/etc/group"
ssh-keygen -q -t ed25519 -N '' -C bench -f "$T/client/id"
install -m 0644 "$T/client/id.pub" "$R/etc/bastion/users.d/bench.pub"
CFG=$(env -i BASTION_ROOT="$R" FORCE_COMMAND=true SSH_PORT="$P_BASTION" \
  SSH_LISTEN_ADDRESS=127.0.0.1 "$BIN/bastion-entrypoint" --prepare-only 2>"$T/entrypoint.log")

# busybox first on PATH for the shell baseline, as on Alpine.
BB=$T/busybox; mkdir -p "$BB"
for a in sh flock grep sed cat; do ln -s "$(command -v busybox)" "$BB/$a"; done
install -d -m 1777 "$T/baseline-lock"
sed -e "s|^Port .*|Port $P_FLOOR|" -e "s|^ForceCommand .*|ForceCommand /bin/true|" "$CFG" >"$T/floor.conf"
sed -e "s|^Port .*|Port $P_BASE|" \
    -e "s|^ForceCommand .*|ForceCommand env PATH=$BB:/usr/bin:/bin FORCE_COMMAND=true BASELINE_LOCK=$T/baseline-lock/lock $BB/sh $BASELINE/wrapper.sh|" \
    "$CFG" >"$T/baseline.conf"

SSHD=$(command -v sshd || echo /usr/sbin/sshd)
for c in "$CFG" "$T/floor.conf" "$T/baseline.conf"; do
  "$SSHD" -t -f "$c"
  # sshd's stderr (inherited by bastion-keys) is docker logs in the image.
  "$SSHD" -D -f "$c" -E "$T/sshd-$(basename "$c").log" 2>>"$T/sshd.stderr" &
  PIDS+=($!)
done
# The deployed bastion: same key, same FORCE_COMMAND, booted for real.
R2=$T/root-monitor
mkdir -p "$R2/etc/bastion/users.d"
cp -a rootfs/. "$R2/"
cp /etc/group "$R2/etc/group"
install -m 0644 "$T/client/id.pub" "$R2/etc/bastion/users.d/bench.pub"
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin BASTION_ROOT="$R2" \
  FORCE_COMMAND=true SSH_PORT="$P_MON" SSH_LISTEN_ADDRESS=127.0.0.1 \
  "$BIN/bastion-entrypoint" > >(cat >"$T/monitor.log") 2>&1 &
PIDS+=($!)
for p in "$P_BASTION" "$P_FLOOR" "$P_BASE" "$P_MON"; do
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
done

SSH="ssh -F /dev/null -T -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -i $T/client/id"
for p in "$P_BASTION" "$P_FLOOR" "$P_BASE" "$P_MON"; do
  out=$($SSH -p "$p" agent@127.0.0.1 cmd 2>&1) || { echo "bench/ssh.sh: login on port $p failed: $out" >&2; exit 1; }
done

# Both measurements interleave floor, baseline and bastion (a shuffled
# order each round) so the load of a shared machine hits the three alike,
# and compare medians and the median of per-round ratios.
cat >"$T/interleave.py" <<'PY'
import json, random, statistics, subprocess, sys, time
label, rounds, cmds = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
t = {k: [] for k in cmds}
for i in range(rounds + max(3, rounds // 20)):
    order = list(cmds)
    random.shuffle(order)
    for k in order:
        s = time.perf_counter()
        r = subprocess.run(cmds[k], stdin=subprocess.DEVNULL, capture_output=True)
        d = (time.perf_counter() - s) * 1000
        if r.returncode != 0:
            sys.exit(f"{label}/{k}: failed: {r.stderr.decode()}")
        if i >= max(3, rounds // 20):  # warm-up rounds
            t[k].append(d)
m = {k: statistics.median(v) for k, v in t.items()}
print(f"== {label} ({rounds} interleaved rounds)")
for k, v in t.items():
    print(f"  {k:9} median {m[k]:8.2f} ms   mean {statistics.mean(v):8.2f} ms   min {min(v):8.2f} ms")
pr = lambda a, b: statistics.median(x / y for x, y in zip(t[a], t[b]))
print(f"  ratio of medians:          bastion/floor {m['bastion']/m['floor']:.3f}x   baseline/floor {m['baseline']/m['floor']:.3f}x   bastion/baseline {m['bastion']/m['baseline']:.3f}x")
print(f"  median of per-round ratios: bastion/floor {pr('bastion', 'floor'):.3f}x   baseline/floor {pr('baseline', 'floor'):.3f}x   bastion/baseline {pr('bastion', 'baseline'):.3f}x")
if "monitor" in t:
    print(f"  with the monitor (as deployed): monitor/floor {m['monitor']/m['floor']:.3f}x of medians, {pr('monitor', 'floor'):.3f}x per round (target <= 1.05x)")
PY

SSHJ=$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' $SSH)
python3 "$T/interleave.py" "end to end: ssh agent@127.0.0.1 cmd" "$RUNS" "$(python3 - "$SSHJ" "$P_FLOOR" "$P_BASE" "$P_BASTION" "$P_MON" <<'PY'
import json, sys
ssh = json.loads(sys.argv[1])
print(json.dumps({k: ssh + ["-p", p, "agent@127.0.0.1", "cmd"] for k, p in zip(["floor", "baseline", "bastion", "monitor"], sys.argv[2:6])}))
PY
)"
sessions=$(grep -c 'event=session.end.*transport=ssh' "$T/monitor.log" || true)
echo "  sessions the monitor logged (session.end, ssh): $sessions"

RT=$R/run/bastion/runtime.json
python3 "$T/interleave.py" "the wrapper alone, no ssh (floor: /bin/sh -c true)" "$MICRO_RUNS" "$(python3 - "$BB" "$BASELINE" "$T" "$BIN" "$RT" <<'PY'
import json, sys
bb, base, t, bin_, rt = sys.argv[1:]
print(json.dumps({
    "floor": ["env", "-i", "/bin/sh", "-c", "true"],
    "baseline": ["env", "-i", f"PATH={bb}:/usr/bin:/bin", "FORCE_COMMAND=true", f"BASELINE_LOCK={t}/baseline-lock/lock", f"{bb}/sh", f"{base}/wrapper.sh"],
    "bastion": ["env", "-i", f"{bin_}/bastion-wrapper", "--runtime", rt],
}))
PY
)"
