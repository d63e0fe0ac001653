#!/usr/bin/env bash
# scripts/cluster as a user runs it: up, publish and read back with build/ordo,
# stop and restart one node, up twice, status, down. Uses its own directory and
# a base port reserved for it; stops every broker it started, whatever happens.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
dir=$(mktemp -d)

# The base port P: the cluster uses P+1..P+5, P+101..P+105 and P+201..P+205.
# Reserved as tests/testing/ports.h reserves ports (read it for why): below
# the kernel's ephemeral range, in blocks of 16 ports locked with flock for
# as long as this script lives, so no concurrent test can take them.
lock_dir=/tmp/ordo-test-ports
mkdir -p "$lock_dir"
ephemeral_low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
declare -A held=()  # block -> file descriptor of its lock
release_all() { local b; for b in "${!held[@]}"; do eval "exec ${held[$b]}>&-"; done; held=(); }
reserve() {  # reserve P: locks every block P's ports fall in; false (nothing held) if one is taken
  local p=$1 port b fd
  for port in $((p + 1)) $((p + 5)) $((p + 101)) $((p + 105)) $((p + 201)) $((p + 205)); do
    b=$((port / 16))
    [[ -n "${held[$b]:-}" ]] && continue
    exec {fd}>"$lock_dir/block-$b.lock"
    if ! flock -n "$fd"; then eval "exec $fd>&-"; release_all; return 1; fi
    held[$b]=$fd
  done
  for port in $((p + 1)) $((p + 2)) $((p + 3)) $((p + 5)) $((p + 101)) $((p + 102)) $((p + 103)) \
      $((p + 104)) $((p + 105)) $((p + 201)) $((p + 202)) $((p + 203)) $((p + 204)) $((p + 205)); do
    # Something outside this scheme listens there: try elsewhere.
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then release_all; return 1; fi
  done
}
port=""
for _ in $(seq 200); do
  p=$((10240 + (RANDOM * 32768 + RANDOM) % (ephemeral_low - 10240 - 320)))
  if reserve "$p"; then port=$p; break; fi
done
[[ -n "$port" ]] || { echo "FAIL: no free base port" >&2; exit 1; }
deploy_pids=()  # brokers started from `scripts/cluster config`'s files
cleanup() {
  local pid
  for pid in "${deploy_pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${deploy_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  "$root/scripts/cluster" down --dir "$dir" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  local log
  for log in "$dir"/*/broker.log "$dir"/deploy/*/broker.log; do
    [[ -f "$log" ]] || continue
    echo "--- the last lines of $log:" >&2
    tail -n 40 "$log" >&2
  done
  exit 1
}

out=$(ORDO_BUILD_DIR=$build "$root/scripts/cluster" up --dir "$dir" --base-port "$port")
brokers=$(sed -n 's/^brokers=//p' <<<"$out")
[[ "$brokers" == "127.0.0.1:$((port + 101)),127.0.0.1:$((port + 102)),127.0.0.1:$((port + 103))" ]] ||
  fail "brokers= line: $out"
grep -q '^metrics=' <<<"$out" || fail "no metrics= line"
credentials=$(sed -n 's/^credentials=//p' <<<"$out")
[[ "$credentials" == "$dir/keys/admin.key" && -f "$credentials" ]] || fail "credentials= line: $out"
[[ $(stat -c %a "$credentials") == 600 ]] || fail "credentials mode $(stat -c %a "$credentials")"
# Secure by default: without credentials a client is refused (exit 5), at once.
plain_rc=0
plain=$("$build/ordo" publish --brokers "$brokers" refused 2>&1) || plain_rc=$?
[[ $plain_rc == 5 && "$plain" == *CurveZMQ* ]] || fail "a plaintext publish: exit $plain_rc: $plain"
# The user's way: the environment from `scripts/cluster env`.
env_out=$(ORDO_BUILD_DIR=$build "$root/scripts/cluster" env --dir "$dir")
[[ "$env_out" == *"export ORDO_BROKERS=$brokers"* &&
   "$env_out" == *"export ORDO_CREDENTIALS=$credentials"* ]] || fail "env: $env_out"
eval "$env_out"
for n in 1 2 3; do
  [[ -f "$dir/node$n/ordo.toml" && -f "$dir/node$n/broker.pid" && -f "$dir/node$n/broker.log" ]] ||
    fail "node$n files"
done

offsets=$(printf 'a\nb\nc\n' | "$build/ordo" publish)  # --brokers from ORDO_BROKERS
[[ "$offsets" == $'0\n1\n2' ]] || fail "publish printed: $offsets"
got=$("$build/ordo" subscribe --brokers "$brokers" --from earliest --count 3)
[[ "$got" == $'0\ta\n1\tb\n2\tc' ]] || fail "subscribe printed: $got"

json=$("$build/ordo" replay --brokers "$brokers" --from 1 --to 2 --format json)
[[ "$json" == '{"offset":1,"key":"","payload":"b","producer":'*',"sequence":2}' ]] ||
  fail "replay --format json: $json"
quoted=$("$build/ordo" publish --brokers "$brokers" --key k 'say "hi"')
got=$("$build/ordo" subscribe --brokers "$brokers" --from "$quoted" --count 1 --format json)
[[ "$got" == *'"key":"k","payload":"say \"hi\""'* ]] || fail "json escaping: $got"
status=$("$build/ordo" status --brokers "$brokers" --json)
[[ $(grep -c '"role":"leader"' <<<"$status") == 1 ]] || fail "status --json: $status"
ex=$("$build/ordo-example-publisher" "$brokers" x y)
[[ "$ex" == $'4\n5' ]] || fail "example publisher: $ex"
ex=$("$build/ordo-example-subscriber" "$brokers" 4 2)
[[ "$ex" == $'4\tx\n5\ty' ]] || fail "example subscriber: $ex"

ORDO_BUILD_DIR=$build "$root/scripts/cluster" stop 2 --dir "$dir" >/dev/null
[[ ! -f "$dir/node2/broker.pid" ]] || fail "stop 2 left a pid file"
"$build/ordo" publish --brokers "$brokers" d >/dev/null || fail "publish with node 2 down"
out=$(ORDO_BUILD_DIR=$build "$root/scripts/cluster" start 2 --dir "$dir") || fail "start 2: $out"
[[ "$out" == "node 2 started" ]] || fail "start 2 printed: $out"
node2=127.0.0.1:$((port + 102))
got=$(timeout 30 "$build/ordo" subscribe --brokers "$node2" --from earliest --count 7 | tail -1)
[[ "$got" == $'6\td' ]] || fail "restarted node 2 serves: $got"
# Starting a running node says so, and only that.
pid2=$(cat "$dir/node2/broker.pid")
out=$(ORDO_BUILD_DIR=$build "$root/scripts/cluster" start 2 --dir "$dir") || fail "start 2 again: $out"
[[ "$out" == "node 2 is already running (pid $pid2)" ]] || fail "start 2 again printed: $out"
# A broker that exits at once (a config error) fails `start`, naming why.
ORDO_BUILD_DIR=$build "$root/scripts/cluster" stop 3 --dir "$dir" >/dev/null
cp "$dir/node3/ordo.toml" "$dir/node3/ordo.toml.good"
echo "this is not TOML" >> "$dir/node3/ordo.toml"
rc=0
out=$(ORDO_BUILD_DIR=$build "$root/scripts/cluster" start 3 --dir "$dir" 2>&1) || rc=$?
[[ $rc == 1 && "$out" == *"node 3 failed to start"* && "$out" == *"config error"* &&
   "$out" != *"started"* ]] || fail "start 3 with a bad config: exit $rc: $out"
[[ ! -f "$dir/node3/broker.pid" ]] || fail "a failed start left a pid file"
mv "$dir/node3/ordo.toml.good" "$dir/node3/ordo.toml"
out=$(ORDO_BUILD_DIR=$build "$root/scripts/cluster" start 3 --dir "$dir") || fail "start 3: $out"
[[ "$out" == "node 3 started" ]] || fail "start 3 printed: $out"

# A learner joins the running cluster: the next id (4), the next ports, the
# voters' configs untouched; it serves what was published, redirects a publish.
sum_before=$(cat "$dir"/node*/ordo.toml | md5sum)
out=$(ORDO_BUILD_DIR=$build "$root/scripts/cluster" learner up --dir "$dir")
[[ "$out" == *"learner=learner4"* && "$out" == *"client=127.0.0.1:$((port + 104))"* ]] ||
  fail "learner up: $out"
learner=127.0.0.1:$((port + 104))
got=$(timeout 30 "$build/ordo" subscribe --brokers "$learner" --from earliest --count 7 | tail -1)
[[ "$got" == $'6\td' ]] || fail "the learner serves: $got"
[[ $("$build/ordo" publish --brokers "$learner" e) == 7 ]] || fail "publish through the learner"
status=$("$build/ordo" status --brokers "$learner" --json)
[[ "$status" == *'"role":"learner"'* ]] || fail "learner status: $status"
[[ $(cat "$dir"/node*/ordo.toml | md5sum) == "$sum_before" ]] || fail "voters' configs changed"
status=$(ORDO_BUILD_DIR=$build "$root/scripts/cluster" status --dir "$dir")
grep -q "learner4 running" <<<"$status" || fail "status with a learner: $status"
ORDO_BUILD_DIR=$build "$root/scripts/cluster" learner down --dir "$dir" --id 4 >/dev/null
[[ ! -f "$dir/learner4/broker.pid" ]] || fail "learner down left a pid file"
"$build/ordo" publish --brokers "$brokers" f >/dev/null || fail "publish with the learner down"
ORDO_BUILD_DIR=$build "$root/scripts/cluster" learner up --dir "$dir" --id 4 >/dev/null  # on its data
got=$(timeout 30 "$build/ordo" subscribe --brokers "$learner" --from 8 --count 1)
[[ "$got" == $'8\tf' ]] || fail "the restarted learner serves: $got"
out=$(ORDO_BUILD_DIR=$build "$root/scripts/cluster" learner up --dir "$dir" --id 2 2>&1) &&
  fail "a learner with a member's id started: $out"

# Membership: a new broker joins (the next id, 5, after the learner's 4)
# and is promoted; then node 2 is removed and stopped. brokers=, env and
# status follow the membership.
out=$(ORDO_BUILD_DIR=$build "$root/scripts/cluster" add --dir "$dir" 2>/dev/null) || fail "add: $out"
node5=127.0.0.1:$((port + 105))
[[ "$out" == *"node=node5"* && "$out" == *"brokers=$brokers,$node5"* ]] || fail "add printed: $out"
members=$("$build/ordo" members --brokers "$brokers" --json) || fail "members: $members"
[[ "$members" == *'{"id":5,"voter":true'* ]] || fail "members after add: $members"
got=$(timeout 30 "$build/ordo" subscribe --brokers "$node5" --from 8 --count 1)
[[ "$got" == $'8\tf' ]] || fail "node 5 serves: $got"
out=$(ORDO_BUILD_DIR=$build "$root/scripts/cluster" remove 2 --dir "$dir" 2>/dev/null) || fail "remove 2: $out"
three="127.0.0.1:$((port + 101)),127.0.0.1:$((port + 103)),$node5"
[[ "$out" == *"brokers=$three"* ]] || fail "remove printed: $out"
[[ ! -f "$dir/node2/broker.pid" ]] || fail "remove 2 left node 2 running"
members=$("$build/ordo" members --brokers "$three" --json) || fail "members: $members"
[[ "$members" != *'"id":2,'* && "$members" == *'{"id":5,"voter":true'* ]] ||
  fail "members after remove: $members"
env_out=$(ORDO_BUILD_DIR=$build "$root/scripts/cluster" env --dir "$dir")
[[ "$env_out" == *"export ORDO_BROKERS=$three"* ]] || fail "env after remove: $env_out"
status=$(ORDO_BUILD_DIR=$build "$root/scripts/cluster" status --dir "$dir")
grep -q "node5  running" <<<"$status" && ! grep -q "^node2 " <<<"$status" || fail "status: $status"
[[ $("$build/ordo" publish --brokers "$three" g) == 9 ]] || fail "publish after remove"
brokers=$three

again=$(ORDO_BUILD_DIR=$build "$root/scripts/cluster" up --dir "$dir" --base-port "$port")
grep -q "already up" <<<"$again" || fail "second up: $again"
status=$(ORDO_BUILD_DIR=$build "$root/scripts/cluster" status --dir "$dir")
grep -q "node3  running" <<<"$status" || fail "status: $status"
ORDO_BUILD_DIR=$build "$root/scripts/cluster" down --dir "$dir" >/dev/null
for n in 1 2 3 5; do [[ ! -f "$dir/node$n/broker.pid" ]] || fail "down left node$n"; done
[[ ! -f "$dir/learner4/broker.pid" ]] || fail "down left the learner"

# `config` for a deployment across hosts, here three loopback addresses of
# this machine (every 127.x.y.z is lo's), on the ports the cluster above
# used (reserved, and free again): each broker advertises its host's
# address and binds 0.0.0.0, started from its host's directory as systemd
# would start it (--etc-dir/--data-dir with %h put each host's files there).
deploy=$dir/deploy
hosts=127.0.0.21,127.0.0.22,127.0.0.23
out=$(ORDO_BUILD_DIR=$build "$root/scripts/cluster" config --hosts "$hosts" --dir "$deploy" \
  --base-port "$port" --etc-dir "$deploy/%h" --data-dir "$deploy/%h/data") || fail "config: $out"
deploy_brokers="127.0.0.21:$((port + 101)),127.0.0.22:$((port + 102)),127.0.0.23:$((port + 103))"
[[ "$out" == *"brokers=$deploy_brokers"* && "$out" == *"credentials=$deploy/admin.key"* ]] ||
  fail "config printed: $out"
for n in 1 2 3; do
  h=127.0.0.2$n
  for f in broker.toml broker.key access.toml ordo-broker.service; do
    [[ -f "$deploy/$h/$f" ]] || fail "config wrote no $deploy/$h/$f"
  done
  [[ $(stat -c %a "$deploy/$h/broker.key") == 600 ]] || fail "$h/broker.key mode"
  toml=$(cat "$deploy/$h/broker.toml")
  [[ "$toml" == *"node_id = $n"* && "$toml" == *"peer = \"0.0.0.0:$((port + n))\""* &&
     "$toml" == *"peer = \"$h:$((port + n))\""* && "$toml" == *"key_file = \"$deploy/$h/broker.key\""* ]] ||
    fail "$h/broker.toml: $toml"
  grep -q "^ExecStart=/usr/local/bin/ordo-broker --config $deploy/$h/broker.toml\$" \
    "$deploy/$h/ordo-broker.service" || fail "$h/ordo-broker.service: $(grep ExecStart "$deploy/$h/ordo-broker.service")"
done
for n in 1 2 3; do
  h=127.0.0.2$n
  "$build/ordo-broker" --config "$deploy/$h/broker.toml" >> "$deploy/$h/broker.log" 2>&1 < /dev/null &
  deploy_pids+=($!)
done
healthy=0
for _ in $(seq 300); do
  if "$build/ordo" health --brokers "$deploy_brokers" --credentials "$deploy/admin.key" \
      --request-timeout-ms 300 >/dev/null 2>&1; then healthy=1; break; fi
  sleep 0.1
done
((healthy)) || fail "the brokers from config never had a healthy cluster"
offsets=$(printf 'x\ny\n' | "$build/ordo" publish --brokers "$deploy_brokers" --credentials "$deploy/admin.key")
[[ "$offsets" == $'0\n1' ]] || fail "publish to the deployment printed: $offsets"
got=$(timeout 30 "$build/ordo" subscribe --brokers "127.0.0.23:$((port + 103))" \
  --credentials "$deploy/admin.key" --from earliest --count 2)
[[ "$got" == $'0\tx\n1\ty' ]] || fail "node 3 of the deployment serves: $got"
for n in 1 2 3; do
  grep -q "clients on 127.0.0.2$n:$((port + 100 + n)) (bound to 0.0.0.0:$((port + 100 + n)))" \
    "$deploy/127.0.0.2$n/broker.log" || fail "node $n's log does not say what it bound"
done
# Bound to 0.0.0.0, a broker still connects from the address it advertises.
if command -v ss >/dev/null; then
  from_both=0
  for _ in $(seq 100); do  # (a link being rebuilt at this moment is waited for)
    conns=$(ss -Htn state established "( dport = :$((port + 1)) )")
    if grep -q "127.0.0.22:" <<<"$conns" && grep -q "127.0.0.23:" <<<"$conns"; then from_both=1; break; fi
    sleep 0.1
  done
  ((from_both)) || fail "peer links to node 1 come from: $conns"
else
  echo "cluster script: ss is not installed: the peer links' source addresses were not checked"
fi
for pid in "${deploy_pids[@]}"; do kill -TERM "$pid"; done
for pid in "${deploy_pids[@]}"; do
  rc=0; wait "$pid" || rc=$?
  [[ $rc == 0 ]] || fail "a deployed broker exited $rc after SIGTERM"
done
deploy_pids=()
# The unit files, as systemd reads them (ExecStart pointed at this build's
# broker, which must exist for `verify`); any complaint fails.
units=$(mktemp -d)
for u in ordo-broker.service ordo-broker@.service; do
  [[ -f "$root/scripts/systemd/$u" ]] || fail "scripts/systemd/$u is missing"
done
if command -v systemd-analyze >/dev/null; then
  sed "s|/usr/local/bin/ordo-broker|$build/ordo-broker|" "$deploy/127.0.0.21/ordo-broker.service" \
    > "$units/ordo-broker.service"
  sed "s|/usr/local/bin/ordo-broker|$build/ordo-broker|" "$root/scripts/systemd/ordo-broker@.service" \
    > "$units/ordo-broker@node1.service"
  for u in ordo-broker.service ordo-broker@node1.service; do
    complaints=$(systemd-analyze verify "$units/$u" 2>&1) || fail "systemd-analyze verify $u: $complaints"
    [[ -z "$complaints" ]] || fail "systemd-analyze verify $u: $complaints"
  done
else
  echo "cluster script: systemd-analyze is not installed: the unit files were not verified"
fi
rm -rf "$units"
echo "cluster script: ok"
