#!/usr/bin/env bash
# Build copysink's container images without a Docker engine or an image registry: the Debian 13
# base comes from debootstrap and Debian's packages, the images from buildah (as root).
#
#   scripts/image.sh base           make the base image localhost/copysink-base:trixie (once)
#   scripts/image.sh build          build docker/Dockerfile on it: localhost/copysink:VERSION
#   scripts/image.sh test-image     build tests/matrix/Dockerfile on it: the Debian 13 image the
#                                   suite's compatibility stage runs the tests in
#   scripts/image.sh name [test]    print the shipped image's name (what the manifests use), or
#                                   with "test" the Debian 13 test image's
#   scripts/image.sh run ARGS...    podman run ARGS with the host's network and the settings
#                                   this machine needs (below)
#
# build and test-image make the base first when it is missing. COPYSINK_REBUILD_BASE=1 makes it
# again. Containers run with runc (crun cannot set the rlimits here) and with limits below the
# host's own: without CAP_SYS_RESOURCE the runtime cannot give a container podman's defaults.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE=localhost/copysink-base:trixie
MIRROR=${COPYSINK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
VERSION=$(sed -n 's/^project(copysink VERSION \([0-9.]*\).*/\1/p' "$ROOT/CMakeLists.txt")
IMAGE=localhost/copysink:$VERSION
TEST_IMAGE=localhost/copysink-test:trixie

die() { echo "image.sh: $*" >&2; exit 1; }

need() {
	local tool
	for tool in "$@"; do
		command -v "$tool" >/dev/null || die "$tool is missing (scripts/setup.sh installs it)"
	done
	[ "$(id -u)" -eq 0 ] || die "buildah, podman and debootstrap need root here"
}

# A minimal Debian 13 root file system, slimmed as Debian's own -slim images are (no
# documentation, manual pages or translations, now or from packages installed later).
make_base() {
	need debootstrap podman
	if [ "${COPYSINK_REBUILD_BASE:-0}" != 1 ] && podman image exists "$BASE"; then
		return 0
	fi
	local root
	root=$(mktemp -d /tmp/copysink-rootfs.XXXXXX)
	echo "image.sh: debootstrap trixie from $MIRROR" >&2
	debootstrap --variant=minbase trixie "$root" "$MIRROR" >"$root.log" 2>&1 ||
		{ tail -20 "$root.log" >&2; rm -rf "$root" "$root.log"; die "debootstrap failed"; }
	rm -f "$root.log"
	cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
	find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
	rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/lib/apt/lists/* \
		"$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
	find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
	# Java's packages fail to install without it (update-alternatives links a manual page there)
	mkdir -p "$root/usr/share/man/man1"
	tar -C "$root" -c . | podman import --quiet - "$BASE" >/dev/null
	rm -rf "$root"
	echo "image.sh: made $BASE ($(podman image inspect --format '{{.Size}}' "$BASE") bytes)" >&2
}

# bud FILE TAG: build FILE (relative to the repository) on the base, with the host's network.
bud() {
	need buildah
	make_base
	local log
	log=$(mktemp /tmp/copysink-bud.XXXXXX)
	if ! buildah bud --isolation chroot --network host --pull=never --layers \
		--build-arg BASE="$BASE" -f "$ROOT/$1" -t "$2" "$ROOT" >"$log" 2>&1; then
		tail -40 "$log" >&2
		rm -f "$log"
		die "buildah could not build $1"
	fi
	rm -f "$log"
	echo "image.sh: built $2 ($(podman image inspect --format '{{.Size}}' "$2") bytes)" >&2
}

case "${1:-}" in
base) make_base ;;
build) bud docker/Dockerfile "$IMAGE" ;;
test-image) bud tests/matrix/Dockerfile "$TEST_IMAGE" ;;
name) if [ "${2:-}" = test ]; then echo "$TEST_IMAGE"; else echo "$IMAGE"; fi ;;
run)
	shift
	exec podman --runtime runc run --network host --ulimit nofile=16384:16384 \
		--ulimit nproc=16384:16384 "$@" ;;
-h | --help | "")
	sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
	[ -n "${1:-}" ] ;;
*) die "unknown command \"$1\" (try --help)" ;;
esac
