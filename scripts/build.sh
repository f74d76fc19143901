#!/usr/bin/env bash
# Configure and build copysink with warnings as errors: the one build step that the test suite
# (scripts/test.sh) and the image (docker/Dockerfile) share.
#
#   scripts/build.sh DIR [CMAKE ARGUMENTS ...]     e.g. scripts/build.sh build -DCMAKE_BUILD_TYPE=Release
#
# The compiler comes from CC as usual (the fuzz build uses CC=clang).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] || { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
DIR=$1
shift
cmake -S "$ROOT" -B "$DIR" -DCOPYSINK_WERROR=ON "$@" >/dev/null
cmake --build "$DIR" -j "$(nproc)"
