#!/usr/bin/env bash
# Run one integration test file with pytest from the project's virtual environment (CTest calls
# this for every tests/integration/test_*.py). Extra arguments go to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$("$ROOT/scripts/venv.sh")
cd "$ROOT/tests/integration"
rc=0
"$VENV/bin/python" -m pytest -v -p no:cacheprovider -rfEs "$@" || rc=$?
# exit 5: no test was collected, which for a file that has tests is a failure, not a pass
[ "$rc" -eq 5 ] && echo "pytest.sh: no tests collected from $*" >&2
exit "$rc"
