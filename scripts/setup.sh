#!/usr/bin/env bash
# Install everything copysink needs to build, test, benchmark and run its demo on a Debian 12
# (bookworm) or 13 (trixie) machine: the packages below (apt), the pinned Kafka broker jars (Maven
# Central) and the Python test packages (PyPI). Safe to run again: it installs only what is
# missing.
#
#   scripts/setup.sh                   everything
#   scripts/setup.sh --packages-only   the Debian packages only (tests/matrix/Dockerfile)
#
# promtool (package prometheus) checks the alert rules; Node.js and npm run the Node.js
# producer example; buildah, podman, runc and debootstrap build and run the images.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "setup.sh: $*" >&2; exit 1; }

PACKAGES_ONLY=0
case "${1:-}" in
--packages-only) PACKAGES_ONLY=1 ;;
"") ;;
*) die "unknown argument \"$1\" (try: scripts/setup.sh [--packages-only])" ;;
esac

# shellcheck source=/dev/null
. /etc/os-release
case "${VERSION_CODENAME:-}" in
bookworm)
	# the suite's host: it also builds and runs the Debian 13 images (scripts/image.sh), checks
	# the alert rules and runs the Node.js example
	RELEASE=(libmsgpack-dev libclang-rt-14-dev buildah podman runc debootstrap
		prometheus pgbouncer nodejs npm) ;;
trixie)
	# what the suite runs in its Debian 13 container (build, unit and "matrix" tests): msgpack-c
	# 6 renamed its package; PostgreSQL 17 with pgvector; PgBouncer for the pooling test
	RELEASE=(libmsgpack-c-dev libclang-rt-dev postgresql-17-pgvector pgbouncer) ;;
*) die "Debian 12 (bookworm) or 13 (trixie) expected, this is ${PRETTY_NAME:-unknown}" ;;
esac

PACKAGES=(
	build-essential cmake pkg-config
	libpq-dev librdkafka-dev libinih-dev libjansson-dev libmicrohttpd-dev
	libcmocka-dev clang
	postgresql postgresql-client
	maven default-jre-headless python3-venv
	gnuplot-nox curl
	"${RELEASE[@]}"
)

missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# java and python3 may come from outside Debian (a JDK or pyenv already on the machine)
if command -v java >/dev/null; then
	missing=("${missing[@]/default-jre-headless/}")
fi
if python3 -c 'import venv, ensurepip' 2>/dev/null; then
	missing=("${missing[@]/python3-venv/}")
fi
# so may node and npm (NodeSource's nodejs, which brings npm and conflicts with Debian's, or nvm)
if command -v node >/dev/null; then
	missing=("${missing[@]/nodejs/}")
fi
if command -v npm >/dev/null; then
	missing=("${missing[@]/npm/}")
fi
read -r -a missing <<<"${missing[*]}"
if [ ${#missing[@]} -gt 0 ]; then
	SUDO=
	[ "$(id -u)" -ne 0 ] && SUDO=sudo
	echo "setup.sh: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq >&2
	$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
	# Debian's postgresql package starts a cluster of its own on 5432 (and its prometheus and
	# pgbouncer packages their own servers where systemd runs); copysink's scripts run their own
	# and do not need them
fi
[ "$PACKAGES_ONLY" -eq 1 ] && exit 0
"$ROOT/scripts/kafka.sh" fetch
"$ROOT/scripts/venv.sh" >/dev/null
echo "setup.sh: all dependencies present" >&2
