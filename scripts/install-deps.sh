#!/bin/sh
# Installs ember's build dependencies on Debian 12, only the ones that are missing.
# Idempotent and quiet when everything is present.
#
#   scripts/install-deps.sh         build and test (make, make test, make demo)
#   scripts/install-deps.sh bench   those and the bench's own: gnuplot-nox (plots)
#   scripts/install-deps.sh fuzz    those and clang with libFuzzer (make fuzz)
set -eu
# acpica-tools: iasl, which tests/unit/test_acpi runs on the ACPI tables; xz-utils: the
# Linux guest kit (make linux-guest, tests/integration/test_linux_kit) unpacks Debian's
# kernel; jq: the test runner's and bench's JSON checks and assembly
PKGS="build-essential pkg-config xz-utils liburing-dev libseccomp-dev liblz4-dev libmsgpack-dev libcriterion-dev acpica-tools jq"
case ${1:-} in
'') ;;
bench) PKGS="$PKGS gnuplot-nox" ;;
fuzz) PKGS="$PKGS clang libclang-rt-14-dev" ;;
*) echo "install-deps: unknown list '$1' (none, bench or fuzz)" >&2; exit 2 ;;
esac

missing=""
for p in $PKGS; do
	st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$st" in
	*" installed") ;;
	*) missing="$missing $p" ;;
	esac
done
[ -z "$missing" ] && exit 0

echo "install-deps: installing:$missing" >&2
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
		echo "install-deps: need root to apt-get install:$missing" >&2
		exit 1
	fi
else
	SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y --no-install-recommends $missing >/dev/null; then
	$SUDO apt-get update >/dev/null
	$SUDO apt-get install -y --no-install-recommends $missing >/dev/null
fi
