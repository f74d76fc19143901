#!/usr/bin/env bash
# The copysink benchmark, in one command:
#   installs what is missing (scripts/setup.sh), builds copysink (Release) in build-bench,
#   starts a PostgreSQL cluster and a Kafka broker of its own, runs bench/bench.py and stops
#   the servers. Results: bench/results/ (results.json, results.md, batch_size.dat/.png and the
#   worker's logs).
#
#   bench/run.sh                       the full run (200,000 entries, then the latency mode)
#   bench/run.sh --entries 20000       any bench.py option (bench/run.sh --help lists them)
#   bench/run.sh --staging-only --entries 50000 --staging-rounds 5
#                                      only staging = session against transaction (paired)
# Ports: PostgreSQL from 56432, Kafka from 60092 (the next free ones).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
	sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
	echo
	"$ROOT/scripts/setup.sh" >/dev/null
	VENV=$("$ROOT/scripts/venv.sh")
	exec "$VENV/bin/python" "$ROOT/bench/bench.py" --help
fi

"$ROOT/scripts/setup.sh"
VENV=$("$ROOT/scripts/venv.sh") # in COPYSINK_CACHE when set, as for the tests

echo "== build (Release) in build-bench" >&2
cmake -S "$ROOT" -B "$ROOT/build-bench" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$ROOT/build-bench" -j "$(nproc)" --target copysink copysink_rate_producer >/dev/null

WORK=$(mktemp -d /tmp/copysink-bench.XXXXXX)
chmod 755 "$WORK"
cleanup() {
	"$ROOT/scripts/kafka.sh" stop "$WORK/kafka" >/dev/null 2>&1 || true
	"$ROOT/scripts/pg.sh" stop "$WORK/pg" >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
	local p=$1
	while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null ||
		(exec 3<>"/dev/tcp/127.0.0.1/$((p + 1))") 2>/dev/null; do
		p=$((p + 2))
	done
	echo "$p"
}

PG_PORT=$(free_port 56432)
"$ROOT/scripts/pg.sh" start "$WORK/pg" "$PG_PORT"
KAFKA_PORT=$(free_port 60092)
"$ROOT/scripts/kafka.sh" start "$WORK/kafka" "$KAFKA_PORT"

"$VENV/bin/python" "$ROOT/bench/bench.py" \
	--pg "host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres" \
	--kafka "127.0.0.1:$KAFKA_PORT" --bin "$ROOT/build-bench/copysink" \
	--out "$ROOT/bench/results" "$@"
