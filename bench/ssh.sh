#!/usr/bin/env bash
# SSH path benchmark, all in one run on loopback:
#   floor     the same sshd, same keys lookup, ForceCommand /bin/true
#             (for the wrapper alone: `/bin/sh -c true`, what FORCE_COMMAND
#             costs at the very least)
#   baseline  the same sshd, ForceCommand = the shell wrapper (busybox sh +
#             flock) running FORCE_COMMAND=true
#   bastion   the config bastion-entrypoint renders: bastion-wrapper with
#             its lock, FORCE_COMMAND=true
# End to end (`ssh agent@127.0.0.1 cmd`, a full login each), then the
# wrapper alone without ssh (vs the shell wrapper and a bare /bin/true).
# Prints means and ratios. Run as root (tests/setup-host prepares the
# machine). RUNS and MICRO_RUNS bound the count.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-40}
MICRO_RUNS=${MICRO_RUNS:-300}
BASELINE=${BASELINE:-$(cd .. && pwd)/shared/baseline}
[ -r "$BASELINE/wrapper.sh" ] || { echo "bench/ssh.sh: baseline not found at $BASELINE (set BASELINE=)" >&2; exit 2; }

cargo build --release --locked --bins -q
BIN=$(pwd)/target/release
T=$(mktemp -d /tmp/bastion-bench-ssh.XXXXXX)
chmod 0755 "$T"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P_BASTION=$(free_port); P_FLOOR=$(free_port); P_BASE=$(free_port)

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
for p in "$P_BASTION" "$P_FLOOR" "$P_BASE"; do
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
done

SSH="ssh -F /dev/null -T -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -i $T/client/id"
for p in "$P_BASTION" "$P_FLOOR" "$P_BASE"; do
  out=$($SSH -p "$p" agent@127.0.0.1 cmd 2>&1) || { echo "bench/ssh.sh: login on port $p failed: $out" >&2; exit 1; }
done

# Interleaved (floor, baseline, bastion in a shuffled order each round) so
# the load of a shared machine hits the three alike; medians are compared.
echo "== end to end: ssh agent@127.0.0.1 cmd ($RUNS rounds, interleaved)"
python3 - "$RUNS" "$P_FLOOR" "$P_BASE" "$P_BASTION" $SSH <<'PY'
import random, statistics, subprocess, sys, time
runs, ports, ssh = int(sys.argv[1]), dict(zip(["floor", "baseline", "bastion"], sys.argv[2:5])), sys.argv[5:]
t = {k: [] for k in ports}
for i in range(runs + 3):
    order = list(ports)
    random.shuffle(order)
    for k in order:
        s = time.perf_counter()
        r = subprocess.run(ssh + ["-p", ports[k], "agent@127.0.0.1", "cmd"], stdin=subprocess.DEVNULL, capture_output=True)
        d = (time.perf_counter() - s) * 1000
        if r.returncode != 0:
            sys.exit(f"{k}: ssh failed: {r.stderr.decode()}")
        if i >= 3:  # warm-up rounds
            t[k].append(d)
m = {k: statistics.median(v) for k, v in t.items()}
for k, v in t.items():
    print(f"  {k:9} median {m[k]:7.2f} ms   mean {statistics.mean(v):7.2f} ms   min {min(v):7.2f} ms")
print(f"end to end: bastion/floor {m['bastion']/m['floor']:.3f}x   baseline/floor {m['baseline']/m['floor']:.3f}x   bastion/baseline {m['bastion']/m['baseline']:.3f}x (ratio of medians)")
# Per-round ratios: each round's three logins saw about the same load.
pr = lambda a, b: statistics.median(x / y for x, y in zip(t[a], t[b]))
print(f"end to end: bastion/floor {pr('bastion', 'floor'):.3f}x   baseline/floor {pr('baseline', 'floor'):.3f}x   bastion/baseline {pr('bastion', 'baseline'):.3f}x (median of per-round ratios)")
PY

echo "== the wrapper alone, no ssh ($MICRO_RUNS runs each)"
RT=$R/run/bastion/runtime.json
hyperfine -N -w 20 -r "$MICRO_RUNS" --export-json "$T/micro.json" \
  -n floor "/bin/sh -c true" \
  -n baseline "env -i PATH=$BB:/usr/bin:/bin FORCE_COMMAND=true BASELINE_LOCK=$T/baseline-lock/lock $BB/sh $BASELINE/wrapper.sh" \
  -n bastion "env -i $BIN/bastion-wrapper --runtime $RT"

python3 - "$T/micro.json" <<'PY'
import json, sys
for label, path in zip(["wrapper alone"], sys.argv[1:]):
    r = {x["command"]: x for x in json.load(open(path))["results"]}
    f, b, x = (r[k]["mean"] * 1000 for k in ("floor", "baseline", "bastion"))
    sb, sx = (r[k]["stddev"] * 1000 for k in ("baseline", "bastion"))
    print(f"{label}: floor {f:.2f} ms, baseline {b:.2f} ms (±{sb:.2f}), bastion {x:.2f} ms (±{sx:.2f})")
    print(f"  bastion/floor {x/f:.3f}x   baseline/floor {b/f:.3f}x   bastion/baseline {x/b:.3f}x")
PY
