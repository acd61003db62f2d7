#!/bin/sh
# QEMU's microvm as the side-by-side peer (bench/README.md, section qemu): the same
# sandbox guest, heap and RAM as the restore section, booted through its PVH note
# (tests/guest/lib/pvh.S) and restored from a migration file ("qemu"; and, QEMU at its
# fastest, from a privately mapped RAM file plus a device-state stream, "qemu-mapped"),
# against ember's restore of its own golden snapshot of that guest, interleaved. The event both VMMs show the
# same way: the sandbox's "resumed" line (resume_line), the first thing a restored
# clone writes to the UART. Prints markdown; writes JSON to $1 (default /dev/null).
#
#   bench/qemu_peer.sh [JSON]
#   BENCH_QEMU_RUNS=50        restore runs per VMM (+3 warm-up)
#   BENCH_QEMU_BOOT_RUNS=20   hello boot runs per VMM (+2 warm-up)
#   BENCH_QEMU_HEAP=64        sandbox heap in MiB (RAM 256 MiB, as the restore section)
#   BENCH_QEMU_CPU=...        QEMU -cpu (default: host, else host,-arch-capabilities)
#   BENCH_QEMU_MACHINE=...    QEMU -M (default: microvm without legacy devices)
#
# qemu-system-x86_64 missing: it apt-get installs Debian's qemu-system-x86; if that
# fails the section is SKIPPED, loudly, with "skipped" in the JSON. Exit 0 (measured
# or skipped), 1 when something that should work did not.
set -eu
B=${EMBER_BUILD:-build}
JSON=${1:-/dev/null}
RUNS=${BENCH_QEMU_RUNS:-50}
BOOT_RUNS=${BENCH_QEMU_BOOT_RUNS:-20}
HEAP=${BENCH_QEMU_HEAP:-64}
MACHINE=${BENCH_QEMU_MACHINE:-microvm,pit=off,pic=off,rtc=off,acpi=off,x-option-roms=off}
SEED=1
TARGET=50 # issue 8: first response >= 50x faster than QEMU's restore
H=$B/bench/harness
SF=$B/bench/serial_first
EMBER=$B/ember
GUESTS=$B/guests
# resume_line: "resumed" after ready; pvh_snapshot: under QEMU, wait at ready for the
# stop and the restore (ignored by ember)
CMDLINE="heap=${HEAP}M seed=$SEED resume_line pvh_snapshot"

case $HEAP in '' | *[!0-9]*) echo "qemu_peer: BENCH_QEMU_HEAP='$HEAP' is not MiB" >&2; exit 2 ;; esac
if [ "$HEAP" -le 192 ]; then MEM=256; else MEM=$((HEAP * 2)); fi # as run.sh's mem_for
command -v jq >/dev/null || { echo "qemu_peer: jq is not installed (scripts/install-deps.sh bench)" >&2; exit 1; }
for f in "$H" "$SF" "$EMBER" "$GUESTS/hello.elf" "$GUESTS/sandbox.elf"; do
	[ -e "$f" ] || { echo "qemu_peer: $f is not built (make bench builds it)" >&2; exit 1; }
done
d=$(mktemp -d)
qpid=""
cleanup() {
	[ -n "$qpid" ] && kill -9 "$qpid" 2>/dev/null
	rm -rf "$d"
}
trap cleanup EXIT

fail() {
	echo "qemu_peer: $*" >&2
	exit 1
}

skip() {
	echo
	echo "### qemu: SKIPPED"
	echo
	echo "!!!!!!!! bench: qemu section SKIPPED: $* !!!!!!!!"
	echo "!!!!!!!! bench: qemu section SKIPPED: $* !!!!!!!!" >&2
	jq -n --arg why "$*" '{skipped: $why}' >"$JSON"
	exit 0
}

# ---- QEMU: installed, or installed now -----------------------------------------------

QEMU=$(command -v qemu-system-x86_64 || true)
if [ -z "$QEMU" ]; then
	echo "qemu_peer: qemu-system-x86_64 is missing: installing Debian's qemu-system-x86" >&2
	if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
		skip "qemu-system-x86_64 is not installed and apt-get needs root (apt-get install qemu-system-x86)"
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y --no-install-recommends qemu-system-x86 >"$d/apt.log" 2>&1 ||
		{ apt-get update >>"$d/apt.log" 2>&1 &&
			apt-get install -y --no-install-recommends qemu-system-x86 >>"$d/apt.log" 2>&1; } ||
		{ tail -5 "$d/apt.log" >&2; skip "apt-get install qemu-system-x86 failed"; }
	QEMU=$(command -v qemu-system-x86_64 || true)
	[ -n "$QEMU" ] || skip "qemu-system-x86 installed no qemu-system-x86_64"
fi
VERSION=$("$QEMU" --version | head -n 1)

# -cpu host is the fair choice; QEMU 7.2 aborts on it here (it sets
# IA32_ARCH_CAPABILITIES, which this KVM refuses), so fall back without that MSR.
CPU=${BENCH_QEMU_CPU:-}
for c in ${CPU:-host host,-arch-capabilities}; do
	"$SF" --timeout 20 --expect "hello from ember guest" -- "$QEMU" -M "$MACHINE" -enable-kvm \
		-cpu "$c" -m "${MEM}M" -nodefaults -no-user-config -nographic \
		-kernel "$GUESTS/hello.elf" -serial stdio >"$d/probe.out" 2>&1 && { CPU=$c; break; }
	CPU=""
done
[ -n "$CPU" ] || { cat "$d/probe.out" >&2; fail "QEMU ($VERSION) cannot boot hello.elf through its PVH note"; }

# Every QEMU here: microvm, KVM, one vCPU, no defaults, the UART only (COM1, which
# microvm's isa-serial provides), isa-debug-exit so a guest can end the VM. The source
# leaves its run state out of the stream, so a restored VM starts running by itself.
# (Split on spaces where used: no argument here has one.)
QARGS="-M $MACHINE -enable-kvm -cpu $CPU -m ${MEM}M -smp 1 -nodefaults -no-user-config
	-nographic -device isa-debug-exit -global migration.store-global-state=off"

# ---- golden snapshots: ember's, and QEMU's migration file, of the same guest ---------

"$EMBER" boot --kernel "$GUESTS/sandbox.elf" --cmdline "$CMDLINE" --mem "$MEM" \
	--snapshot-on-ready "$d/ember-golden" --exit-after-snapshot \
	--console "file:$d/ember-boot.out" 2>"$d/err" || { cat "$d/err" >&2; fail "ember golden snapshot"; }
"$EMBER" restore --snapshot "$d/ember-golden" --guest-cmd verify --guest-cmd exit \
	--console "file:$d/ember-verify.out" 2>"$d/err" || { cat "$d/err" >&2; fail "ember restore"; }
want=$(grep -o 'checksum=[0-9a-f]*' "$d/ember-boot.out" | tail -n 1)
[ "$(head -n 1 "$d/ember-verify.out")" = resumed ] || fail "ember's restored sandbox did not print 'resumed' first"
[ "$(grep -o 'checksum=[0-9a-f]*' "$d/ember-verify.out")" = "$want" ] ||
	fail "ember's restored heap differs from its golden guest's ($want)"

# A QEMU golden snapshot $1 (extra QEMU arguments $2, HMP commands before "stop" $3):
# the source VM boots the sandbox, which prints "pvh: ready" and spins; the monitor
# (HMP, commands through a FIFO, output to a plain file) stops it and migrates it to
# $d/$1.mig. Sets mig_ms (stop + migrate, as the shell sees it).
qemu_golden() {
	mkfifo "$d/$1-mon.in"
	: >"$d/$1-mon.out"
	exec 3<>"$d/$1-mon.in" # read-write: opening never blocks, whatever QEMU does
	# shellcheck disable=SC2086 # QARGS and $2: one word per argument
	"$QEMU" $QARGS $2 -kernel "$GUESTS/sandbox.elf" -append "$CMDLINE" \
		-serial "file:$d/$1-boot.out" -chardev "pipe,id=mon,path=$d/$1-mon" \
		-mon chardev=mon,mode=readline </dev/null 2>"$d/$1-src.err" &
	qpid=$!
	n=0
	until grep -q '^pvh: ready' "$d/$1-boot.out" 2>/dev/null; do
		kill -0 "$qpid" 2>/dev/null ||
			{ cat "$d/$1-src.err" "$d/$1-boot.out" >&2; fail "$1: the QEMU source VM died"; }
		[ "$n" -lt 1200 ] ||
			{ cat "$d/$1-boot.out" >&2; fail "$1: the source VM never printed 'pvh: ready' (60 s)"; }
		sleep 0.05
		n=$((n + 1))
	done
	[ "$(grep -o 'checksum=[0-9a-f]*' "$d/$1-boot.out")" = "$want" ] ||
		fail "$1: the sandbox under QEMU built another heap than under ember ($want)"
	t0=$(date +%s%N)
	printf '%sstop\nmigrate "exec:cat > %s"\ninfo migrate\nquit\n' "$3" "$d/$1.mig" >&3
	n=0
	while kill -0 "$qpid" 2>/dev/null; do
		[ "$n" -lt 600 ] || fail "$1: QEMU did not finish migrating to a file within 60 s"
		sleep 0.1
		n=$((n + 1))
	done
	wait "$qpid" || true
	qpid=""
	mig_ms=$((($(date +%s%N) - t0) / 1000000))
	exec 3>&-
	tr -d '\r' <"$d/$1-mon.out" | grep -q '^Migration status: completed' ||
		{ tr -d '\r' <"$d/$1-mon.out" | tail -n 20 >&2; fail "$1: the migration to a file did not complete"; }
	! grep -q '^resumed' "$d/$1-boot.out" || fail "$1: the source VM resumed before it was migrated"
}

# qemu: the migration stream holds RAM and devices; a restore reads it all (7.2 has
# no file: migration, so through cat and a pipe).
qemu_golden qemu "" ""
mig_bytes=$(stat -c %s "$d/qemu.mig")
plain_ms=$mig_ms
# qemu-mapped: QEMU at its fastest, as ember maps its memory file: guest RAM is a file
# the source maps shared, left out of the stream (x-ignore-shared), which then holds
# device state only; a restore maps the file privately (copy-on-write, the file stays
# the snapshot) and sets the capability through a monitor that reads a plain file.
mapped_ram="-object memory-backend-file,id=ram,size=${MEM}M,mem-path=$d/qemu-mapped.ram"
qemu_golden qemu-mapped "$mapped_ram,share=on -machine memory-backend=ram" \
	"migrate_set_capability x-ignore-shared on
"
mapped_bytes=$(stat -c %s "$d/qemu-mapped.mig")
mapped_ms=$mig_ms
printf 'migrate_set_capability x-ignore-shared on\nmigrate_incoming "exec:cat %s"\n' \
	"$d/qemu-mapped.mig" >"$d/restore-mon.in"
: >"$d/restore-mon.out"
MAPPED="$mapped_ram,share=off -machine memory-backend=ram -incoming defer
	-chardev pipe,id=mon,path=$d/restore-mon -mon chardev=mon,mode=readline"

# -append's value has spaces: the restores get it in "$@"
set -- -kernel "$GUESTS/sandbox.elf" -append "$CMDLINE"
# One restore of each must resume at the ready point: "resumed", then the guest ends
# the VM through isa-debug-exit (status 1 = code 0).
for v in qemu qemu-mapped; do
	st=0
	if [ "$v" = qemu ]; then
		# shellcheck disable=SC2086
		timeout 60 "$QEMU" $QARGS -serial "file:$d/$v-verify.out" -incoming "exec:cat $d/qemu.mig" \
			"$@" </dev/null 2>"$d/err" || st=$?
	else
		# shellcheck disable=SC2086
		timeout 60 "$QEMU" $QARGS $MAPPED -serial "file:$d/$v-verify.out" "$@" </dev/null \
			2>"$d/err" || st=$?
	fi
	if [ "$st" != 1 ] || [ "$(head -n 1 "$d/$v-verify.out")" != resumed ]; then
		cat "$d/err" "$d/$v-verify.out" >&2
		fail "$v: QEMU's restore did not resume the sandbox (exit $st)"
	fi
done

# ---- runs ------------------------------------------------------------------------------

echo
echo "qemu: $VERSION, -M $MACHINE -cpu $CPU; sandbox $CMDLINE, ${MEM} MiB RAM; every file in the page cache"
echo "ember snapshot: $(($(stat -c '%b * %B' "$d/ember-golden/memory.raw") / 1048576)) MiB of memory.raw allocated;"
echo "qemu: migration file $((mig_bytes / 1048576)) MiB (stop + migrate $plain_ms ms);"
echo "qemu-mapped: RAM file $(($(stat -c '%b * %B' "$d/qemu-mapped.ram") / 1048576)) MiB allocated + migration file $((mapped_bytes / 1024)) KiB (stop + migrate $mapped_ms ms)"

# shellcheck disable=SC2086
"$H" -n "$BOOT_RUNS" -w 2 --baseline ember --json "$d/boot.json" --tsv "$d/boot.tsv" \
	--only serial- --title "qemu: boot, hello.elf, spawn -> first serial line, QEMU microvm (PVH) vs ember" -- \
	ember "$SF" --expect "hello from ember guest" -- "$EMBER" boot --kernel "$GUESTS/hello.elf" \
		--timings :: \
	qemu "$SF" --expect "hello from ember guest" -- "$QEMU" $QARGS -kernel "$GUESTS/hello.elf" \
		-serial stdio

# shellcheck disable=SC2086
"$H" -n "$RUNS" -w 3 --baseline ember --json "$d/restore.json" --tsv "$d/restore.tsv" \
	--only serial- --only first-report --only resumed \
	--title "qemu: restore, sandbox heap=${HEAP}M (mem ${MEM}M), spawn -> the first serial line after resuming, ember restore vs QEMU -incoming" -- \
	ember "$SF" --expect resumed -- "$EMBER" restore --snapshot "$d/ember-golden" \
		--guest-cmd exit --timings :: \
	qemu "$SF" --expect resumed -- "$QEMU" $QARGS -serial stdio -incoming "exec:cat $d/qemu.mig" \
		"$@" :: \
	qemu-mapped "$SF" --expect resumed -- "$QEMU" $QARGS $MAPPED -serial stdio "$@"

# ---- summary and target ------------------------------------------------------------------

# the numbers as "key<TAB>value" lines (empty: null) in $d/summary.tsv; jq writes the JSON
awk -F'\t' -v json="$d/summary.tsv" -v target="$TARGET" '
function ms(x) { return x == "" ? "-" : sprintf("%.2f", x / 1000) }
function jn(x) { return x == "" ? "" : sprintf("%.1f", x) }
function rx(a, b) { return (a == "" || b == "" || b == 0) ? "" : a / b }
function fx(r) { return r == "" ? "-" : sprintf("%.1fx", r) }
function jr(r) { return r == "" ? "" : sprintf("%.2f", r) }
function out(k, v) { printf "%s\t%s\n", k, v >> json }
function cell(k, c, m) { return ms(med[k, c, m]) " (" ms(p99[k, c, m]) ")" }
FILENAME ~ /boot\.tsv$/ { k = "boot" } FILENAME ~ /restore\.tsv$/ { k = "restore" }
{ med[k, $1, $2] = $5; p99[k, $1, $2] = $6 }
END {
	L = "serial-first-line"
	el = med["restore", "ember", L]; ql = med["restore", "qemu", L]; ml = med["restore", "qemu-mapped", L]
	er = med["restore", "ember", "first-report"]
	qb = med["restore", "qemu", "serial-first-byte"]; mb = med["restore", "qemu-mapped", "serial-first-byte"]
	eb = med["boot", "ember", L]; qbl = med["boot", "qemu", L]
	r_line = rx(ql, el); r_mline = rx(ml, el); r_report = rx(qb, er); r_mreport = rx(mb, er); r_boot = rx(qbl, eb)
	print ""
	print "### qemu: summary, ember vs QEMU microvm (ms, median (p99))"
	print ""
	print "| event | ember | qemu | qemu/ember | qemu-mapped | qemu-mapped/ember |"
	print "|---|---:|---:|---:|---:|---:|"
	printf "| restore: spawn -> \"resumed\" line on the console | %s | %s | %s | %s | %s |\n", cell("restore", "ember", L),
		cell("restore", "qemu", L), fx(r_line), cell("restore", "qemu-mapped", L), fx(r_mline)
	printf "| restore: spawn -> the guest'"'"'s first output (ember: first-report, its first port write; QEMU: first console byte) | %s | %s | %s | %s | %s |\n",
		cell("restore", "ember", "first-report"), cell("restore", "qemu", "serial-first-byte"), fx(r_report),
		cell("restore", "qemu-mapped", "serial-first-byte"), fx(r_mreport)
	printf "| cold boot of hello.elf: spawn -> first console line | %s | %s | %s | - | - |\n", cell("boot", "ember", L),
		cell("boot", "qemu", L), fx(r_boot)
	print ""
	print "qemu = restore from a migration file (RAM in the stream); qemu-mapped = guest RAM mapped privately"
	print "from a file, the stream holding device state only (x-ignore-shared): QEMU'"'"'s fastest restore."
	print ""
	ok = r_line == "" ? "not measured" : r_line >= target ? "ok" : "**MISSED**"
	printf "- first response >= %dx faster than QEMU restore: %s (%s: %.2f ms vs %.2f ms, the \"resumed\" line on both; against qemu-mapped %s)\n",
		target, ok, fx(r_line), el / 1000, ql / 1000, fx(r_mline)
	printf "" > json
	out("el", jn(el)); out("el99", jn(p99["restore", "ember", L])); out("ql", jn(ql))
	out("ql99", jn(p99["restore", "qemu", L])); out("ml", jn(ml))
	out("ml99", jn(p99["restore", "qemu-mapped", L])); out("er", jn(er)); out("qb", jn(qb))
	out("mb", jn(mb)); out("eb", jn(eb)); out("qbl", jn(qbl)); out("r_line", jr(r_line))
	out("r_mline", jr(r_mline)); out("r_report", jr(r_report)); out("r_mreport", jr(r_mreport))
	out("r_boot", jr(r_boot)); out("met", r_line == "" ? "" : r_line >= target ? 1 : 0)
}' "$d/boot.tsv" "$d/restore.tsv"
jq -R -n --arg qemu "$VERSION" --arg machine "$MACHINE" --arg cpu "$CPU" \
	--argjson heap "$HEAP" --argjson mem "$MEM" --argjson migb "$mig_bytes" \
	--argjson migms "$plain_ms" --argjson mapb "$mapped_bytes" --argjson mapms "$mapped_ms" \
	--argjson target "$TARGET" --slurpfile boot "$d/boot.json" \
	--slurpfile restore "$d/restore.json" '
	(reduce (inputs | split("\t")) as $r ({};
		.[$r[0]] = (if $r[1] == "" then null else $r[1] | tonumber end))) as $v
	| {qemu: $qemu, machine: $machine, cpu: $cpu, heap_mib: $heap, mem_mib: $mem,
	   migration_bytes: $migb, migration_ms: $migms, mapped_migration_bytes: $mapb,
	   mapped_migration_ms: $mapms,
	   restore_first_line_us: {ember: $v.el, ember_p99: $v.el99, qemu: $v.ql,
	     qemu_p99: $v.ql99, qemu_mapped: $v.ml, qemu_mapped_p99: $v.ml99},
	   restore_first_output_us: {ember_first_report: $v.er, qemu_first_byte: $v.qb,
	     qemu_mapped_first_byte: $v.mb},
	   boot_first_line_us: {ember: $v.eb, qemu: $v.qbl},
	   ratio_restore_first_line: $v.r_line, ratio_restore_first_line_mapped: $v.r_mline,
	   ratio_restore_first_output: $v.r_report,
	   ratio_restore_first_output_mapped: $v.r_mreport, ratio_boot: $v.r_boot,
	   target_ratio: $target, target_met: (if $v.met == null then null else $v.met == 1 end),
	   boot: $boot[0], restore: $restore[0]}' "$d/summary.tsv" >"$JSON"
