#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this with no arguments):
#   1. install what is missing (scripts/setup.sh)
#   2. build with warnings as errors; unit tests
#   3. start a PostgreSQL cluster and a Kafka broker of its own; integration tests (C and Python,
#      including the reliability and chaos tests)
#   4. the shipped image: built from docker/Dockerfile on a Debian 13 base (scripts/image.sh)
#      and run against those servers (tests/integration/test_image.py)
#   5. the compatibility matrix: the "matrix" tests against PostgreSQL 16 with pgvector 0.6.2
#      (PyPI's pgserver), then the build, the unit tests and the "matrix" tests inside a Debian 13
#      container (librdkafka 2.8.0, PostgreSQL 17 with pgvector 0.8.0)
#   6. the same unit and integration tests in an ASan + UBSan build
#   7. the libFuzzer decoder target on the seed corpus, for COPYSINK_FUZZ_SECONDS (default 120)
# Servers and temporary files are removed at the end, whatever happens.
#
#   scripts/test.sh                 everything
#   scripts/test.sh -R REGEX        only the CTest tests matching REGEX, normal build only
#   scripts/test.sh --no-containers skip step 4 and the Debian 13 part of step 5
#   scripts/test.sh --no-matrix     skip step 5     --no-sanitize   skip step 6
#   scripts/test.sh --no-fuzz       skip step 7
#   scripts/test.sh --matrix-only   steps 1-2 and the "matrix" tests (what step 5 runs in the
#                                   Debian 13 container); --build-dir DIR builds in DIR
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

SANITIZE=1 FUZZ=1 CONTAINERS=1 MATRIX=1 MATRIX_ONLY=0 FILTER=() BUILD=$ROOT/build
while [ $# -gt 0 ]; do
	case "$1" in
	--no-sanitize) SANITIZE=0 ;;
	--no-fuzz) FUZZ=0 ;;
	--no-containers) CONTAINERS=0 ;;
	--no-matrix) MATRIX=0 ;;
	--matrix-only) MATRIX_ONLY=1 SANITIZE=0 FUZZ=0 CONTAINERS=0 MATRIX=0 ;;
	--build-dir) BUILD=$(realpath -m "$2"); shift ;;
	-R) FILTER=(-R "$2"); SANITIZE=0; FUZZ=0; CONTAINERS=0; MATRIX=0; shift ;;
	-h | --help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "test.sh: unknown argument \"$1\" (try --help)" >&2; exit 2 ;;
	esac
	shift
done

PASSED=0 FAILED=0 STAGES_FAILED=() STAGE_TIMES=()
WORK=$(mktemp -d /tmp/copysink-test.XXXXXX)
chmod 755 "$WORK"

cleanup() {
	"$ROOT/scripts/kafka.sh" stop "$WORK/kafka" >/dev/null 2>&1 || true
	"$ROOT/scripts/pg.sh" stop "$WORK/pg" >/dev/null 2>&1 || true
	"$ROOT/scripts/pg.sh" stop "$WORK/pg16" >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free TCP port on loopback, starting from $1; a broker takes the next one too.
free_port() {
	local p=$1
	while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null ||
		(exec 3<>"/dev/tcp/127.0.0.1/$((p + 1))") 2>/dev/null; do
		p=$((p + 2))
	done
	echo "$p"
}

# timed NAME CMD...: run CMD and remember how long it took, for the summary.
timed() {
	local name=$1 start=$SECONDS rc=0
	shift
	"$@" || rc=$?
	STAGE_TIMES+=("$name $((SECONDS - start))s")
	return "$rc"
}

# ctest_stage NAME BUILD_DIR ARGS...: run ctest and add its counts to the totals.
ctest_stage() {
	local name=$1 dir=$2 out rc=0
	shift 2
	echo "== $name" >&2
	out=$WORK/ctest-$name.log
	ctest --test-dir "$dir" --output-on-failure --no-tests=error "$@" 2>&1 | tee "$out" || rc=$?
	local line total failed
	line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$out" | tail -1 || true)
	if [ -z "$line" ]; then
		FAILED=$((FAILED + 1)); STAGES_FAILED+=("$name (no tests ran)"); return
	fi
	failed=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
	total=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
	PASSED=$((PASSED + total - failed)); FAILED=$((FAILED + failed))
	[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ] || STAGES_FAILED+=("$name")
}

build() {
	local dir=$1
	shift
	echo "== build $dir" >&2
	# the same build step as the image's (docker/Dockerfile)
	"$ROOT/scripts/build.sh" "$dir" "$@" >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; return 1; }
}

timed setup "$ROOT/scripts/setup.sh"
timed venv "$ROOT/scripts/venv.sh" >/dev/null

# count_result NAME LOG: add the counts of a test.sh run (its last line) to the totals
count_result() {
	local name=$1 line
	line=$(grep -E '^test.sh: [0-9]+ passed, [0-9]+ failed$' "$2" | tail -1 || true)
	if [ -z "$line" ]; then
		FAILED=$((FAILED + 1)); STAGES_FAILED+=("$name (no result)"); return
	fi
	read -r _ p _ f _ <<<"$line"
	PASSED=$((PASSED + p)); FAILED=$((FAILED + f))
	[ "$f" -eq 0 ] || STAGES_FAILED+=("$name")
}

# The build, the unit tests and the "matrix" tests inside the Debian 13 image (its own
# PostgreSQL 17 with pgvector and Kafka broker, started by test.sh --matrix-only in there; with
# create_extension = on every test's migrate makes vector columns, as on PostgreSQL 16). The
# repository and the cache are mounted at their own paths; the container's Python packages go
# to a cache of its own, the broker's jars are shared (hard links).
debian13() {
	local cache=${COPYSINK_CACHE:-$ROOT/.cache} log=$WORK/debian13.log kafka CA=()
	# the host's certificate authorities, for PyPI through a TLS-inspecting proxy
	[ -f /etc/ssl/certs/ca-certificates.crt ] &&
		CA=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro
		    -e PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
	mkdir -p "$cache/debian13"
	for kafka in "$cache"/kafka-*; do
		[ -e "$cache/debian13/${kafka##*/}" ] || cp -al "$kafka" "$cache/debian13/"
	done
	echo "== debian13 (inside $("$ROOT/scripts/image.sh" name test))" >&2
	"$ROOT/scripts/image.sh" run --rm -v "$ROOT:$ROOT" -v "$cache:$cache" -w "$ROOT" \
		-e COPYSINK_CACHE="$cache/debian13" -e COPYSINK_TEST_PGVECTOR=required \
		-e COPYSINK_POSTGRES_CREATE_EXTENSION=on "${CA[@]}" \
		"$("$ROOT/scripts/image.sh" name test)" \
		scripts/test.sh --matrix-only --build-dir "$ROOT/build-debian13" 2>&1 | tee "$log" || true
	count_result debian13 "$log"
}

timed build build "$BUILD"
timed unit ctest_stage unit "$BUILD" -L unit "${FILTER[@]}"

# below Linux's ephemeral range (32768-60999): a port there can be taken by any outgoing
# connection between the check and the server's bind (a broker exited during start-up so, with
# two suites running side by side)
PG_PORT=$(free_port 25432)
"$ROOT/scripts/pg.sh" start "$WORK/pg" "$PG_PORT"
KAFKA_PORT=$(free_port 29092)
"$ROOT/scripts/kafka.sh" start "$WORK/kafka" "$KAFKA_PORT"
export COPYSINK_TEST_PG_CONNINFO="host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres"
export COPYSINK_TEST_KAFKA="127.0.0.1:$KAFKA_PORT"
export COPYSINK_TEST_PG_DIR=$WORK/pg
export COPYSINK_TEST_KAFKA_DIR=$WORK/kafka

if [ "$MATRIX_ONLY" -eq 1 ]; then
	timed matrix ctest_stage matrix "$BUILD" -L matrix
else
	timed integration ctest_stage integration "$BUILD" -L integration "${FILTER[@]}"
fi

if [ "$CONTAINERS" -eq 1 ]; then
	if timed image-build "$ROOT/scripts/image.sh" build; then
		COPYSINK_TEST_IMAGE=$("$ROOT/scripts/image.sh" name) timed image ctest_stage image "$BUILD" -L image
	else
		FAILED=$((FAILED + 1)); STAGES_FAILED+=("image build")
	fi
fi

if [ "$MATRIX" -eq 1 ]; then
	# PostgreSQL 16 with pgvector 0.6.2 (PyPI's pgserver), with the same broker and build
	PG16_PORT=$(free_port 25432)
	if PG16_BIN=$("$ROOT/scripts/pgserver.sh") &&
		COPYSINK_PG_BIN=$PG16_BIN "$ROOT/scripts/pg.sh" start "$WORK/pg16" "$PG16_PORT"; then
		COPYSINK_TEST_PG_CONNINFO="host=127.0.0.1 port=$PG16_PORT user=postgres dbname=postgres" \
		COPYSINK_TEST_PG_DIR=$WORK/pg16 COPYSINK_TEST_PGVECTOR=required \
		COPYSINK_POSTGRES_CREATE_EXTENSION=on \
			timed pg16 ctest_stage pg16 "$BUILD" -L matrix
		"$ROOT/scripts/pg.sh" stop "$WORK/pg16"
	else
		FAILED=$((FAILED + 1)); STAGES_FAILED+=("pg16 set-up")
	fi
	if [ "$CONTAINERS" -eq 1 ]; then
		if timed debian13-image "$ROOT/scripts/image.sh" test-image; then
			timed debian13 debian13
		else
			FAILED=$((FAILED + 1)); STAGES_FAILED+=("debian13 image build")
		fi
	fi
fi

if [ "$SANITIZE" -eq 1 ]; then
	# leaks are reported too (LeakSanitizer is part of ASan on Linux)
	export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
	export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
	if timed asan-build build "$ROOT/build-asan" -DCOPYSINK_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug; then
		# every test but the image's and the peak-RSS one (ASan's shadow memory counts there)
		timed asan ctest_stage asan "$ROOT/build-asan" -LE 'image|rss'
	else
		FAILED=$((FAILED + 1)); STAGES_FAILED+=("asan build")
	fi
	unset ASAN_OPTIONS UBSAN_OPTIONS
fi

if [ "$FUZZ" -eq 1 ]; then
	SECONDS_FUZZ=${COPYSINK_FUZZ_SECONDS:-120}
	echo "== fuzz fuzz_decode for ${SECONDS_FUZZ}s" >&2
	if CC=clang timed fuzz-build build "$ROOT/build-fuzz" -DCOPYSINK_FUZZ=ON -DCOPYSINK_SANITIZE=ON; then
		mkdir -p "$WORK/corpus"
		FUZZ_START=$SECONDS
		if (cd "$WORK" && "$ROOT/build-fuzz/fuzz_decode" -max_total_time="$SECONDS_FUZZ" \
			-max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
			"$WORK/corpus" "$ROOT/tests/fuzz/corpus" 2>&1 | tail -25); then
			PASSED=$((PASSED + 1))
		else
			FAILED=$((FAILED + 1)); STAGES_FAILED+=("fuzz")
		fi
		STAGE_TIMES+=("fuzz $((SECONDS - FUZZ_START))s")
	else
		FAILED=$((FAILED + 1)); STAGES_FAILED+=("fuzz build")
	fi
fi

echo "test.sh: stage times: ${STAGE_TIMES[*]} (total ${SECONDS}s)"
if [ ${#STAGES_FAILED[@]} -gt 0 ]; then
	echo "test.sh: failed: ${STAGES_FAILED[*]}" >&2
fi
echo "test.sh: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
