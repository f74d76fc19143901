#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for tests, demos and benchmarks, from Debian's server packages
# (the newest installed) or from the bin directory in COPYSINK_PG_BIN (scripts/pgserver.sh).
#
#   scripts/pg.sh start DIR [PORT]      initdb DIR (first time) and start on 127.0.0.1:PORT
#   scripts/pg.sh stop DIR              fast shutdown
#   scripts/pg.sh restart-immediate DIR immediate shutdown (as in a crash), then start again
#   scripts/pg.sh conninfo DIR          print the superuser conninfo of the cluster
#
# The port and the server's bin directory are remembered in DIR/port and DIR/bin, so later
# commands need only DIR and run the cluster with the binaries that made it. The superuser is
# "postgres" with trust authentication on loopback: the cluster is for local use only.
# As root, the server runs as the "postgres" account that the Debian packages create.
set -euo pipefail

die() { echo "pg.sh: $*" >&2; exit 1; }

# The bin directory for the cluster in $DIR: the one that made it (only its own major version
# can run it, whatever COPYSINK_PG_BIN says now), else COPYSINK_PG_BIN, else Debian's newest.
pg_bin() {
	local dir recorded
	recorded=$(cat "$DIR/bin" 2>/dev/null) || recorded=
	if [ -n "$recorded" ] && [ -f "$DIR/data/PG_VERSION" ]; then
		echo "$recorded"
		return 0
	fi
	if [ -n "${COPYSINK_PG_BIN:-}" ]; then
		[ -x "$COPYSINK_PG_BIN/pg_ctl" ] || die "COPYSINK_PG_BIN=$COPYSINK_PG_BIN has no pg_ctl"
		echo "$COPYSINK_PG_BIN"
		return 0
	fi
	for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
		[ -x "$dir/pg_ctl" ] && { echo "$dir"; return 0; }
	done
	die "no PostgreSQL server found (install Debian's postgresql package, or set COPYSINK_PG_BIN)"
}

as_owner() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
	mkdir -p "$DIR"
	DIR=$(cd "$DIR" && pwd)
	BIN=$(pg_bin)
	# a server outside Debian's packages may sit under a folder the account cannot enter
	as_owner test -x "$BIN/postgres" ||
		die "the postgres account cannot run $BIN/postgres (a parent folder not open to it?)"
	if [ -n "${PORT:-}" ]; then
		echo "$PORT" >"$DIR/port"
	else
		PORT=$(cat "$DIR/port" 2>/dev/null) || die "no port given and none recorded in $DIR"
	fi
	[ "$(id -u)" -eq 0 ] && chown postgres: "$DIR"
	if [ ! -f "$DIR/data/PG_VERSION" ]; then
		as_owner "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 --locale=C \
			>"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; die "initdb failed in $DIR/data"; }
		echo "$BIN" >"$DIR/bin"
		mkdir -p "$DIR/sock"
		[ "$(id -u)" -eq 0 ] && chown postgres: "$DIR/sock"
		cat >>"$DIR/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR/sock'
max_connections = 200
shared_buffers = 256MB
fsync = ${COPYSINK_PG_FSYNC:-on}
logging_collector = off
log_min_messages = warning
CONF
	fi
	if as_owner "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
		return 0
	fi
	port_open "$PORT" && die "port $PORT is already in use"
	as_owner "$BIN/pg_ctl" -D "$DIR/data" -o "-p $PORT" -l "$DIR/server.log" -w -t 60 start \
		>/dev/null || { tail -20 "$DIR/server.log" >&2; die "the server did not start (log: $DIR/server.log)"; }
	echo "pg.sh: PostgreSQL up on 127.0.0.1:$PORT (data in $DIR/data)" >&2
}

stop() {
	[ -f "$DIR/data/PG_VERSION" ] || return 0
	BIN=$(pg_bin)
	as_owner "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1 || return 0
	as_owner "$BIN/pg_ctl" -D "$DIR/data" -m "$1" -w -t 60 stop >/dev/null
}

cmd=${1:-}
case "$cmd" in
start)
	[ $# -ge 2 ] && [ $# -le 3 ] || die "usage: pg.sh start DIR [PORT]"
	DIR=$2 PORT=${3:-} start ;;
stop)
	[ $# -eq 2 ] || die "usage: pg.sh stop DIR"
	DIR=$2 stop fast ;;
restart-immediate)
	[ $# -eq 2 ] || die "usage: pg.sh restart-immediate DIR"
	DIR=$2
	stop immediate
	PORT= start ;;
conninfo)
	[ $# -eq 2 ] || die "usage: pg.sh conninfo DIR"
	echo "host=127.0.0.1 port=$(cat "$2/port") user=postgres dbname=postgres" ;;
-h | --help | "")
	sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
	[ -n "$cmd" ] ;;
*) die "unknown command \"$cmd\" (try --help)" ;;
esac
