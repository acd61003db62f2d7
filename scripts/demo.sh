#!/bin/sh
# make demo: the golden-snapshot workflow on the sandbox guest.
#   1. boot the sandbox (heap=64M), let it initialise, snapshot it when it signals ready;
#   2. restore that golden snapshot N times, each clone verifying its heap checksum;
#   3. print boot-to-ready, snapshot time and size, restore p50/p99 and every clone's
#      checksum and generation.
set -eu
B=${EMBER_BUILD:-build}
EMBER=$B/ember
SNAP=$B/ember-snap
GUEST=$B/guests/sandbox.elf
CLONES=${DEMO_CLONES:-10}
HEAP=${DEMO_HEAP:-64M}
[ -c /dev/kvm ] || { echo "demo: /dev/kvm is missing: ember needs KVM" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
golden=$work/golden

timing() { awk -v p="$2" '$1=="ember-timing" && $2==p {print $3}' "$1"; }

echo "== 1. boot the sandbox (heap=$HEAP) and take the golden snapshot when it is ready"
echo "   $EMBER boot --kernel $GUEST --cmdline 'heap=$HEAP seed=42' --snapshot-on-ready DIR --exit-after-snapshot"
"$EMBER" boot --kernel "$GUEST" --cmdline "heap=$HEAP seed=42" --mem 256 --timings \
	--snapshot-on-ready "$golden" --exit-after-snapshot >"$work/boot.out" 2>"$work/boot.err" ||
	{ cat "$work/boot.out" "$work/boot.err"; exit 1; }
sed 's/^/   guest| /' "$work/boot.out"
golden_sum=$(grep -o 'checksum=[0-9a-f]*' "$work/boot.out" | head -1)
ready=$(timing "$work/boot.err" ready)
snap_us=$(sed -n 's/.*ember-snapshot .*us_total=\([0-9]*\).*/\1/p' "$work/boot.err")
"$SNAP" verify "$golden" >/dev/null
snap_disk=$(du -sk "$golden" | cut -f1)

echo "== 2. restore it $CLONES times: each clone runs 'verify', 'generation', 'exit'"
i=1
: >"$work/clones"
while [ "$i" -le "$CLONES" ]; do
	"$EMBER" restore --snapshot "$golden" --timings --guest-cmd verify \
		--guest-cmd generation --guest-cmd exit >"$work/c.out" 2>"$work/c.err" ||
		{ cat "$work/c.out" "$work/c.err"; exit 1; }
	sum=$(grep -o 'checksum=[0-9a-f]*' "$work/c.out" | head -1)
	gen=$(grep -o 'generation=[0-9a-f]*' "$work/c.out" | head -1)
	echo "$i $(timing "$work/c.err" resumed) $(timing "$work/c.err" first-report) $sum $gen" \
		>>"$work/clones"
	i=$((i + 1))
done

stat_of() { # column -> "p50 p99"
	cut -d' ' -f"$1" "$work/clones" | sort -n | awk '{v[NR]=$1} END {
		p50=v[int((NR+1)/2)]; i=int(NR*0.99+0.999); if (i<1) i=1; if (i>NR) i=NR;
		printf "%d %d", p50, v[i] }'
}
resumed=$(stat_of 2)
first=$(stat_of 3)

echo
echo "== results"
printf '| %-44s | %s |\n' "what" "value"
printf '|%s|%s|\n' "----------------------------------------------" "------------------------"
printf '| %-44s | %s us |\n' "cold boot: process start -> ready" "$ready"
printf '| %-44s | %s us |\n' "golden snapshot (state + 64M heap, fsync)" "$snap_us"
printf '| %-44s | %s KiB on disk |\n' "golden snapshot size" "$snap_disk"
printf '| %-44s | p50 %s us, p99 %s us |\n' "restore: process start -> guest running" \
	"${resumed% *}" "${resumed#* }"
printf '| %-44s | p50 %s us, p99 %s us |\n' "restore: process start -> first guest report" \
	"${first% *}" "${first#* }"
printf '| %-44s | %s |\n' "golden checksum" "$golden_sum"
echo
echo "| clone | resumed (us) | first report (us) | checksum | matches | generation |"
echo "|-------|--------------|-------------------|----------|---------|------------|"
bad=0
while read -r n res fr sum gen; do
	ok=yes
	[ "$sum" = "$golden_sum" ] || { ok=NO; bad=1; }
	echo "| $n | $res | $fr | ${sum#checksum=} | $ok | ${gen#generation=} |"
done <"$work/clones"
gens=$(cut -d' ' -f5 "$work/clones" | sort -u | wc -l)
[ "$gens" -eq "$CLONES" ] || { echo "demo: clones share a generation value!" >&2; bad=1; }
[ "$bad" -eq 0 ] || { echo "demo: a clone differs from the golden snapshot" >&2; exit 1; }
echo
echo "every clone printed the golden checksum; every clone saw its own generation."
