#!/bin/sh
# make bench: ember's start-latency suite. Prints markdown tables and writes every
# number (with the raw samples) to bench/results/<date>.json. See bench/README.md.
#
#   bench/run.sh                       all sections
#   BENCH_SECTIONS="boot" bench/run.sh only some
#   BENCH_RUNS=30 bench/run.sh         fewer runs for the boot section (default 100)
#
# A section is a shell function section_NAME that runs bench/harness with
# --json "$tmp/NAME.json"; add one and list it in SECTIONS below.
set -eu
B=${EMBER_BUILD:-build}
RUNS=${BENCH_RUNS:-100}
SECTIONS=${BENCH_SECTIONS:-"boot memory"}
H=$B/bench/harness
EMBER=$B/ember
GUESTS=$B/guests
RESULTS=bench/results

[ -c /dev/kvm ] || { echo "bench: /dev/kvm is missing: nothing to measure" >&2; exit 1; }
for f in "$H" "$EMBER" "$B/bench/floor_boot" "$GUESTS/hello.elf" "$GUESTS/sandbox.elf"; do
	[ -x "$f" ] || [ -f "$f" ] || { echo "bench: $f is not built (make bench builds it)" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ---- sections ------------------------------------------------------------------------

# Process start -> the guest's ready write, ember against the floor (bench/floor_boot.c).
section_boot() {
	"$H" -n "$RUNS" -w 3 --baseline floor --json "$tmp/boot.json" \
		--title "boot: process start -> ready, hello.elf, ember vs floor" -- \
		ember "$EMBER" boot --kernel "$GUESTS/hello.elf" --timings :: \
		floor "$B/bench/floor_boot" "$GUESTS/hello.elf"
}

# ember's own memory: RSS minus the guest RAM it maps (target: <= 2 MiB).
section_memory() {
	"$H" -n 5 -w 1 --only "mem " --check "mem rss - guest<=2048" --json "$tmp/memory.json" \
		--title "memory: ember RSS beyond guest RAM (kB), at exit" -- \
		hello "$EMBER" boot --kernel "$GUESTS/hello.elf" --timings --console none :: \
		sandbox-64M "$EMBER" boot --kernel "$GUESTS/sandbox.elf" --cmdline heap=64M \
			--timings --console none
}

# ---- run and collect ----------------------------------------------------------------------

date=$(date -u +%Y-%m-%dT%H%M%SZ)
echo "# ember bench, $date"
echo
echo "host: $(uname -r), $(nproc) CPUs; build: $B; sections: $SECTIONS"
for s in $SECTIONS; do
	"section_$s"
done

mkdir -p "$RESULTS"
out="$RESULTS/$date.json"
{
	printf '{"date": "%s", "kernel": "%s", "cpus": %s, "build": "%s", "sections": {' \
		"$date" "$(uname -r)" "$(nproc)" "$B"
	sep=""
	for s in $SECTIONS; do
		printf '%s\n"%s": ' "$sep" "$s"
		cat "$tmp/$s.json"
		sep=","
	done
	printf '}}\n'
} >"$out"
echo
echo "results: $out"
