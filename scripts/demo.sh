#!/usr/bin/env bash
# A local demo of copysink, end to end, on a fresh Debian machine:
#   installs what is missing (scripts/setup.sh), builds copysink, starts PostgreSQL and a
#   single-node Kafka broker (KRaft) of its own, migrates, produces sample entries to the three
#   topics (with repeated keys and a few invalid entries), runs the worker until it has caught
#   up, and shows what landed in PostgreSQL, in the metrics and on the dead-letter topics.
#
#   scripts/demo.sh          run (again: each run adds entries; repeated keys update rows)
#   scripts/demo.sh stop     stop the demo's servers
#
# State lives in .cache/demo (COPYSINK_DEMO_DIR). Ports: PostgreSQL 55532, Kafka 59192 (+1 for
# its controller), metrics 9187 (COPYSINK_DEMO_PG_PORT, _KAFKA_PORT, _HTTP_PORT).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEMO=${COPYSINK_DEMO_DIR:-$ROOT/.cache/demo}
PG_PORT=${COPYSINK_DEMO_PG_PORT:-55532}
KAFKA_PORT=${COPYSINK_DEMO_KAFKA_PORT:-59192}
HTTP_PORT=${COPYSINK_DEMO_HTTP_PORT:-9187}
BIN=$ROOT/build/copysink
CONFIG=$DEMO/copysink.ini

if [ "${1:-}" = stop ]; then
	"$ROOT/scripts/kafka.sh" stop "$DEMO/kafka"
	"$ROOT/scripts/pg.sh" stop "$DEMO/pg"
	echo "demo: servers stopped (data kept in $DEMO; rm -rf it to start afresh)"
	exit 0
fi
[ $# -eq 0 ] || { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "dependencies"
"$ROOT/scripts/setup.sh"

step "build"
cmake -S "$ROOT" -B "$ROOT/build" >/dev/null
cmake --build "$ROOT/build" -j "$(nproc)" --target copysink >/dev/null
"$BIN" --version

step "PostgreSQL and Kafka"
mkdir -p "$DEMO"
chmod 755 "$DEMO"
"$ROOT/scripts/pg.sh" start "$DEMO/pg" "$PG_PORT"
if [ -f "$DEMO/kafka/port" ]; then KAFKA_PORT=$(cat "$DEMO/kafka/port"); fi
"$ROOT/scripts/kafka.sh" start "$DEMO/kafka" "$KAFKA_PORT"
ADMIN="host=127.0.0.1 port=$(cat "$DEMO/pg/port") user=postgres dbname=postgres"
psql -X -q "$ADMIN" -tAc "SELECT 1 FROM pg_database WHERE datname = 'copysink'" | grep -q 1 ||
	psql -X -q "$ADMIN" -c "CREATE DATABASE copysink"
DB="host=127.0.0.1 port=$(cat "$DEMO/pg/port") user=postgres dbname=copysink"

cat >"$CONFIG" <<INI
; written by scripts/demo.sh
[kafka]
bootstrap.servers = 127.0.0.1:$KAFKA_PORT
group.id = copysink-demo

[postgres]
conninfo = $DB

[batch]
max_rows = 10000
linger_ms = 200

[http]
listen = 127.0.0.1:$HTTP_PORT

[table memory_entries]
topic = memory.entries
on_conflict = update

[table patterns]
topic = memory.patterns
on_conflict = update

[table trajectories]
topic = memory.trajectories
on_conflict = skip
INI
echo "config: $CONFIG"

step "copysink migrate"
"$BIN" migrate -c "$CONFIG"

step "copysink produce (sample entries, with repeated keys and invalid ones)"
SEED=$(date +%s)
python3 "$ROOT/scripts/sample_entries.py" memory_entries 20000 --invalid 3 --seed "$SEED" |
	"$BIN" produce -c "$CONFIG" --table memory_entries -
python3 "$ROOT/scripts/sample_entries.py" patterns 5000 --invalid 2 --seed "$SEED" |
	"$BIN" produce -c "$CONFIG" --table patterns -
python3 "$ROOT/scripts/sample_entries.py" trajectories 10000 --invalid 1 --seed "$SEED" |
	"$BIN" produce -c "$CONFIG" --table trajectories -

step "copysink check"
"$BIN" check -c "$CONFIG"

step "copysink run (until caught up)"
"$BIN" run -c "$CONFIG" >"$DEMO/worker.log" 2>&1 &
WORKER=$!
trap 'kill -TERM $WORKER 2>/dev/null || true' EXIT
# caught up: every partition of the three topics assigned and at lag 0
python3 - "$HTTP_PORT" "$WORKER" <<'PY'
import os, re, sys, time, urllib.request
port, pid = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 300
while time.time() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("demo: the worker exited; see its log")
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        time.sleep(0.5)
        continue
    lags = [float(v) for v in re.findall(r'^copysink_partition_lag\{[^}]*\} (\S+)$', text, re.M)]
    if len(lags) >= 9 and all(l == 0 for l in lags):
        sys.exit(0)
    time.sleep(0.5)
sys.exit("demo: the worker did not catch up within 300 s")
PY
grep -E 'msg="batch committed"' "$DEMO/worker.log" | tail -3 || true

step "what landed in PostgreSQL"
psql -X "$DB" -c "SELECT 'memory_entries' AS table_name, count(*) AS rows, max(updated_at) AS last_update FROM memory_entries
 UNION ALL SELECT 'patterns', count(*), max(updated_at) FROM patterns
 UNION ALL SELECT 'trajectories', count(*), max(updated_at) FROM trajectories"
psql -X "$DB" -c "SELECT namespace, key, left(value, 40) AS value, array_length(embedding, 1) AS dim, metadata, tags FROM memory_entries ORDER BY updated_at DESC, key LIMIT 5"
psql -X "$DB" -c "SELECT topic, partition, next_offset FROM copysink_offsets ORDER BY topic, partition"

step "metrics (rows written, dead letters by reason)"
curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | grep -E '^copysink_(rows_written|dead_letters)_total' || true

step "stopping the worker (SIGTERM: drain, commit, leave the group)"
kill -TERM "$WORKER"
wait "$WORKER" && echo "worker exited 0"
trap - EXIT
echo
echo "demo: done. Worker log: $DEMO/worker.log. The servers keep running: scripts/demo.sh stop"
