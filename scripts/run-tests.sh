#!/bin/sh
# Runs Criterion test binaries, one after another, and prints a short summary.
# Counts come from Criterion's TAP reporter (--tap=FILE: one "ok"/"not ok" line per
# test, "# SKIP" on skips), not from its human-readable text. (Its --json reporter in
# 2.4 does not escape messages, so a quote in an assertion breaks the JSON.)
# Skipped tests are listed loudly: on machines with /dev/kvm nothing should skip.
# Exits 1 when any test fails or crashes, when a binary exits non-zero, or when its TAP
# has fewer results than its plan (a binary that died half-way).
set -u
# sanitizer builds: Criterion's own leak is not ember's (tests/lsan.supp)
LSAN_OPTIONS="suppressions=$(cd "$(dirname "$0")/.." && pwd)/tests/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export LSAN_OPTIONS
fail=0
skipped=""
tp=0 tf=0 ts=0
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for t in "$@"; do
	name=$(basename "$t")
	rm -f "$dir/tap"
	start=$(date +%s.%N)
	"$t" --jobs 2 --short-filename --tap="$dir/tap" >"$dir/log" 2>&1
	rc=$?
	end=$(date +%s.%N)
	[ -f "$dir/tap" ] || : >"$dir/tap"
	# "plan passed failed skipped" on the first line, then the lines worth showing
	awk '
	/^1\.\.[0-9]+$/ { plan = substr($0, 4) + 0; next }
	/^ok / && / # SKIP/ { s++; sub(/^ok - /, ""); sub(/  # SKIP /, ": "); show[++n] = "SKIP " $0; inblk = 0; next }
	/^ok / { p++; inblk = 0; next }
	/^not ok / { f++; sub(/^not ok - /, ""); show[++n] = "FAIL " $0; inblk = 1; next }
	inblk && /^  / && !/^  (---|\.\.\.|assertions:|failures:)/ { show[++n] = "  " $0; next }
	END {
		printf "%d %d %d %d\n", plan, p, f, s
		for (i = 1; i <= n && i <= 40; i++) print show[i]
	}' "$dir/tap" >"$dir/sum"
	read -r plan p f s <"$dir/sum"
	printf '== %s: %d passed, %d failed, %d skipped (%s s)\n' "$name" "$p" "$f" "$s" \
		"$(awk "BEGIN{printf \"%.2f\", $end - $start}")"
	tail -n +2 "$dir/sum" | sed 's/^/   /'
	[ "$s" -eq 0 ] || skipped="$skipped $name"
	tp=$((tp + p)) tf=$((tf + f)) ts=$((ts + s))
	bad=""
	[ "$rc" -eq 0 ] || bad="exit status $rc"
	[ "$f" -eq 0 ] || bad="${bad:+$bad, }$f failed"
	if [ "$plan" -eq 0 ] || [ $((p + f + s)) -ne "$plan" ]; then
		bad="${bad:+$bad, }$((p + f + s)) results for a plan of $plan tests"
	fi
	if [ -n "$bad" ]; then
		fail=1
		echo "   --- $name: $bad; its output (last 60 lines) ---"
		tail -n 60 "$dir/log" | sed 's/^/   | /'
	fi
done
echo
echo "tests: $tp passed, $tf failed, $ts skipped"
if [ -n "$skipped" ]; then
	echo "!!!!!!!! SKIPPED TESTS in:$skipped (see SKIP lines above) !!!!!!!!"
fi
if [ "$fail" -ne 0 ]; then
	echo "TESTS FAILED"
	exit 1
fi
echo "ALL TESTS PASSED"
