# Sourced by bench/run.sh: the pool section (bench/README.md, "pool").
#
# Invocations end to end, client -> response, 1 KiB payloads to the fn guest's mix
# function (the fn golden snapshot of section vsock):
#   - latency at concurrency 1, 2 and 8 through `ember pool` (size = concurrency + 1,
#     so that a VM's reset after its invocation is not what the next one waits for)
#     against a fresh `ember restore` per invocation, interleaved in rounds;
#   - throughput sustained with 2, 4 and 8 standby VMs (as many clients as VMs).
# Knobs: BENCH_POOL_N (invocations per pool cell, 2000), BENCH_POOL_FRESH_N (per fresh
# cell, 60), BENCH_POOL_ROUNDS (5), BENCH_POOL_TPUT_N (per throughput cell, 3000).

POOL_N=${BENCH_POOL_N:-2000}
POOL_FRESH_N=${BENCH_POOL_FRESH_N:-60}
POOL_ROUNDS=${BENCH_POOL_ROUNDS:-5}
POOL_TPUT_N=${BENCH_POOL_TPUT_N:-3000}
PL=$B/bench/pool_load

# Starts a pool of $1 VMs on the fn golden snapshot at $tmp/pool-$1.sock; waits until
# it answers a status request with every VM idle.
pool_up() {
	rm -f "$tmp/pool-$1.sock"
	"$EMBER" pool --snapshot "$tmp/fn-golden" --socket "$tmp/pool-$1.sock" --size "$1" \
		--max-uses 0 2>>"$tmp/pool-$1.err" &
	pool_pid=$!
	pu_n=0
	while [ "$pu_n" -lt 1000 ]; do
		if [ -S "$tmp/pool-$1.sock" ] &&
			"$EMBER" pool status --socket "$tmp/pool-$1.sock" 2>/dev/null |
			grep -q "^idle: $1\$"; then
			return 0
		fi
		sleep 0.02
		pu_n=$((pu_n + 1))
	done
	kill "$pool_pid" 2>/dev/null
	cat "$tmp/pool-$1.err" >&2
	echo "bench: pool of $1 VMs never became ready" >&2
	return 1
}

pool_down() {
	kill -TERM "$pool_pid" 2>/dev/null
	wait "$pool_pid" 2>/dev/null || true
}

# percentiles of a file of µs samples: "n p50 p90 p99 max"
pool_pcts() {
	sort -n "$1" | awk '{ s[NR] = $1 } END {
		if (NR == 0) { print "0 0 0 0 0"; exit }
		printf "%d %d %d %d %d\n", NR, s[int((NR * 50 + 99) / 100)], s[int((NR * 90 + 99) / 100)],
			s[int((NR * 99 + 99) / 100)], s[NR] }'
}

section_pool() {
	fn_golden
	g=$tmp/fn-golden
	rm -f "$tmp"/pool-lat-*
	echo
	echo "### pool: invocation end to end (client -> response), fn heap=64M mix, 1 KiB payload"
	echo
	echo "ember pool of concurrency+1 standby VMs against a fresh ember restore per invocation"
	echo "(spawn -> response; the process is stopped off the clock), $POOL_ROUNDS interleaved rounds."
	for c in 1 2 8; do
		size=$((c + 1))
		pool_up "$size" || return 1
		r=1
		while [ "$r" -le "$POOL_ROUNDS" ]; do
			"$PL" --pool "$tmp/pool-$size.sock" --n $((POOL_N / POOL_ROUNDS)) --concurrency "$c" \
				--samples "$tmp/pool-lat-pool-$c" >/dev/null ||
				{ pool_down; echo "bench: pool_load through the pool failed" >&2; return 1; }
			"$PL" --fresh "$g" --ember "$EMBER" --tmp "$tmp" --n $((POOL_FRESH_N / POOL_ROUNDS)) \
				--warmup 1 --concurrency "$c" --samples "$tmp/pool-lat-fresh-$c" >/dev/null ||
				{ pool_down; echo "bench: pool_load with fresh restores failed" >&2; return 1; }
			r=$((r + 1))
		done
		"$EMBER" pool status --socket "$tmp/pool-$size.sock" --json >"$tmp/pool-status-$c.json"
		pool_down
	done
	echo
	echo "| concurrency | path | n | p50 µs | p90 µs | p99 µs | max µs | fresh/pool p50 |"
	echo "|---|---|---|---|---|---|---|---|"
	for c in 1 2 8; do
		set -- $(pool_pcts "$tmp/pool-lat-pool-$c")
		pn=$1 pp50=$2 pp90=$3 pp99=$4 pmax=$5
		set -- $(pool_pcts "$tmp/pool-lat-fresh-$c")
		fn=$1 fp50=$2 fp90=$3 fp99=$4 fmax=$5
		ratio=$(awk -v a="$fp50" -v b="$pp50" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "-" }')
		echo "| $c | pool | $pn | $pp50 | $pp90 | $pp99 | $pmax | |"
		echo "| $c | fresh restore | $fn | $fp50 | $fp90 | $fp99 | $fmax | $ratio |"
		jq -n --arg c "c$c" --slurpfile st "$tmp/pool-status-$c.json" \
			--argjson pn "$pn" --argjson pp50 "$pp50" --argjson pp90 "$pp90" \
			--argjson pp99 "$pp99" --argjson pmax "$pmax" --argjson fn "$fn" \
			--argjson fp50 "$fp50" --argjson fp90 "$fp90" --argjson fp99 "$fp99" \
			--argjson fmax "$fmax" \
			'{($c): {pool: {n: $pn, p50_us: $pp50, p90_us: $pp90, p99_us: $pp99, max_us: $pmax},
			  fresh: {n: $fn, p50_us: $fp50, p90_us: $fp90, p99_us: $fp99, max_us: $fmax},
			  pool_status: $st[0]}}' >"$tmp/pool-lat-$c.json"
		if [ "$c" = 1 ]; then
			p1_50=$pp50
			p1_99=$pp99
		fi
	done

	echo
	echo "### pool: invocations per second sustained, N standby VMs, N clients, 1 KiB mix"
	echo
	echo "| standby VMs | invocations | inv/s | p50 µs | p99 µs |"
	echo "|---|---|---|---|---|"
	best=0
	for size in 2 4 8; do
		pool_up "$size" || return 1
		line=$("$PL" --pool "$tmp/pool-$size.sock" --n "$POOL_TPUT_N" --concurrency "$size") ||
			{ pool_down; echo "bench: pool_load throughput run failed" >&2; return 1; }
		pool_down
		ips=$(echo "$line" | sed 's/.*inv_per_s=\([0-9]*\).*/\1/')
		p50=$(echo "$line" | sed 's/.*p50_us=\([0-9]*\).*/\1/')
		p99=$(echo "$line" | sed 's/.*p99_us=\([0-9]*\).*/\1/')
		echo "| $size | $POOL_TPUT_N | $ips | $p50 | $p99 |"
		jq -n --arg s "$size" --argjson ips "$ips" --argjson p50 "$p50" --argjson p99 "$p99" \
			'{($s): {inv_per_s: $ips, p50_us: $p50, p99_us: $p99}}' >"$tmp/pool-tput-$size.json"
		if [ "$ips" -gt "$best" ]; then
			best=$ips
		fi
	done
	echo
	pool_target() { # name, met (0/1), measured
		if [ "$2" = 1 ]; then echo "- $1: met ($3)"; else echo "- $1: **MISSED** ($3)"; fi
	}
	pool_target "invoke end to end <= 1 ms p50 at concurrency 1, 1 KiB" \
		"$([ "$p1_50" -le 1000 ] && echo 1 || echo 0)" "p50 ${p1_50} µs"
	pool_target "invoke end to end <= 3 ms p99 at concurrency 1, 1 KiB" \
		"$([ "$p1_99" -le 3000 ] && echo 1 || echo 0)" "p99 ${p1_99} µs"
	pool_target ">= 1000 invocations/s on this machine ($(nproc) CPUs)" \
		"$([ "$best" -ge 1000 ] && echo 1 || echo 0)" "best ${best}/s"
	jq -s --argjson best "$best" \
		'{latency: (.[0] + .[1] + .[2]), throughput: (.[3] + .[4] + .[5]), best_inv_per_s: $best}' \
		"$tmp/pool-lat-1.json" "$tmp/pool-lat-2.json" "$tmp/pool-lat-8.json" \
		"$tmp/pool-tput-2.json" "$tmp/pool-tput-4.json" "$tmp/pool-tput-8.json" >"$tmp/pool.json"
}
