#!/bin/sh
# Fetches Debian's cloud kernel, a real bzImage whose payload is LZ4 (legacy frame),
# so the loader can be tested against the thing it must boot. Cached after the
# first run.
#
#   scripts/fetch-debian-kernel.sh [CACHE_DIR]     (default: build/debian-kernel)
#
# Prints the absolute path of the extracted vmlinuz on stdout. Exits 77 (the
# test-suite SKIP status) with a loud message on stderr when the kernel cannot be
# downloaded (no network, no apt, unknown package).
set -u
dir=${1:-build/debian-kernel}

skip() {
	echo "SKIP: fetch-debian-kernel: $*" >&2
	echo "SKIP: kernel-dependent loader tests will not run" >&2
	exit 77
}

mkdir -p "$dir" || skip "cannot create cache directory $dir"
dir=$(cd "$dir" && pwd) || skip "cannot enter cache directory $dir"

for f in "$dir"/vmlinuz-*; do
	if [ -s "$f" ]; then
		echo "$f"
		exit 0
	fi
done

command -v apt-get >/dev/null 2>&1 || skip "apt-get not found (not a Debian system?)"
command -v dpkg-deb >/dev/null 2>&1 || skip "dpkg-deb not found"

# The metapackage only depends on the versioned image package, which holds vmlinuz.
pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
	sed -n 's/^ *|\{0,1\}Depends: \(linux-image-[^ ]*-cloud-amd64\)$/\1/p' | head -n 1)
[ -n "$pkg" ] || skip "apt-cache knows no linux-image-cloud-amd64 dependency (apt-get update needed?)"

tmp=$(mktemp -d "$dir/download.XXXXXX") || skip "mktemp failed in $dir"
trap 'rm -rf "$tmp"' EXIT
# apt-get download writes into the current directory.
if ! (cd "$tmp" && apt-get -o Acquire::Retries=0 -o Acquire::http::Timeout=20 download "$pkg") >"$tmp/log" 2>&1; then
	skip "apt-get download $pkg failed: $(grep -v '^W:' "$tmp/log" | tail -n 1)"
fi
deb=$(ls "$tmp"/*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || skip "apt-get download $pkg produced no .deb"
mkdir "$tmp/x" || skip "mkdir failed"
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp/x" --wildcards './boot/vmlinuz-*' ||
	skip "no boot/vmlinuz-* in $deb"
for f in "$tmp"/x/boot/vmlinuz-*; do
	[ -s "$f" ] || skip "empty vmlinuz in $deb"
	mv "$f" "$dir/" || skip "cannot move vmlinuz into $dir"
	echo "$dir/$(basename "$f")"
	exit 0
done
skip "no vmlinuz in $deb"
