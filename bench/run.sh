#!/usr/bin/env bash
# The copysink benchmark, in one command:
#   installs what is missing (scripts/setup.sh), builds copysink (Release) in build-bench,
#   starts PostgreSQL 15 (the host's, embedding real[]), PostgreSQL 16 with pgvector 0.6.2
#   (scripts/pgserver.sh, embedding vector(384)) and one Kafka broker of its own, runs
#   bench/bench.py on both servers and stops everything. Results: bench/results/
#   (results.json, results.md, the workers' logs in logs/<server>/; with --quick in
#   bench/results-quick/, which git ignores; --out DIR elsewhere).
#
#   bench/run.sh                       the full run: 200,000 entries, 5 paired rounds, phases
#                                      headline,writers,seed,peer,latency on each server
#   bench/run.sh --servers pg16        only PostgreSQL 16 + pgvector (pg15, pg16 or both)
#   bench/run.sh --quick --entries 20000
#                                      a development run (2 rounds, labelled quick)
#   bench/run.sh --phases headline,toast,batch,staging   any bench.py option (listed below)
# Ports: PostgreSQL 15 from 56432, PostgreSQL 16 from 56532, Kafka from 60092 (the next free
# ones; BENCH_PG15_PORT, BENCH_PG16_PORT, BENCH_KAFKA_PORT start the search elsewhere).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
	sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
	echo
	"$ROOT/scripts/setup.sh" >/dev/null
	VENV=$("$ROOT/scripts/venv.sh")
	exec "$VENV/bin/python" "$ROOT/bench/bench.py" --help
fi

SERVERS=pg15,pg16
ARGS=()
while [ $# -gt 0 ]; do
	case $1 in
	--servers) SERVERS=${2:?--servers needs pg15, pg16 or pg15,pg16}; shift 2 ;;
	--servers=*) SERVERS=${1#--servers=}; shift ;;
	*) ARGS+=("$1"); shift ;;
	esac
done
case ",$SERVERS," in
*,pg15,* | *,pg16,*) ;;
*) echo "run.sh: --servers $SERVERS: expected pg15, pg16 or pg15,pg16" >&2; exit 2 ;;
esac
for s in ${SERVERS//,/ }; do
	[ "$s" = pg15 ] || [ "$s" = pg16 ] || { echo "run.sh: unknown server $s" >&2; exit 2; }
done

"$ROOT/scripts/setup.sh"
VENV=$("$ROOT/scripts/venv.sh") # in COPYSINK_CACHE when set, as for the tests

echo "== build (Release) in build-bench" >&2
cmake -S "$ROOT" -B "$ROOT/build-bench" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$ROOT/build-bench" -j "$(nproc)" --target copysink copysink_rate_producer >/dev/null

WORK=$(mktemp -d /tmp/copysink-bench.XXXXXX)
chmod 755 "$WORK"
cleanup() {
	"$ROOT/scripts/kafka.sh" stop "$WORK/kafka" >/dev/null 2>&1 || true
	"$ROOT/scripts/pg.sh" stop "$WORK/pg15" >/dev/null 2>&1 || true
	"$ROOT/scripts/pg.sh" stop "$WORK/pg16" >/dev/null 2>&1 || true
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

conninfo() { echo "host=127.0.0.1 port=$1 user=postgres dbname=postgres"; }

PG=()
if [[ ",$SERVERS," == *,pg15,* ]]; then
	PORT15=$(free_port "${BENCH_PG15_PORT:-56432}")
	# the host's PostgreSQL (Debian 12: 15), whatever COPYSINK_PG_BIN says
	env -u COPYSINK_PG_BIN "$ROOT/scripts/pg.sh" start "$WORK/pg15" "$PORT15"
	PG+=(--pg "$(conninfo "$PORT15")")
fi
if [[ ",$SERVERS," == *,pg16,* ]]; then
	PORT16=$(free_port "${BENCH_PG16_PORT:-56532}")
	COPYSINK_PG_BIN=$("$ROOT/scripts/pgserver.sh") "$ROOT/scripts/pg.sh" start "$WORK/pg16" "$PORT16"
	PG+=(--pg16 "$(conninfo "$PORT16")")
fi
KAFKA_PORT=$(free_port "${BENCH_KAFKA_PORT:-60092}")
"$ROOT/scripts/kafka.sh" start "$WORK/kafka" "$KAFKA_PORT"

"$VENV/bin/python" "$ROOT/bench/bench.py" "${PG[@]}" \
	--kafka "127.0.0.1:$KAFKA_PORT" --kafka-pid-file "$WORK/kafka/kafka.pid" \
	--bin "$ROOT/build-bench/copysink" "${ARGS[@]}"
