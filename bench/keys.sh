#!/usr/bin/env bash
# Key lookup benchmark (README "Keys"): bastion-keys vs the shell baseline
# (`cat users.d/*.pub` under busybox sh) and the physical floor, in one run.
#
#   1. One lookup, as sshd makes it (`USER FINGERPRINT`), at 1, 1,000 and
#      10,000 files, for a key that is present and one that is absent:
#      bastion-keys (key index warm), bastion-keys --scan (reads every
#      file), the baseline, and the floor (exec of /bin/true).
#   2. A real `ssh` login (sshd -i per connection, as the tests do) at 1 and
#      10,000 files with bastion-keys as AuthorizedKeysCommand, the same at
#      10,000 files with the baseline, and the floor: sshd reading one
#      static authorized_keys file.
#
# Runs are interleaved (each round runs every command once, shuffled) and
# medians reported, so load from elsewhere on the machine hits all sides.
# Needs root (sshd, AuthorizedKeysCommandUser nobody), python3, jq,
# busybox, OpenSSH. Bounded: RUNS rounds, a few minutes.
# Usage: bench/keys.sh [RUNS]     (RUNS per measurement, default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-20}
BASELINE=${BASELINE:-../shared/baseline/keys.sh}
[ -r "$BASELINE" ] || { echo "baseline $BASELINE not found" >&2; exit 2; }
BASELINE=$(cd "$(dirname "$BASELINE")" && pwd)/$(basename "$BASELINE")

cargo build --release --quiet --bin bastion-keys
BIN=$PWD/target/release/bastion-keys

WORK=$(mktemp -d /tmp/bastion-bench-keys.XXXXXX)
chmod 755 "$WORK"
# The key index's socket directory sits next to the runtime file and must
# be its user's alone: root's for the lookups run here, nobody's (with a
# copy of each runtime file) for sshd's calls.
install -d -m 0700 "$WORK/keys-index"
install -d -m 0755 "$WORK/nobody"
install -d -m 0700 -o nobody -g "$(id -g nobody)" "$WORK/nobody/keys-index"
SAFE=""
cleanup() {
  # The key indexes this run started exit when their directory goes.
  rm -rf "$WORK"
  [ -n "$SAFE" ] && rm -rf "$SAFE"
  return 0
}
trap cleanup EXIT

# sshd runs an AuthorizedKeysCommand only from a root-owned path that no
# one else can write, parents included.
path_is_safe() {
  local p=$1
  while [ "$p" != "/" ]; do
    [ "$(stat -c %u "$p")" = 0 ] || return 1
    [ $(( 0$(stat -c %a "$p") & 022 )) = 0 ] || return 1
    p=$(dirname "$p")
  done
}
if ! path_is_safe "$BIN"; then
  SAFE=$(mktemp -d /var/lib/bastion-bench-keys.XXXXXX)
  chmod 755 "$SAFE"
  install -m 0755 "$BIN" "$SAFE/bastion-keys"
  BIN=$SAFE/bastion-keys
fi

# busybox sh and cat first on PATH for the baseline (what Alpine has).
mkdir -p "$WORK/bb"
ln -s "$(command -v busybox)" "$WORK/bb/sh"
ln -s "$(command -v busybox)" "$WORK/bb/cat"
BB_PATH=$WORK/bb:/usr/bin:/bin

ssh-keygen -q -t ed25519 -N '' -C client -f "$WORK/client"
ssh-keygen -q -t ed25519 -N '' -C host -f "$WORK/host"
ssh-keygen -q -t ed25519 -N '' -C absent -f "$WORK/absent"
PRESENT_FP=$(ssh-keygen -lf "$WORK/client.pub" | cut -d' ' -f2)
ABSENT_FP=$(ssh-keygen -lf "$WORK/absent.pub" | cut -d' ' -f2)

# users.d with N files: N-1 random ed25519 keys, and the client's key in
# the middle one.
make_dir() {
  local n=$1 d=$WORK/users-$1
  mkdir -p "$d"
  chmod 755 "$d"
  python3 - "$d" "$n" <<'EOF'
import base64, os, struct, sys
d, n = sys.argv[1], int(sys.argv[2])
s = lambda b: struct.pack(">I", len(b)) + b
for i in range(n):
    blob = s(b"ssh-ed25519") + s(os.urandom(32))
    with open(f"{d}/user{i:05d}.pub", "w") as f:
        f.write("ssh-ed25519 " + base64.b64encode(blob).decode() + f" user{i}@example\n")
EOF
  cp "$WORK/client.pub" "$d/user$(printf %05d $((n / 2))).pub"
  : > "$WORK/merged-$n"
  cat > "$WORK/runtime-$n.json" <<EOF
{"user":"agent","mode":{"kind":"broker"},"allowed_commands":"","allowed_commands_file":"$WORK/none",
 "command_prefix":"","command_lock":"none","lock_file":"$WORK/lock","authorized_keys_dir":"$d",
 "merged_keys_file":"$WORK/merged-$n","pty":false}
EOF
  chmod 644 "$WORK/runtime-$n.json" "$WORK/merged-$n"
  cp -p "$WORK/runtime-$n.json" "$WORK/nobody/runtime-$n.json"
  # Start the key index (as root for the lookups; sshd's calls run as
  # nobody and start their own) and wait until it answers.
  "$BIN" --runtime "$WORK/runtime-$n.json" agent >/dev/null 2>&1
  for _ in $(seq 100); do
    "$BIN" --runtime "$WORK/runtime-$n.json" --index-only agent >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "key index for $n files did not start" >&2
  exit 1
}

# Runs every command of a group once per round, in a shuffled order, for
# RUNS rounds (after one warm-up round), and prints "name median_ms" per
# command: interleaving keeps drifting load from the rest of the machine
# out of the ratios. Arguments: name=command pairs (split like a shell
# would, then executed directly: no shell in what is timed).
interleave() {
  python3 - "$RUNS" "$@" <<'PY'
import random, shlex, statistics, subprocess, sys, time
runs = int(sys.argv[1])
cmds = [(n, shlex.split(c)) for n, c in (a.split("=", 1) for a in sys.argv[2:])]
times = {n: [] for n, _ in cmds}
for r in range(runs + 1):
    order = cmds[:]
    random.shuffle(order)
    for name, cmd in order:
        t = time.perf_counter_ns()
        subprocess.run(cmd, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r:
            times[name].append((time.perf_counter_ns() - t) / 1e6)
for n, _ in cmds:
    print(n, round(statistics.median(times[n]), 3))
PY
}
get() { awk -v k="$1" '$1 == k { print $2 }' "$2"; }

echo "== one lookup as sshd makes it (median ms; ratio = baseline / this)"
printf '%-7s %-7s %10s %10s %10s %10s %12s %12s\n' files key index scan baseline floor base/index base/scan
for n in 1 1000 10000; do
  make_dir "$n"
  rt=$WORK/runtime-$n.json
  interleave \
    "floor=/bin/true" \
    "base=env PATH=$BB_PATH AUTHORIZED_KEYS_DIR=$WORK/users-$n sh $BASELINE" \
    "index-present=$BIN --runtime $rt agent $PRESENT_FP" \
    "index-absent=$BIN --runtime $rt agent $ABSENT_FP" \
    "scan-present=$BIN --runtime $rt --scan agent $PRESENT_FP" \
    "scan-absent=$BIN --runtime $rt --scan agent $ABSENT_FP" > "$WORK/lookup-$n"
  floor=$(get floor "$WORK/lookup-$n")
  base=$(get base "$WORK/lookup-$n")
  for key in present absent; do
    idx=$(get "index-$key" "$WORK/lookup-$n")
    scan=$(get "scan-$key" "$WORK/lookup-$n")
    printf '%-7s %-7s %10.2f %10.2f %10.2f %10.2f %11.1fx %11.1fx\n' "$n" "$key" \
      "$idx" "$scan" "$base" "$floor" "$(jq -n "$base/$idx")" "$(jq -n "$base/$scan")"
  done
done

sshd_config() { # file authorized-keys-lines...
  local cfg=$1
  shift
  {
    echo "HostKey $WORK/host"
    echo "PidFile none"
    echo "UsePAM no"
    echo "LogLevel VERBOSE"
    echo "AllowUsers agent"
    echo "AuthenticationMethods publickey"
    echo "PasswordAuthentication no"
    echo "KbdInteractiveAuthentication no"
    for l in "$@"; do echo "$l"; done
  } > "$cfg"
}
sshd_config "$WORK/sshd-floor" "AuthorizedKeysFile $WORK/static_keys" "StrictModes no"
cp "$WORK/client.pub" "$WORK/static_keys"
chmod 644 "$WORK/static_keys"
for n in 1 10000; do
  sshd_config "$WORK/sshd-keys-$n" "AuthorizedKeysFile none" \
    "AuthorizedKeysCommand $BIN --runtime $WORK/nobody/runtime-$n.json %u %f" \
    "AuthorizedKeysCommandUser nobody"
done
sshd_config "$WORK/sshd-base-10000" "AuthorizedKeysFile none" \
  "AuthorizedKeysCommand /usr/bin/env PATH=$BB_PATH AUTHORIZED_KEYS_DIR=$WORK/users-10000 sh $BASELINE" \
  "AuthorizedKeysCommandUser nobody"

login() { # sshd-config
  echo "ssh -F /dev/null -T -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=no \
-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -i $WORK/client \
-o ProxyCommand=\"$(command -v sshd) -i -f $1 -E $WORK/sshd.log\" agent@bench true"
}
# The first login starts the key index that sshd's calls (as nobody) use.
for c in keys-1 keys-10000 floor base-10000; do
  eval "$(login "$WORK/sshd-$c")" 2>/dev/null || { echo "login with $c failed; see $WORK/sshd.log" >&2; cat "$WORK/sshd.log" >&2; exit 1; }
done
sleep 1

echo
echo "== real ssh login (median ms)"
interleave \
  "keys-1=$(login "$WORK/sshd-keys-1")" \
  "keys-10000=$(login "$WORK/sshd-keys-10000")" \
  "base-10000=$(login "$WORK/sshd-base-10000")" \
  "floor=$(login "$WORK/sshd-floor")" > "$WORK/login"
l1=$(get keys-1 "$WORK/login")
l10k=$(get keys-10000 "$WORK/login")
lb=$(get base-10000 "$WORK/login")
lf=$(get floor "$WORK/login")
printf '%-44s %10.1f\n' "bastion-keys, 1 file" "$l1" \
  "bastion-keys, 10,000 files" "$l10k" \
  "baseline, 10,000 files" "$lb" \
  "floor: static authorized_keys, no command" "$lf"
printf 'login at 10,000 / at 1 file: %.3fx   baseline / bastion-keys at 10,000: %.2fx   bastion-keys 1 file / floor: %.3fx\n' \
  "$(jq -n "$l10k/$l1")" "$(jq -n "$lb/$l10k")" "$(jq -n "$l1/$lf")"
