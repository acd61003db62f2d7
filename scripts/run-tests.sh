#!/bin/sh
# Runs Criterion test binaries, one after another, and prints a summary.
# Skipped tests are listed loudly: on machines with /dev/kvm nothing should skip.
set -u
fail=0
skipped=""
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "$@"; do
	name=$(basename "$t")
	printf '== %s\n' "$name"
	start=$(date +%s.%N)
	"$t" --jobs 2 --short-filename >"$log" 2>&1
	rc=$?
	end=$(date +%s.%N)
	grep -E '\[(SKIP|FAIL|----)\]|Synthesis|Assertion|ember: error' "$log" | sed 's/^/   /' | head -60
	if grep -q '\[SKIP\]' "$log"; then
		skipped="$skipped $name"
	fi
	printf '   (%s s, exit %d)\n' "$(awk "BEGIN{printf \"%.2f\", $end - $start}")" "$rc"
	if [ "$rc" -ne 0 ]; then
		fail=1
		echo "   --- full output of $name ---"
		sed 's/^/   | /' "$log" | tail -80
	fi
done
if [ -n "$skipped" ]; then
	echo
	echo "!!!!!!!! SKIPPED TESTS in:$skipped (see [SKIP] lines above) !!!!!!!!"
fi
if [ "$fail" -ne 0 ]; then
	echo "TESTS FAILED"
	exit 1
fi
echo "ALL TESTS PASSED"
