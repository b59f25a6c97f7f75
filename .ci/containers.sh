#!/usr/bin/env bash
# The container image and a rolling restart under load (issue 25), run by .ci/run as root:
#
# 1. builds the image with deploy/image.sh (podman, runc: crun refuses this sandbox's
#    cgroups);
# 2. starts three containers on a podman bridge network, seeds and --advertise given as
#    container names, n3 first, while its seeds' names do not resolve yet;
# 3. runs a job, then restarts the three containers one at a time (`podman stop`, which
#    sends SIGTERM and the node drains, then `podman start` on the same volume) while a
#    client submits jobs continuously;
# 4. follows every accepted job to its end: each must succeed, none may be lost.
#
# Prints the image size, the counts, and how long each `podman stop` took with work in
# flight. Everything it made (containers, volumes, network, client) is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

export CONTAINER_ENGINE=podman CONTAINER_RUNTIME=runc
pm() { podman --runtime runc "$@"; }
target="${CARGO_TARGET_DIR:-target}"

prefix="troupe-ci-$$"
net="$prefix-net"
work=$(mktemp -d)
client_pid=""
cleanup() {
  [ -n "$client_pid" ] && kill "$client_pid" 2>/dev/null || true
  for i in 1 2 3; do
    pm rm -f -t 0 "$prefix-$i" >/dev/null 2>&1 || true
    pm volume rm -f "$prefix-data-$i" >/dev/null 2>&1 || true
  done
  pm network rm -f "$net" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

image=$(deploy/image.sh ci)
bin="$target/release/troupe-node"
echo "image $image: $(( $(pm image inspect --format '{{.Size}}' "$image") / 1024 / 1024 )) MiB; binary $(( $(stat -c %s "$target/image/ci/rootfs/usr/local/bin/troupe-node") / 1024 / 1024 )) MiB stripped, $(( $(stat -c %s "$bin") / 1024 / 1024 )) MiB with debug info"

pm network create "$net" >/dev/null
cookie="ci-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
# Host ports for the client and the probes: the cluster port and HTTP of each container.
read -r -a ports <<<"$(python3 -c 'import socket
ss=[socket.socket() for _ in range(6)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))')"
cluster_port() { echo "${ports[$(($1 - 1))]}"; }
http_port() { echo "${ports[$(($1 + 2))]}"; }
seeds="127.0.0.1:$(cluster_port 1),127.0.0.1:$(cluster_port 2),127.0.0.1:$(cluster_port 3)"

start_container() {
  local i=$1
  pm run -d --name "$prefix-$i" --network "$net" \
    -v "$prefix-data-$i:/data" --read-only \
    --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 --stop-timeout 45 \
    -e TROUPE_COOKIE="$cookie" \
    -p "127.0.0.1:$(cluster_port "$i"):7340" -p "127.0.0.1:$(http_port "$i"):8080" \
    "$image" start --name "n$i" --advertise "$prefix-$i:7340" \
    --seeds "$prefix-1:7340,$prefix-2:7340,$prefix-3:7340" \
    --http 0.0.0.0:8080 --slots 2 >/dev/null
}

wait_ready() {
  local i=$1 deadline=$((SECONDS + 90))
  until curl -fsS "http://127.0.0.1:$(http_port "$i")/readyz" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      echo "n$i not ready after 90 s: $(curl -sS "http://127.0.0.1:$(http_port "$i")/readyz" 2>&1)" >&2
      pm logs --tail 30 "$prefix-$i" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}

# n3 first: the names of its seeds n1 and n2 do not resolve yet.
start_container 3
sleep 3
if [ "$(pm inspect --format '{{.State.Running}}' "$prefix-3")" != true ]; then
  echo "n3 did not survive seeds that do not resolve yet:" >&2
  pm logs "$prefix-3" >&2
  exit 1
fi
# The warning is polled for: a loaded CI machine can take longer than the 3 s above to
# start the node and hand its first lines to podman's log. The logs are read whole before
# the search: `grep -q` stops at the first match, and under pipefail the SIGPIPE that
# gives `pm logs` would fail the check.
said_unresolved=false
for _ in $(seq 60); do
  n3_logs="$(pm logs "$prefix-3" 2>&1 || true)"
  if grep -q "cannot resolve seed" <<<"$n3_logs"; then
    said_unresolved=true
    break
  fi
  sleep 0.5
done
if [ "$said_unresolved" != true ]; then
  echo "n3 did not say within 30 s that its seeds do not resolve yet:" >&2
  pm logs "$prefix-3" >&2
  exit 1
fi
start_container 1
start_container 2
for i in 1 2 3; do wait_ready "$i"; done
echo "three containers ready (n3 started before its seeds' names resolved)"

cat > "$work/job.toml" <<'EOF'
name = "rolling"
[[steps]]
id = "a"
task = "troupe.sleep"
input = { ms = 300 }
[[steps]]
id = "b"
task = "troupe.sleep"
input = { ms = 300 }
after = ["a"]
EOF
"$bin" submit --seeds "$seeds" --cookie "$cookie" "$work/job.toml" --wait --timeout 60 >/dev/null
echo "a job ran"

# The client: submits jobs one after another until told to stop; an accepted job's id
# goes to ids, a refused submission (its node stopping under it) to refused.
touch "$work/ids" "$work/refused"
(
  while [ ! -e "$work/stop" ]; do
    if id=$(timeout 30 "$bin" submit --seeds "$seeds" --cookie "$cookie" "$work/job.toml" 2>>"$work/client.err"); then
      echo "$id" >>"$work/ids"
    else
      echo x >>"$work/refused"
    fi
    sleep 0.05
  done
) &
client_pid=$!
sleep 3

for i in 1 2 3; do
  in_flight=$(wc -l <"$work/ids")
  t0=$(date +%s%N)
  pm stop "$prefix-$i" >/dev/null
  t1=$(date +%s%N)
  code=$(pm inspect --format '{{.State.ExitCode}}' "$prefix-$i")
  echo "n$i: podman stop took $(( (t1 - t0) / 1000000 )) ms (exit code $code; $in_flight jobs submitted so far)"
  pm logs "$prefix-$i" 2>&1 | grep -E "draining:|drained" | tail -2 | sed 's/^/    /'
  [ "$code" = 0 ] || { echo "n$i exited with $code after SIGTERM" >&2; pm logs --tail 40 "$prefix-$i" >&2; exit 1; }
  pm start "$prefix-$i" >/dev/null
  wait_ready "$i"
  sleep 3
done

touch "$work/stop"
wait "$client_pid"
client_pid=""

submitted=$(wc -l <"$work/ids")
refused=$(wc -l <"$work/refused")
succeeded=0
failed=0
lost=0
while read -r id; do
  rc=0
  "$bin" watch --seeds "$seeds" --cookie "$cookie" --timeout 120 "$id" >/dev/null 2>"$work/watch.err" || rc=$?
  case $rc in
    0) succeeded=$((succeeded + 1)) ;;
    1) failed=$((failed + 1)); echo "job $id failed or was cancelled" >&2 ;;
    *) lost=$((lost + 1)); echo "job $id: $(cat "$work/watch.err")" >&2 ;;
  esac
done <"$work/ids"
echo "rolling restart: $submitted jobs accepted, $succeeded succeeded, $failed failed, $lost lost; $refused submissions refused while a node stopped"
if [ "$refused" -gt 0 ]; then
  echo "  why (last): $(tail -1 "$work/client.err")"
fi
if [ "$submitted" -lt 20 ] || [ "$succeeded" -ne "$submitted" ]; then
  echo "rolling restart failed" >&2
  exit 1
fi
