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
	# Criterion prints [SKIP] only with --verbose, which also prints a [RUN ] and a
	# [PASS] line per test: keep the log verbose and show only what matters.
	"$t" --jobs 2 --short-filename --verbose >"$log" 2>&1
	rc=$?
	end=$(date +%s.%N)
	grep -E '\[(SKIP|FAIL|WARN|----)\]|Synthesis|Assertion|ember: error' "$log" |
		grep -v '^\[----\] Criterion v' | sed 's/^/   /' | head -60
	if grep -q '\[SKIP\]' "$log"; then
		skipped="$skipped $name"
	fi
	printf '   (%s s, exit %d)\n' "$(awk "BEGIN{printf \"%.2f\", $end - $start}")" "$rc"
	if [ "$rc" -ne 0 ]; then
		fail=1
		echo "   --- full output of $name ---"
		grep -Ev '^\[(RUN |PASS)\]' "$log" | sed 's/^/   | /' | tail -80
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
