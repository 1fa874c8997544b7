#!/usr/bin/env bash
# Session-container benchmark, in one run on the local Docker engine:
#   bare     `docker run --rm IMAGE echo hi` from inside the bastion (its
#            docker CLI, the same socket): the engine's own floor
#   session  the bastion's wrapper in broker mode with SESSION_IMAGE=IMAGE
#            for the request `echo hi`: slot, create (hardened), start
#            --attach, the output, then removal before it exits
# Both are started with `docker exec` into the same bastion, so that cost is
# in both. Measured per run: start-to-first-byte (until "hi" arrives) and
# teardown (from the first byte until the process exits: the container's
# end plus, for the session, its removal). Prints medians, means and ratios.
# Needs the test image (tests/e2e/build-image); RUNS bounds the count.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-20}
IMAGE=${BASTION_TEST_IMAGE:-docker-bastion:test}
docker image inspect "$IMAGE" >/dev/null 2>&1 || { echo "bench/session.sh: no image $IMAGE (tests/e2e/build-image)" >&2; exit 2; }

SESSION_IMAGE=bastion-bench-session:latest
printf 'FROM %s\nENTRYPOINT []\nCMD ["/bin/sh"]\n' "$(docker image inspect --format '{{.Id}}' "$IMAGE")" \
  | DOCKER_BUILDKIT=0 docker build -q -t "$SESSION_IMAGE" - >/dev/null 2>&1
NAME=bastion-bench-session-$$
cleanup() { docker rm -f "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT
docker run -d --name "$NAME" --network none -v /var/run/docker.sock:/var/run/docker.sock \
  -e SESSION_IMAGE="$SESSION_IMAGE" -e SESSION_PULL=never -e 'ALLOWED_COMMANDS=echo hi' \
  "$IMAGE" >/dev/null
for _ in $(seq 1 60); do
  docker logs "$NAME" 2>&1 | grep -q 'Server listening' && break; sleep 0.5
done
ID=$(docker image inspect --format '{{.Id}}' "$SESSION_IMAGE")

python3 - "$RUNS" "$NAME" "$ID" <<'PY'
import statistics, subprocess, sys, time
runs, name, image = int(sys.argv[1]), sys.argv[2], sys.argv[3]
cases = {
    "bare": ["docker", "exec", "-i", "-u", "agent", name,
             "docker", "run", "--rm", "--network", "none", image, "echo", "hi"],
    "session": ["docker", "exec", "-i", "-u", "agent", "-e", "SSH_ORIGINAL_COMMAND=echo hi",
                name, "/usr/local/bin/bastion-wrapper"],
}
def once(argv):
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first = p.stdout.read(1)
    t1 = time.monotonic()
    rest = p.stdout.read()
    p.wait()
    t2 = time.monotonic()
    if first + rest != b"hi\n" or p.returncode != 0:
        sys.exit(f"unexpected output {first + rest!r} (exit {p.returncode}) from {argv}")
    return (t1 - t0) * 1000, (t2 - t1) * 1000
res = {k: [] for k in cases}
for _ in range(2):
    for argv in cases.values():
        once(argv)
for _ in range(runs):
    for k, argv in cases.items():   # interleaved: load hits both alike
        res[k].append(once(argv))
print(f"{runs} runs each, milliseconds (median / mean)")
print(f"{'':10} {'first byte':>20} {'teardown':>20}")
for k, v in res.items():
    fb = [a for a, _ in v]; td = [b for _, b in v]
    print(f"{k:10} {statistics.median(fb):9.1f} / {statistics.mean(fb):8.1f} {statistics.median(td):9.1f} / {statistics.mean(td):8.1f}")
b, s = res["bare"], res["session"]
med = lambda xs, i: statistics.median([x[i] for x in xs])
print(f"session / bare: first byte {med(s,0)/med(b,0):.2f}x, teardown {med(s,1)/med(b,1):.2f}x, "
      f"whole session {(med(s,0)+med(s,1))/(med(b,0)+med(b,1)):.2f}x")
PY
