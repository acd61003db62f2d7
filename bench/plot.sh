#!/bin/sh
# bench/plot.sh RESULTS.json OUTDIR: renders the bench's plots as SVG with gnuplot, from
# the results JSON only (jq extracts the data), one plot per section that ran:
#
#   restore-cdf.svg      memory: restore -> first response, CDF per memory backend,
#                        page cache warm and cold (the working set the targets are at)
#   boot-restore-qemu.svg  qemu / summary: ember restore vs cold boot vs QEMU (medians)
#   reset-pages.svg      reset: reset -> running against pages written, per backend
#   pool-concurrency.svg pool: invocation latency (p50, p99) against concurrency
#
# Prints the names of the files it wrote, one a line. Needs gnuplot (gnuplot-nox, which
# `scripts/install-deps.sh bench` installs) and jq.
set -eu
[ $# -eq 2 ] || { echo "usage: bench/plot.sh RESULTS.json OUTDIR" >&2; exit 2; }
in=$1 out=$2
command -v gnuplot >/dev/null || { echo "bench/plot.sh: gnuplot is not installed (scripts/install-deps.sh bench)" >&2; exit 1; }
jq -e '.sections | type == "object"' "$in" >/dev/null ||
	{ echo "bench/plot.sh: $in: no .sections object" >&2; exit 1; }
mkdir -p "$out"
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
has() { jq -e --arg s "$1" '.sections[$s] != null' "$in" >/dev/null; }
TERM_SVG="set terminal svg size 800,480 dynamic font 'sans,12' background '#ffffff'"

# ---- restore latency CDF per memory backend --------------------------------------------
if has memory; then
	# the working set the targets are stated at, else the first one measured
	ws=$(jq -r '.sections.memory | (.summary.targets_ws // empty) as $t
		| if $t and has($t) then $t else (keys_unsorted | map(select(test("^[0-9]+M$"))) | .[0] // empty) end' "$in")
	if [ -n "$ws" ]; then
		plot=""
		for cmd in $(jq -r --arg w "$ws" '.sections.memory[$w].commands[].name' "$in"); do
			jq -r --arg w "$ws" --arg c "$cmd" '.sections.memory[$w].commands[]
				| select(.name == $c) | .metrics["first-response"].samples // [] | sort
				| length as $n | to_entries[] | "\(.value / 1000)\t\((.key + 1) / $n)"' \
				"$in" >"$d/cdf-$cmd.tsv"
			[ -s "$d/cdf-$cmd.tsv" ] || continue
			# one colour per backend, dashed when the page cache was cold
			case $cmd in *-cold) dt=2 ;; *) dt=1 ;; esac
			case ${cmd%-*} in mmap) lc=1 ;; uffd) lc=2 ;; uffd-pf) lc=3 ;; lz4-pf) lc=4 ;; *) lc=6 ;; esac
			plot="$plot${plot:+, }'$d/cdf-$cmd.tsv' using 1:2 with steps lc $lc dt $dt lw 2 title '$cmd'"
		done
		if [ -n "$plot" ]; then
			gnuplot <<-EOF
			$TERM_SVG
			set output '$out/restore-cdf.svg'
			set title "restore -> first response per memory backend, ws=$ws (dashed: cold cache)"
			set xlabel 'ms (log scale)'
			set ylabel 'fraction of runs'
			set logscale x
			set key outside right
			set grid
			plot $plot
			EOF
			echo "$out/restore-cdf.svg"
		fi
	fi
fi

# ---- boot vs restore vs QEMU ------------------------------------------------------------
if has qemu || has summary; then
	jq -r '.sections as $s | [
		["ember restore (64M sandbox)", $s.summary["64M"].restore_resumed_us],
		["ember restore (qemu section)", $s.qemu.restore_first_line_us.ember],
		["ember cold boot (64M sandbox)", $s.summary["64M"].cold_boot_ready_us],
		["ember cold boot (hello)", $s.qemu.boot_first_line_us.ember],
		["QEMU restore (migration file)", $s.qemu.restore_first_line_us.qemu],
		["QEMU restore (mapped RAM)", $s.qemu.restore_first_line_us.qemu_mapped],
		["QEMU cold boot (hello)", $s.qemu.boot_first_line_us.qemu]
	] | .[] | select(.[1] != null) | "\"\(.[0])\"\t\(.[1] / 1000)"' "$in" >"$d/brq.tsv"
	if [ -s "$d/brq.tsv" ]; then
		gnuplot <<-EOF
		$TERM_SVG
		set output '$out/boot-restore-qemu.svg'
		set title 'spawn -> guest running: ember restore vs cold boot vs QEMU (medians)'
		set ylabel 'ms (log scale)'
		set logscale y
		set style fill solid 0.6
		set boxwidth 0.6
		set xtics rotate by -25 noenhanced
		set bmargin 9
		set grid y
		unset key
		plot '$d/brq.tsv' using 0:2:xtic(1) with boxes, '' using 0:2:(sprintf('%.1f', \$2)) with labels offset 0,0.8 notitle
		EOF
		echo "$out/boot-restore-qemu.svg"
	fi
fi

# ---- reset time vs written pages ----------------------------------------------------------
if has reset; then
	plot=""
	for pat in $(jq -r '[.sections.reset.ratios[]?.pattern] | unique | .[]' "$in"); do
		for who in floor ember-mmap ember-uffd; do
			jq -r --arg p "$pat" --arg k "${who}_us" '.sections.reset.ratios[]
				| select(.pattern == $p and .[$k] != null) | "\(.pages)\t\(.[$k] / 1000)"' \
				"$in" | sort -n >"$d/reset-$pat-$who.tsv"
			[ -s "$d/reset-$pat-$who.tsv" ] || continue
			case $pat in random) dt=2 ;; *) dt=1 ;; esac
			case $who in floor) lc=1 ;; ember-mmap) lc=2 ;; *) lc=3 ;; esac
			plot="$plot${plot:+, }'$d/reset-$pat-$who.tsv' using (\$1 + 1):2 with linespoints lc $lc dt $dt lw 2 title '$who, $pat'"
		done
	done
	if [ -n "$plot" ]; then
		gnuplot <<-EOF
		$TERM_SVG
		set output '$out/reset-pages.svg'
		set title 'in-place reset -> running (p50) against pages written since the snapshot'
		set xlabel 'pages written + 1 (log scale)'
		set ylabel 'ms (log scale)'
		set logscale xy
		set key outside right
		set grid
		plot $plot
		EOF
		echo "$out/reset-pages.svg"
	fi
fi

# ---- invoke latency vs concurrency ---------------------------------------------------------
if has pool; then
	jq -r '.sections.pool.latency | to_entries | map(.key |= ltrimstr("c") | .key |= tonumber)
		| sort_by(.key)[] | "\(.key)\t\(.value.pool.p50_us / 1000)\t\(.value.pool.p99_us / 1000)\t\(.value.fresh.p50_us / 1000)\t\(.value.fresh.p99_us / 1000)"' \
		"$in" >"$d/pool.tsv"
	if [ -s "$d/pool.tsv" ]; then
		gnuplot <<-EOF
		$TERM_SVG
		set output '$out/pool-concurrency.svg'
		set title 'invocation end to end, 1 KiB: ember pool vs a fresh restore per invocation'
		set xlabel 'concurrent clients'
		set ylabel 'ms'
		set key outside right
		set grid
		plot '$d/pool.tsv' using 1:2 with linespoints lw 2 title 'pool p50', \
		     '' using 1:3 with linespoints dt 2 lw 2 title 'pool p99', \
		     '' using 1:4 with linespoints lw 2 title 'fresh restore p50', \
		     '' using 1:5 with linespoints dt 2 lw 2 title 'fresh restore p99'
		EOF
		echo "$out/pool-concurrency.svg"
	fi
fi
