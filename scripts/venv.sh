#!/usr/bin/env bash
# Create (once) the Python virtual environment of the tests and benchmark in .cache/venv and
# print its path. Packages come from PyPI, pinned in scripts/requirements-test.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${COPYSINK_CACHE:-$ROOT/.cache}/venv
REQ=$ROOT/scripts/requirements-test.txt
if ! cmp -s "$REQ" "$VENV/.requirements" 2>/dev/null; then
	echo "venv.sh: installing the test packages into $VENV" >&2
	python3 -m venv "$VENV" >&2
	"$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ" >&2 ||
		{ echo "venv.sh: pip could not install $REQ" >&2; exit 1; }
	cp "$REQ" "$VENV/.requirements"
fi
echo "$VENV"
