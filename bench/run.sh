#!/bin/sh
# make bench: ember's start-latency suite. Prints markdown tables and writes every
# number (with the raw samples) to bench/results/<date>.json (assembled with jq; with
# the commit, ember version, CPU model, kernel and date), every series to <date>.csv,
# plots to <date>-plots/*.svg (gnuplot), and after a run of every section
# bench/RESULTS.md and bench/plots/ (bench/results.sh). See bench/README.md.
#
# Exit status: 1 when a target is MISSED (every "- TARGET: ok|met|**MISSED**|not
# measured (DETAIL)" line a section prints is collected into the results' "targets"),
# unless BENCH_ALLOW_MISSED=1; 1 on any failure; 0 otherwise.
#
#   bench/run.sh                            all sections
#   BENCH_SECTIONS="restore" bench/run.sh   only some (boot rss restore snapshot memory
#                                           vsock idle standby reset standby_mem pool qemu)
#   BENCH_RUNS=10 bench/run.sh              runs per command in every section (defaults:
#                                           boot 100, restore 50, snapshot 10, memory 20)
#   BENCH_HEAPS="64" bench/run.sh           sandbox heap sizes in MiB (default 16 64 256)
#   BENCH_SNAP_RUNS=5 bench/run.sh          snapshot runs only
#   BENCH_WS="32" bench/run.sh              memory section: working sets in MiB (4 32 128)
#   BENCH_MEM_RUNS=5 bench/run.sh           memory section runs only
#   BENCH_VSOCK_N=500 bench/run.sh          vsock section: 64-byte round trips (2000)
#   BENCH_IDLE_CLONES=20 bench/run.sh       idle section: parked clones (100)
#   BENCH_POOL_N=500 bench/run.sh           pool section: invocations per pool cell (2000;
#                                           more knobs in bench/pool.sh)
#   BENCH_QEMU_RUNS=20 bench/run.sh         qemu section: restore runs (BENCH_RUNS, else 50);
#                                           bench/qemu_peer.sh lists its other knobs
#   BENCH_WARM_RUNS=10 bench/run.sh         standby, reset: runs (100, 30; bench/warm.sh)
#   BENCH_STANDBY_VMS=50 bench/run.sh       standby_mem: VMs at once (200)
#   BENCH_ALLOW_MISSED=1 bench/run.sh       exit 0 even when a target is missed
#   BENCH_RESULTS_DIR=DIR bench/run.sh      where the JSON, CSV and plots go (bench/results)
#   BENCH_RESULTS_MD=FILE bench/run.sh      write RESULTS.md (plots in its plots/) after any
#                                           run, not only a full one (bench/RESULTS.md)
#
# A section is a shell function section_NAME that writes "$tmp/NAME.json"; add one and
# list it in SECTIONS below.
set -eu
B=${EMBER_BUILD:-build}
RUNS=${BENCH_RUNS:-100}
RESTORE_RUNS=${BENCH_RUNS:-50}
SNAP_RUNS=${BENCH_SNAP_RUNS:-${BENCH_RUNS:-10}}
[ "$SNAP_RUNS" -le 10 ] || SNAP_RUNS=10 # each one writes the snapshot 3 ways; 10 is plenty
HEAPS=${BENCH_HEAPS:-"16 64 256"}
SEED=1
MEM_RUNS=${BENCH_MEM_RUNS:-${BENCH_RUNS:-20}}
MEM_WS=${BENCH_WS:-"4 32 128"}
MEM_HEAP=${BENCH_MEM_HEAP:-256}
MEM_TARGET_WS=32 # the issue's targets are stated at ws = 32 MiB
VSOCK_N=${BENCH_VSOCK_N:-2000}
IDLE_CLONES=${BENCH_IDLE_CLONES:-100}
IDLE_WINDOW=${BENCH_IDLE_WINDOW:-10}
ALL_SECTIONS="boot rss restore snapshot memory vsock idle standby reset standby_mem pool qemu"
SECTIONS=${BENCH_SECTIONS:-$ALL_SECTIONS}
H=$B/bench/harness
EMBER=$B/ember
GUESTS=$B/guests
RESULTS=${BENCH_RESULTS_DIR:-bench/results}
RESULTS_MD=${BENCH_RESULTS_MD:-}
if [ -z "$RESULTS_MD" ] && [ "$SECTIONS" = "$ALL_SECTIONS" ]; then
	RESULTS_MD=bench/RESULTS.md
fi
command -v jq >/dev/null || { echo "bench: jq is not installed (scripts/install-deps.sh bench)" >&2; exit 1; }
for s in $SECTIONS; do
	case " $ALL_SECTIONS " in
	*" $s "*) ;;
	*) echo "bench: BENCH_SECTIONS: no section '$s' (sections: $ALL_SECTIONS)" >&2; exit 2 ;;
	esac
done

[ -c /dev/kvm ] || { echo "bench: /dev/kvm is missing: nothing to measure" >&2; exit 1; }
for f in "$H" "$EMBER" "$B/ember-snap" "$B/bench/floor_boot" "$B/bench/floor_restore" \
	"$B/bench/floor_snapshot" "$B/bench/pager_micro" "$B/bench/floor_vsock" \
	"$B/bench/vsock_client" "$B/bench/serial_first" "$GUESTS/hello.elf" "$GUESTS/sandbox.elf" \
	"$GUESTS/fn.elf"; do
	[ -x "$f" ] || [ -f "$f" ] || { echo "bench: $f is not built (make bench builds it)" >&2; exit 1; }
done
for h in $HEAPS $MEM_WS $MEM_HEAP; do
	case $h in
	'' | *[!0-9]*) echo "bench: BENCH_HEAPS/BENCH_WS/BENCH_MEM_HEAP: '$h' is not a size in MiB" >&2
		exit 2 ;;
	esac
done
for w in $MEM_WS; do
	if [ "$w" -eq 0 ] || [ "$w" -gt "$MEM_HEAP" ]; then
		echo "bench: BENCH_WS: ${w} MiB must be 1..BENCH_MEM_HEAP ($MEM_HEAP)" >&2
		exit 2
	fi
done
# Snapshots (golden and scratch) live here, on the same file system as bench/results;
# removed on exit whatever happens.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Guest RAM for a heap: 256 MiB as in the boot section, or twice the heap when it
# does not fit (the sandbox's heap starts after its image and must be RAM).
mem_for() {
	if [ "$1" -le 192 ]; then echo 256; else echo $(($1 * 2)); fi
}

# The golden snapshot of the sandbox with heap $1 MiB, taken once per bench run; a
# restore of it must checksum the heap exactly as the golden guest did.
golden() {
	g=$tmp/golden-$1M
	[ -d "$g" ] && return 0
	"$EMBER" boot --kernel "$GUESTS/sandbox.elf" --cmdline "heap=$1M seed=$SEED" \
		--mem "$(mem_for "$1")" --snapshot-on-ready "$g" --exit-after-snapshot \
		--console "file:$tmp/golden-$1M.boot" 2>"$tmp/golden-$1M.err" ||
		{ cat "$tmp/golden-$1M.err" >&2; echo "bench: golden snapshot for heap=$1M failed" >&2; return 1; }
	"$EMBER" restore --snapshot "$g" --guest-cmd verify --guest-cmd exit \
		--console "file:$tmp/golden-$1M.verify" 2>"$tmp/golden-$1M.err" ||
		{ cat "$tmp/golden-$1M.err" >&2; echo "bench: restore of heap=$1M failed" >&2; return 1; }
	a=$(grep -o 'checksum=[0-9a-f]*' "$tmp/golden-$1M.boot" | tail -n 1)
	b=$(grep -o 'checksum=[0-9a-f]*' "$tmp/golden-$1M.verify" | tail -n 1)
	if [ -z "$a" ] || [ "$a" != "$b" ]; then
		echo "bench: heap=$1M: restored guest's heap '$b' differs from the golden '$a'" >&2
		return 1
	fi
	echo "$1 ${a#checksum=}" >>"$tmp/verified"
}

# Joins $tmp/$1-<heap>M.json into $tmp/$1.json as {"<heap>M": ..., ...}.
join_heaps() {
	for h in $HEAPS; do
		jq -c --arg k "${h}M" '{($k): .}' "$tmp/$1-${h}M.json" || return 1
	done | jq -s 'add' >"$tmp/$1.json"
}

# ---- sections ------------------------------------------------------------------------

# Process start -> the guest's ready write, ember against the floor (bench/floor_boot.c).
section_boot() {
	"$H" -n "$RUNS" -w 3 --baseline floor --json "$tmp/boot.json" \
		--title "boot: process start -> ready, hello.elf, ember vs floor" -- \
		ember "$EMBER" boot --kernel "$GUESTS/hello.elf" --timings :: \
		floor "$B/bench/floor_boot" "$GUESTS/hello.elf"
}

# ember's own memory: RSS minus the guest RAM it maps (target: <= 2 MiB).
section_rss() {
	"$H" -n 5 -w 1 --only "mem " --check "mem rss - guest<=2048" --json "$tmp/rss.json" \
		--title "rss: ember RSS beyond guest RAM (kB), at exit" -- \
		hello "$EMBER" boot --kernel "$GUESTS/hello.elf" --timings --console none :: \
		sandbox-64M "$EMBER" boot --kernel "$GUESTS/sandbox.elf" --cmdline heap=64M \
			--timings --console none
}

# Restore of the golden snapshot (mmap backend) against the floor (bench/floor_restore.c)
# and a cold boot of the same guest to ready, interleaved, per heap size.
section_restore() {
	for h in $HEAPS; do
		golden "$h"
		"$H" -n "$RESTORE_RUNS" -w 3 --baseline floor --json "$tmp/restore-${h}M.json" \
			--tsv "$tmp/restore-${h}M.tsv" \
			--title "restore: sandbox heap=${h}M (mem $(mem_for "$h")M), spawn -> resumed / first-report; cold boot to ready" -- \
			ember "$EMBER" restore --snapshot "$tmp/golden-${h}M" --guest-cmd exit \
				--console none --timings :: \
			floor "$B/bench/floor_restore" "$tmp/golden-${h}M" :: \
			boot "$EMBER" boot --kernel "$GUESTS/sandbox.elf" --cmdline "heap=${h}M seed=$SEED" \
				--mem "$(mem_for "$h")" --guest-cmd exit --console none --timings
	done
	join_heaps restore
}

# Snapshot creation (ember boot --snapshot-on-ready) against writing the same bytes
# with write() + fsync (bench/floor_snapshot.c), and the whole RAM for reference.
section_snapshot() {
	for h in $HEAPS; do
		golden "$h"
		s=$tmp/scratch/snap
		mkdir -p "$tmp/scratch"
		"$H" -n "$SNAP_RUNS" -w 1 --baseline floor-data --scratch "$s" \
			--json "$tmp/snapshot-${h}M.json" --tsv "$tmp/snapshot-${h}M.tsv" \
			--only "snap " --only "disk " \
			--title "snapshot: sandbox heap=${h}M (mem $(mem_for "$h")M), creation time and size" -- \
			ember "$EMBER" boot --kernel "$GUESTS/sandbox.elf" --cmdline "heap=${h}M seed=$SEED" \
				--mem "$(mem_for "$h")" --snapshot-on-ready "$s" --exit-after-snapshot \
				--console none --timings :: \
			floor-data "$B/bench/floor_snapshot" --data "$tmp/golden-${h}M" "$s" :: \
			floor-sparse "$B/bench/floor_snapshot" --sparse "$tmp/golden-${h}M" "$s" :: \
			floor-full "$B/bench/floor_snapshot" --full "$tmp/golden-${h}M" "$s"
	done
	join_heaps snapshot
}

# ---- memory: restore backends to the first response (lazy memory) -----------------------

# Stops the bench with what went wrong (the command's stderr first).
mem_fail() {
	cat "$1" >&2
	echo "bench: memory: $2" >&2
	return 1
}

# The golden sandbox snapshot for working set $1 MiB (ws= is read at boot, so it is part
# of the snapshot): raw, its working set recorded by one restore that serves a request,
# and an lz4 copy (ember-snap compress keeps the snapshot id, so ws.bin carries over).
mem_golden() {
	d=$tmp/mem-$1M
	mkdir -p "$d"
	"$EMBER" boot --kernel "$GUESTS/sandbox.elf" --cmdline "heap=${MEM_HEAP}M seed=$SEED ws=$1M" \
		--mem "$(mem_for "$MEM_HEAP")" --snapshot-on-ready "$d/raw" --exit-after-snapshot \
		--console "file:$d/boot.out" 2>"$d/err" || mem_fail "$d/err" "golden snapshot ws=$1M"
	"$EMBER" restore --snapshot "$d/raw" --mem-backend uffd --record-ws --guest-cmd serve \
		--guest-cmd exit --console "file:$d/record.out" 2>"$d/err" ||
		mem_fail "$d/err" "recording the working set of ws=$1M"
	"$B/ember-snap" compress "$d/raw" "$d/lz4" >"$d/compress.out" 2>"$d/err" ||
		mem_fail "$d/err" "ember-snap compress of ws=$1M"
	[ -f "$d/lz4/ws.bin" ] || mem_fail /dev/null "ws=$1M: the lz4 copy has no ws.bin"
	grep -q "^served ws=$(($1 * 1048576)) " "$d/record.out" ||
		mem_fail "$d/record.out" "ws=$1M: the recording restore did not serve the request"
	printf '%s %s %s %s %s\n' "$1" "$(stat -c %s "$d/raw/memory.raw")" \
		"$(($(stat -c '%b * %B' "$d/raw/memory.raw")))" "$(stat -c %s "$d/lz4/memory.lz4")" \
		"$(stat -c %s "$d/lz4/memory.idx")" >>"$tmp/mem-sizes"
}

# One restore with backend flags "$@" (after the ws $1 and a name $2) must serve the same
# request as the recording did; with $3 = full it also checksums the whole heap against
# the golden guest's (every page through that backend).
mem_verify() {
	w=$1 name=$2 full=$3
	shift 3
	d=$tmp/mem-${w}M
	if [ "$full" = full ]; then set -- "$@" --guest-cmd verify; fi
	"$EMBER" restore "$@" --guest-cmd serve --guest-cmd exit --console "file:$d/$name.out" \
		2>"$d/err" || mem_fail "$d/err" "ws=${w}M: restore with $name failed"
	a=$(grep -o '^served ws=[0-9]* checksum=[0-9a-f]*' "$d/record.out")
	b=$(grep -o '^served ws=[0-9]* checksum=[0-9a-f]*' "$d/$name.out" || true)
	[ "$a" = "$b" ] || mem_fail /dev/null "ws=${w}M: $name served '$b', the recording '$a'"
	if [ "$full" = full ]; then
		a=$(grep -o 'checksum=[0-9a-f]*' "$d/boot.out" | tail -n 1)
		b=$(grep '^checksum=' "$d/$name.out" | tail -n 1)
		[ "$a" = "$b" ] || mem_fail /dev/null "ws=${w}M: $name: heap '$b', golden '$a'"
	fi
}

# Restore -> first response (the guest's REPORT at the end of `serve`) for every memory
# backend, with the snapshot's files in the page cache (warm) and evicted before each
# run (cold: POSIX_FADV_DONTNEED on the snapshot's files only, by the harness), all ten
# interleaved; then the page server on its own (bench/pager_micro.c). See bench/README.md.
section_memory() {
	full=full
	for w in $MEM_WS; do
		mem_golden "$w"
		d=$tmp/mem-${w}M r=$tmp/mem-${w}M/raw l=$tmp/mem-${w}M/lz4
		mem_verify "$w" mmap "$full" --snapshot "$r" --mem-backend mmap
		mem_verify "$w" uffd "$full" --snapshot "$r" --mem-backend uffd
		mem_verify "$w" uffd-pf "$full" --snapshot "$r" --mem-backend uffd --prefetch ws
		mem_verify "$w" lz4-pf "$full" --snapshot "$l" --mem-backend uffd --prefetch ws
		mem_verify "$w" eager "$full" --snapshot "$r" --mem-backend eager
		full=served-only # every page once, at the first ws, is enough
		# a second serve finds its pages mapped: the guest's own work, per backend
		c="--guest-cmd serve --guest-cmd serve --guest-cmd exit --console none --timings"
		# shellcheck disable=SC2086 # $c is split on purpose
		"$H" -n "$MEM_RUNS" -w 1 --rusage --long --timeout 60 \
			--json "$tmp/memory-${w}M.json" --tsv "$tmp/memory-${w}M.tsv" \
			--only first-response --only "report serve #2 - #1" --only "pager faults" \
			--only "pager bytes_read" \
			--only "ru read" --only "cache " \
			--cache mmap-warm=warm:"$r" --cache uffd-warm=warm:"$r" \
			--cache uffd-pf-warm=warm:"$r" --cache lz4-pf-warm=warm:"$l" \
			--cache eager-warm=warm:"$r" --cache mmap-cold=cold:"$r" \
			--cache uffd-cold=cold:"$r" --cache uffd-pf-cold=cold:"$r" \
			--cache lz4-pf-cold=cold:"$l" --cache eager-cold=cold:"$r" \
			--title "memory: sandbox heap=${MEM_HEAP}M ws=${w}M (mem $(mem_for "$MEM_HEAP")M), restore -> first response, per backend, page cache warm / cold" -- \
			mmap-warm "$EMBER" restore --snapshot "$r" --mem-backend mmap $c :: \
			uffd-warm "$EMBER" restore --snapshot "$r" --mem-backend uffd $c :: \
			uffd-pf-warm "$EMBER" restore --snapshot "$r" --mem-backend uffd --prefetch ws $c :: \
			lz4-pf-warm "$EMBER" restore --snapshot "$l" --mem-backend uffd --prefetch ws $c :: \
			eager-warm "$EMBER" restore --snapshot "$r" --mem-backend eager $c :: \
			mmap-cold "$EMBER" restore --snapshot "$r" --mem-backend mmap $c :: \
			uffd-cold "$EMBER" restore --snapshot "$r" --mem-backend uffd $c :: \
			uffd-pf-cold "$EMBER" restore --snapshot "$r" --mem-backend uffd --prefetch ws $c :: \
			lz4-pf-cold "$EMBER" restore --snapshot "$l" --mem-backend uffd --prefetch ws $c :: \
			eager-cold "$EMBER" restore --snapshot "$r" --mem-backend eager $c
	done
	files=""
	for w in $MEM_WS; do files="$files $tmp/memory-${w}M.tsv"; done
	# shellcheck disable=SC2086 # word splitting of $files is intended
	awk -F'\t' -f bench/memory_summary.awk -v json="$tmp/memory-summary.tsv" \
		-v sizes="$tmp/mem-sizes" -v wslist="$MEM_WS" -v target_ws="$MEM_TARGET_WS" $files
	bench/paths_to_json.sh '{"per_ws": {}, "ratios": {}, "targets_ws": null, "targets": []}' \
		<"$tmp/memory-summary.tsv" >"$tmp/memory-summary.json"
	# the page server alone, on the snapshot the targets are about (or the first one)
	w=$MEM_TARGET_WS
	[ -d "$tmp/mem-${w}M" ] || w=${MEM_WS%% *}
	"$B/bench/pager_micro" --json "$tmp/pager-micro.json" "$tmp/mem-${w}M/raw" "$tmp/mem-${w}M/lz4"
	for w in $MEM_WS; do
		jq -c --arg k "${w}M" '{($k): .}' "$tmp/memory-${w}M.json" || return 1
	done | jq -s --argjson heap "$MEM_HEAP" --argjson mem "$(mem_for "$MEM_HEAP")" \
		--arg ws "$MEM_WS" --argjson runs "$MEM_RUNS" \
		--slurpfile summary "$tmp/memory-summary.json" --slurpfile pager "$tmp/pager-micro.json" \
		'{heap_mib: $heap, mem_mib: $mem, ws_mib: $ws, runs: $runs} + add
		 + {summary: $summary[0], pager_micro: $pager[0]}' >"$tmp/memory.json"
}

# ---- vsock: the invocation channel (INVOCATION.md) ---------------------------------------

# The fn guest's golden snapshot (heap 64 MiB, vsock CID 3), once per bench run.
fn_golden() {
	[ -d "$tmp/fn-golden" ] && return 0
	"$EMBER" boot --kernel "$GUESTS/fn.elf" --cmdline "heap=64M seed=$SEED" --mem 256 \
		--vsock-cid 3 --vsock-uds "$tmp/fn-boot.sock" --snapshot-on-ready "$tmp/fn-golden" \
		--exit-after-snapshot --console none 2>"$tmp/fn.err" ||
		{ cat "$tmp/fn.err" >&2; echo "bench: fn golden snapshot failed" >&2; return 1; }
}

# Waits (up to 10 s) for the Unix socket $1 (ember binds and listens in one step while
# it restores; the clients here retry or come seconds later).
wait_socket() {
	ws_n=0 # sh has no locals: a name of its own
	while [ "$ws_n" -lt 1000 ]; do
		[ -S "$1" ] && return 0
		sleep 0.01
		ws_n=$((ws_n + 1))
	done
	echo "bench: no socket at $1" >&2
	return 1
}

# "vsock-rtt n=.. p50_ns=.." lines -> TSV "name kind p50 p90 p99 mb_per_s".
vsock_lines() {
	awk -v name="$1" '$1 ~ /^vsock-(rtt|h2g|g2h|connect)$/ {
		for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
		printf "%s\t%s\t%s\t%s\t%s\t%s\n", name, substr($1, 7), f["p50_ns"], f["p90_ns"], f["p99_ns"], f["mb_per_s"]
	}'
}

# Spawn -> first response over vsock against the same snapshot's first report over
# the port path (the guest's first port write after the restore), interleaved; then
# round trips and bulk transfers on an open connection to a restored clone against
# the host-only floor (bench/floor_vsock.c: the same exchange over a socketpair).
section_vsock() {
	fn_golden
	g=$tmp/fn-golden
	"$H" -n "$RESTORE_RUNS" -w 3 --baseline port --json "$tmp/vsock-start.json" \
		--tsv "$tmp/vsock-start.tsv" --only first-report --only resumed \
		--only vsock-first-response --only vsock-connected \
		--title "vsock: fn heap=64M, spawn -> first response: an invocation over vsock (vsock_client --spawn) vs the port path's first report" -- \
		port "$EMBER" restore --snapshot "$g" --guest-cmd exit --console none --timings :: \
		vsock "$B/bench/vsock_client" --spawn --uds "$tmp/vstart.sock" -- \
			"$EMBER" restore --snapshot "$g" --vsock-uds "$tmp/vstart.sock" --console none --timings
	"$EMBER" restore --snapshot "$g" --vsock-uds "$tmp/vbench.sock" --console none 2>"$tmp/vclone.err" &
	clone=$!
	wait_socket "$tmp/vbench.sock"
	"$B/bench/vsock_client" --uds "$tmp/vbench.sock" --n "$VSOCK_N" --connects 50 >"$tmp/vsock-ember.txt" ||
		{ kill "$clone"; cat "$tmp/vclone.err" >&2; echo "bench: vsock_client failed" >&2; return 1; }
	kill "$clone"
	wait "$clone" 2>/dev/null || true
	"$B/bench/floor_vsock" --n "$VSOCK_N" >"$tmp/vsock-floor.txt"
	{ vsock_lines ember <"$tmp/vsock-ember.txt"; vsock_lines floor <"$tmp/vsock-floor.txt"; } >"$tmp/vsock-rtt.tsv"
	awk -F'\t' -v json="$tmp/vsock-exchanges.tsv" -v start="$tmp/vsock-start.tsv" '
	function us(x) { return x == "" ? "-" : sprintf("%.1f", x / 1000) }
	function check(name, ok, detail) {
		printf "- %s: %s (%s%s)\n", name, ok == "" ? "not measured" : ok ? "ok" : "**MISSED**", detail, ok == "" || ok ? "" : "; see bench/README.md, vsock"
	}
	{ p50[$1, $2] = $3; p90[$1, $2] = $4; p99[$1, $2] = $5; mbs[$1, $2] = $6 }
	END {
		while ((getline line < start) > 0) {
			split(line, f, "\t")
			if (f[1] == "port" && f[2] == "first-report") port = f[5]
			if (f[1] == "vsock" && f[2] == "vsock-first-response") vs = f[5]
			if (f[1] == "vsock" && f[2] == "first-report") vsfr = f[5]
		}
		print ""
		print "### vsock: round trips and bulk transfers on an open connection (us; MB/s = 10^6 B/s)"
		print ""
		print "| exchange | ember p50 | p90 | p99 | floor p50 | p99 | ember/floor | ember MB/s | floor MB/s |"
		print "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
		n = split("rtt h2g g2h connect", K, " ")
		printf "" > json
		for (i = 1; i <= n; i++) {
			k = K[i]
			r = (p50["floor", k] > 0 && p50["ember", k] != "") ? sprintf("%.2fx", p50["ember", k] / p50["floor", k]) : "-"
			printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", k, us(p50["ember", k]), us(p90["ember", k]),
				us(p99["ember", k]), us(p50["floor", k]), us(p99["floor", k]), r, mbs["ember", k] == "" ? "-" : mbs["ember", k],
				mbs["floor", k] == "" ? "-" : mbs["floor", k]
			# "exchange<TAB>key<TAB>number or empty" lines; jq makes the object below
			printf "%s\tember_p50_ns\t%s\n%s\tember_p99_ns\t%s\n", k, p50["ember", k], k, p99["ember", k] >> json
			printf "%s\tfloor_p50_ns\t%s\n%s\tfloor_p99_ns\t%s\n", k, p50["floor", k], k, p99["floor", k] >> json
			printf "%s\tember_mb_per_s\t%s\n%s\tfloor_mb_per_s\t%s\n", k, mbs["ember", k], k, mbs["floor", k] >> json
		}
		ratio = (port > 0 && vs != "") ? vs / port : ""
		printf "\tfirst_response_vs_port_first_report\t%s\n", ratio == "" ? "" : sprintf("%.3f", ratio) >> json
		print ""
		print "Targets:"
		check("spawn -> first vsock response <= 1.3x the port path'"'"'s first report", ratio == "" ? "" : ratio <= 1.3,
			sprintf("%.2f ms vs %.2f ms: %s", vs / 1000, port / 1000, ratio == "" ? "-" : sprintf("%.2fx", ratio)))
		check("64-byte round trip <= 100 us median", p50["ember", "rtt"] == "" ? "" : p50["ember", "rtt"] <= 100000, us(p50["ember", "rtt"]) " us")
		check("1 MiB messages host -> guest >= 500 MB/s", mbs["ember", "h2g"] == "" ? "" : mbs["ember", "h2g"] >= 500, mbs["ember", "h2g"] " MB/s")
		check("1 MiB messages guest -> host >= 500 MB/s", mbs["ember", "g2h"] == "" ? "" : mbs["ember", "g2h"] >= 500, mbs["ember", "g2h"] " MB/s")
	}' "$tmp/vsock-rtt.tsv"
	jq -R -n --slurpfile start "$tmp/vsock-start.json" '
		def num: if . == "" then null else tonumber end;
		reduce (inputs | split("\t")) as $r ({start: $start[0], exchanges: {}};
			if $r[0] == "" then .[$r[1]] = ($r[2] | num)
			else .exchanges[$r[0]][$r[1]] = ($r[2] | num) end)' \
		"$tmp/vsock-exchanges.tsv" >"$tmp/vsock.json"
}

# Idle clones cost no host CPU: IDLE_CLONES restored fn clones wait for work (their
# vCPUs parked in the host), their total CPU time over IDLE_WINDOW seconds (from
# /proc/PID/stat), then each answers one 64-byte invocation (ember invoke --timings).
section_idle() {
	fn_golden
	pids=""
	i=0
	while [ "$i" -lt "$IDLE_CLONES" ]; do
		"$EMBER" restore --snapshot "$tmp/fn-golden" --vsock-uds "$tmp/idle-$i.sock" \
			--console none 2>"$tmp/idle-$i.err" &
		pids="$pids $!"
		i=$((i + 1))
	done
	i=0
	while [ "$i" -lt "$IDLE_CLONES" ]; do
		wait_socket "$tmp/idle-$i.sock" || { kill $pids; return 1; }
		i=$((i + 1))
	done
	sleep 2 # let every clone finish its restore and park
	ticks() { # utime + stime of every clone, in clock ticks
		t=0
		for p in $pids; do
			t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
		done
		echo "$t"
	}
	t0=$(ticks)
	sleep "$IDLE_WINDOW"
	t1=$(ticks)
	hz=$(getconf CLK_TCK)
	head -c 64 /dev/urandom >"$tmp/idle-payload"
	: >"$tmp/idle-invoke"
	i=0
	while [ "$i" -lt "$IDLE_CLONES" ]; do
		"$EMBER" invoke --vsock-uds "$tmp/idle-$i.sock" --payload "$tmp/idle-payload" --timings \
			2>>"$tmp/idle-invoke" >/dev/null || { kill $pids; echo "bench: idle clone $i did not answer" >&2; return 1; }
		i=$((i + 1))
	done
	kill $pids
	wait $pids 2>/dev/null || true # not a bare wait: it would wait for the section's tee too
	awk -v n="$IDLE_CLONES" -v win="$IDLE_WINDOW" -v hz="$hz" -v dt="$((t1 - t0))" -v json="$tmp/idle.json" '
	$1 == "ember-invoke" { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "connect_us") c[++nc] = kv[2]; if (kv[1] == "response_us") r[++nr] = kv[2] } }
	function sort(a, m,   i, j, t) { for (i = 2; i <= m; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t } }
	function pct(a, m, p,   k) { k = int(m * p + 0.999); if (k < 1) k = 1; if (k > m) k = m; return a[k] }
	END {
		cpu = dt / hz / win * 100
		sort(c, nc); sort(r, nr)
		print ""
		print "### idle: " n " restored fn clones waiting for work, " win " s"
		print ""
		printf "| what | value |\n|---|---:|\n"
		printf "| CPU of all clones together | %.2f%% of one CPU (%d ticks at %d Hz) |\n", cpu, dt, hz
		printf "| next invocation: connect (p50 / p99) | %d / %d us |\n", pct(c, nc, 0.5), pct(c, nc, 0.99)
		printf "| next invocation: response (p50 / p99) | %d / %d us |\n", pct(r, nr, 0.5), pct(r, nr, 0.99)
		printf "clones\t%d\nwindow_s\t%d\ncpu_percent_of_one\t%.3f\nconnect_p50_us\t%d\nconnect_p99_us\t%d\nresponse_p50_us\t%d\nresponse_p99_us\t%d\n", n, win, cpu, pct(c, nc, 0.5), pct(c, nc, 0.99), pct(r, nr, 0.5), pct(r, nr, 0.99) > json
		print ""
		printf "- %d idle clones use < 5%% of one CPU: %s (%.2f%%)\n", n, cpu < 5 ? "ok" : "**MISSED**", cpu
		printf "- every parked clone answered its next invocation (%d of %d)\n", nr, n
	}' "$tmp/idle-invoke"
	# "key<TAB>number" lines -> one object
	jq -R -n '[inputs | split("\t") | {(.[0]): (.[1] | tonumber)}] | add' "$tmp/idle.json" >"$tmp/idle.json.new"
	mv "$tmp/idle.json.new" "$tmp/idle.json"
}

# ---- qemu: QEMU's microvm as the peer ------------------------------------------------------

# The same sandbox restored by QEMU from a migration file (and from a mapped RAM file)
# against ember's restore, spawn -> the "resumed" line; QEMU installed if missing, the
# section skipped loudly if it cannot be (bench/qemu_peer.sh).
section_qemu() {
	EMBER_BUILD=$B BENCH_QEMU_RUNS=${BENCH_QEMU_RUNS:-$RESTORE_RUNS} bench/qemu_peer.sh "$tmp/qemu.json"
}

# ---- standby, reset, standby_mem: warm starts (bench/warm.sh) ----------------------------
. "$(dirname "$0")/warm.sh"

# ---- pool: invocations through ember pool (bench/pool.sh) -------------------------------
. "$(dirname "$0")/pool.sh"

# ---- summary against the targets (bench/README.md) --------------------------------------

# Reads the per-heap TSVs (command, metric, unit, n, median, p99, min, max) and prints the
# headline table and the target checks; writes the same numbers to $tmp/summary.json.
summary() {
	files=""
	for h in $HEAPS; do
		for s in restore snapshot; do
			[ -f "$tmp/$s-${h}M.tsv" ] && files="$files $tmp/$s-${h}M.tsv"
		done
	done
	[ -n "$files" ] || return 0
	# shellcheck disable=SC2086 # word splitting of $files is intended
	awk -F'\t' -v json="$tmp/summary.json" -v heaps="$HEAPS" -v verified="$tmp/verified" '
	function v(h, cmd, metric, stat) {
		k = h SUBSEP cmd SUBSEP metric SUBSEP stat
		return (k in val) ? val[k] : ""
	}
	function ms(x) { return x == "" ? "-" : sprintf("%.2f", x / 1000) }
	function mib(x) { return x == "" ? "-" : sprintf("%.1f", x / 1048576) }
	function ratio(a, b) { return (a == "" || b == "" || b == 0) ? "" : a / b }
	function fx(r) { return r == "" ? "-" : sprintf("%.2fx", r) }
	function jn(x) { return x == "" ? "null" : sprintf("%.1f", x) }
	function jr(x) { return x == "" ? "null" : sprintf("%.3f", x) }
	function check(name, ok, detail) {
		printf "- %s: %s (%s)\n", name, ok == "" ? "not measured" : ok ? "ok" : "**MISSED**", detail
	}
	function jl(h, key, val) { printf "%sM\t%s\tn\t%s\n", h, key, val > json }
	{
		match(FILENAME, /-[0-9]+M\.tsv$/)
		h = substr(FILENAME, RSTART + 1, RLENGTH - 6)
		val[h, $1, $2, "median"] = $5; val[h, $1, $2, "p99"] = $6; val[h, $1, $2, "min"] = $7
	}
	END {
		nh = split(heaps, H, " ")
		while ((getline line < verified) > 0) { split(line, f, " "); ok_verify[f[1]] = f[2] }
		print ""
		print "### summary: sandbox restore and snapshot (medians unless marked; ms, MiB)"
		print ""
		print "| heap | restore: resumed (p99) | floor resumed | ember/floor | first-report (p99) | floor first-report | ember/floor | cold boot to ready | boot/restore | snapshot (p99) | write() floor | ember/floor | on disk alloc / logical |"
		print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		printf "" > json
		for (i = 1; i <= nh; i++) {
			h = H[i]
			er = v(h, "ember", "resumed", "median"); fr = v(h, "floor", "resumed", "median")
			ef = v(h, "ember", "first-report", "median"); ff = v(h, "floor", "first-report", "median")
			br = v(h, "boot", "ready", "median")
			es = v(h, "ember", "snap us_total", "median"); fs = v(h, "floor-data", "snap us_total", "median")
			r_rf[h] = ratio(er, fr); r_ff[h] = ratio(ef, ff); r_br[h] = ratio(br, er); r_sn[h] = ratio(es, fs)
			res[h] = er
			printf "| %sM | %s (%s) | %s | %s | %s (%s) | %s | %s | %s | %s | %s (%s) | %s | %s | %s / %s |\n", h,
				ms(er), ms(v(h, "ember", "resumed", "p99")), ms(fr), fx(r_rf[h]),
				ms(ef), ms(v(h, "ember", "first-report", "p99")), ms(ff), fx(r_ff[h]),
				ms(br), fx(r_br[h]), ms(es), ms(v(h, "ember", "snap us_total", "p99")), ms(fs),
				fx(r_sn[h]), mib(v(h, "ember", "disk allocated", "median")),
				mib(v(h, "ember", "disk logical", "median"))
			# "heap<TAB>key<TAB>n|s<TAB>value" lines; jq makes the object below
			jl(h, "restore_resumed_us", jn(er)); jl(h, "restore_resumed_p99_us", jn(v(h, "ember", "resumed", "p99")))
			jl(h, "floor_resumed_us", jn(fr)); jl(h, "restore_first_report_us", jn(ef))
			jl(h, "floor_first_report_us", jn(ff)); jl(h, "cold_boot_ready_us", jn(br))
			jl(h, "snapshot_us", jn(es)); jl(h, "snapshot_floor_us", jn(fs))
			jl(h, "snapshot_allocated_bytes", jn(v(h, "ember", "disk allocated", "median")))
			jl(h, "snapshot_logical_bytes", jn(v(h, "ember", "disk logical", "median")))
			jl(h, "ratio_resumed_vs_floor", jr(r_rf[h])); jl(h, "ratio_first_report_vs_floor", jr(r_ff[h]))
			jl(h, "ratio_boot_vs_restore", jr(r_br[h])); jl(h, "ratio_snapshot_vs_floor", jr(r_sn[h]))
			printf "%sM\trestore_verified_checksum\ts\t%s\n", h, ok_verify[h] > json
		}
		print ""
		print "restore = `ember restore` spawn -> first KVM_RUN (resumed) / the guest'"'"'s first port write (first-report);"
		print "floor = bench/floor_restore, floor_snapshot --data; cold boot = `ember boot` of the same guest to ready."
		print ""
		print "Targets (64 MiB sandbox unless noted):"
		h = "64"
		if (res[h] != "") {
			check("restore to guest running <= 3 ms median", res[h] <= 3000, ms(res[h]) " ms")
			check("restore <= 1.5x the floor", r_rf[h] <= 1.5, fx(r_rf[h]))
			check("restore >= 10x faster than cold boot to ready", r_br[h] >= 10, fx(r_br[h]))
		} else
			print "- restore targets: heap 64 not in BENCH_HEAPS"
		if (r_sn[h] != "")
			check("snapshot creation <= 1.3x write() of the same bytes", r_sn[h] <= 1.3, fx(r_sn[h]))
		for (i = 1; i <= nh; i++) {
			h = H[i]
			if (h == "64")
				continue
			if (r_rf[h] != "")
				check("heap " h "M: restore <= 1.5x the floor", r_rf[h] <= 1.5, fx(r_rf[h]))
			if (r_sn[h] != "")
				check("heap " h "M: snapshot <= 1.3x the write() floor", r_sn[h] <= 1.3, fx(r_sn[h]))
		}
		for (i = 1; i <= nh; i++)
			if (ok_verify[H[i]] != "")
				printf "- heap %sM: restored heap checksum %s equals the golden guest'"'"'s\n", H[i], ok_verify[H[i]]
	}' $files
	jq -R -n 'reduce (inputs | split("\t")) as $r ({};
		.[$r[0]][$r[1]] = (if $r[2] == "s" then $r[3] else ($r[3] | fromjson) end))' \
		"$tmp/summary.json" >"$tmp/summary.json.new"
	mv "$tmp/summary.json.new" "$tmp/summary.json"
}

# ---- run and collect ----------------------------------------------------------------------

# Target lines of a section's output ($2) -> "section<TAB>target<TAB>status<TAB>detail" on
# stdout: "- TARGET: ok|met|**MISSED**|not measured (DETAIL)".
target_lines() {
	awk -v sec="$1" '
	/^- / && match($0, /: (ok|met|not measured|\*\*MISSED\*\*)( \(|$)/) {
		t = substr($0, 3, RSTART - 3)
		rest = substr($0, RSTART + 2)
		st = rest; sub(/ \(.*/, "", st)
		d = ""
		if (index(rest, " (")) { d = substr(rest, index(rest, " (") + 2); sub(/\)$/, "", d) }
		gsub(/\t/, " ", t); gsub(/\t/, " ", d)
		status = st == "**MISSED**" ? "missed" : st == "not measured" ? "not measured" : "met"
		printf "%s\t%s\t%s\t%s\n", sec, t, status, d
	}' "$2"
}

# Runs section $1, its output both on stdout (as it comes) and in $tmp/out-$1.md.
run_section() {
	rm -f "$tmp/fifo"
	mkfifo "$tmp/fifo"
	tee "$tmp/out-$1.md" <"$tmp/fifo" &
	tee_pid=$!
	# a plain call: set -e stops the bench inside a failing section, as before
	"section_$1" >"$tmp/fifo"
	wait "$tee_pid"
	target_lines "$1" "$tmp/out-$1.md" >>"$tmp/targets.tsv"
	[ -f "$tmp/$1.json" ] || { echo "bench: section $1 wrote no $tmp/$1.json" >&2; exit 1; }
	jq -e . "$tmp/$1.json" >/dev/null ||
		{ echo "bench: section $1 wrote invalid JSON (above)" >&2; exit 1; }
}

date=$(date -u +%Y-%m-%dT%H%M%SZ)
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && ! git diff --quiet HEAD -- 2>/dev/null; then
	commit="$commit-dirty"
fi
version=$("$EMBER" --version | sed 's/^ember //')
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
[ -n "$cpu_model" ] || cpu_model=$(uname -m)
echo "# ember bench, $date"
echo
echo "host: $cpu_model, $(nproc) CPUs, kernel $(uname -r); ember $version at $commit"
echo "build: $B; sections: $SECTIONS; heaps: $HEAPS MiB;"
echo "memory section: heap ${MEM_HEAP} MiB, working sets $MEM_WS MiB"
echo "restore page cache: warm (the golden snapshot was just written; every restore after the"
echo "first maps cached pages, the mmap backend's normal case); memory: warm and cold, per run"
: >"$tmp/targets.tsv"
for s in $SECTIONS; do
	run_section "$s"
done
summary >"$tmp/out-summary.md"
cat "$tmp/out-summary.md"
target_lines summary "$tmp/out-summary.md" >>"$tmp/targets.tsv"

mkdir -p "$RESULTS"
out="$RESULTS/$date.json"
for s in $SECTIONS summary; do
	[ -f "$tmp/$s.json" ] || continue
	jq -e . "$tmp/$s.json" >/dev/null || { echo "bench: $s wrote invalid JSON" >&2; exit 1; }
	jq -c --arg s "$s" '{($s): .}' "$tmp/$s.json"
done | jq -s 'add // {}' >"$tmp/sections.all.json"
jq -R -n '[inputs | split("\t") | {section: .[0], target: .[1], status: .[2], detail: .[3]}]' \
	"$tmp/targets.tsv" >"$tmp/targets.json"
jq -n --arg date "$date" --arg commit "$commit" --arg version "$version" \
	--arg cpu "$cpu_model" --arg kernel "$(uname -r)" --argjson cpus "$(nproc)" --arg build "$B" \
	--arg heaps "$HEAPS" --slurpfile sections "$tmp/sections.all.json" \
	--slurpfile targets "$tmp/targets.json" \
	'{date: $date, commit: $commit, ember_version: $version, cpu_model: $cpu, kernel: $kernel,
	  cpus: $cpus, build: $build, heaps_mib: $heaps, targets: $targets[0],
	  sections: $sections[0]}' >"$out"
bench/to_csv.sh "$out" >"${out%.json}.csv"
echo
echo "results: $out, ${out%.json}.csv"
plots="${out%.json}-plots"
if command -v gnuplot >/dev/null; then
	bench/plot.sh "$out" "$plots" >/dev/null
	echo "plots: $plots/"
else
	echo "bench: gnuplot is not installed: no plots (scripts/install-deps.sh bench)" >&2
fi
if [ -n "$RESULTS_MD" ]; then
	md_plots=$(dirname "$RESULTS_MD")/plots
	mkdir -p "$md_plots"
	for p in restore-cdf boot-restore-qemu reset-pages pool-concurrency; do
		rm -f "$md_plots/$p.svg" # a plot this run has no data for must not stay
	done
	[ ! -d "$plots" ] || cp "$plots"/*.svg "$md_plots"/ 2>/dev/null || true
	echo "summary: $RESULTS_MD"
	exec bench/results.sh --md "$RESULTS_MD" --plots plots "$out"
fi
echo "(a partial run: bench/RESULTS.md is left as it is; BENCH_RESULTS_MD=FILE writes one)"
exec bench/results.sh "$out"
