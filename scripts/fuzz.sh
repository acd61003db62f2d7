#!/bin/sh
# Runs each libFuzzer target (FUZZ_JOBS at a time) (fuzz/) for FUZZ_TIME seconds, starting from its checked-in
# seeds (fuzz/corpus/T, never modified) plus what earlier runs found
# ($FUZZ_BUILD/corpus/T), and prints one line per target:
#   fuzz target=T execs=N exec_per_s=N cov=N ft=N corpus=N time_s=N result=ok|CRASH
# (cov: edges covered, ft: features, both as libFuzzer counts them). A crash leaves its
# input in $FUZZ_BUILD/artifacts/T/ and makes the exit status non-zero.
set -u
B=${FUZZ_BUILD:-build-fuzz}
T=${FUZZ_TIME:-60}
# run_one T: fuzzes T, writes its line to $B/fuzz-T.line; exit status 1 on a crash
run_one() {
	t=$1
	bin="$B/fuzz/fuzz_$t"
	work="$B/corpus/$t"
	art="$B/artifacts/$t/"
	log="$B/fuzz-$t.log"
	mkdir -p "$work" "$art"
	# -rss_limit_mb: the parsers' own caps must keep memory bounded; -timeout: no input
	# may take seconds
	"$bin" -max_total_time="$T" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
		-artifact_prefix="$art" "$work" "fuzz/corpus/$t" >"$log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
	last=$(grep -E '^#[0-9]+' "$log" | tail -1)
	cov=$(printf '%s\n' "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
	ft=$(printf '%s\n' "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
	corp=$(printf '%s\n' "$last" | sed -n 's/.* corp: \([0-9]*\).*/\1/p')
	result=ok
	[ "$rc" -ne 0 ] && result=CRASH
	printf 'fuzz target=%s execs=%s exec_per_s=%s cov=%s ft=%s corpus=%s time_s=%s result=%s\n' \
		"$t" "${execs:-0}" "${speed:-0}" "${cov:-0}" "${ft:-0}" "${corp:-0}" "$T" "$result" \
		>"$B/fuzz-$t.line"
	[ "$rc" -eq 0 ]
}

# FUZZ_JOBS targets at a time (default: one per CPU)
jobs=${FUZZ_JOBS:-$(nproc)}
fail=0
while [ $# -gt 0 ]; do
	batch=""
	pids=""
	i=0
	while [ $# -gt 0 ] && [ "$i" -lt "$jobs" ]; do
		run_one "$1" &
		pids="$pids $!"
		batch="$batch $1"
		shift
		i=$((i + 1))
	done
	for p in $pids; do
		wait "$p" || fail=1
	done
	for t in $batch; do
		cat "$B/fuzz-$t.line"
		if grep -q 'result=CRASH' "$B/fuzz-$t.line"; then
			echo "   --- $B/fuzz-$t.log (last lines) ---"
			tail -40 "$B/fuzz-$t.log" | sed 's/^/   | /'
		fi
	done
done
if [ "$fail" -ne 0 ]; then
	echo "FUZZING FOUND A CRASH (inputs under $B/artifacts/)"
	exit 1
fi
echo "fuzz: all targets ran clean"
