#!/bin/sh
# make demo: the golden-snapshot workflow.
#   1. boot the sandbox (heap=64M), let it initialise, snapshot it when it signals ready;
#   2. restore that golden snapshot N times at once, each clone verifying its heap
#      checksum;
#   3. print boot-to-ready, snapshot time and size, restore p50/p99 and every clone's
#      checksum and generation;
#   4. the invocation channel: boot the fn guest with a vsock device, snapshot it at
#      ready, restore it, and invoke its function over vsock (ember invoke);
#   5. warm start: an ember pool of standby VMs of that snapshot, reset in place after
#      every invocation; 1000 invocations through it, and the latency table.
# Every ember command is printed as it is run ("   $ ..."), its arguments quoted for sh.
# The snapshots, outputs and logs stay in DEMO_DIR (default $EMBER_BUILD/demo), emptied
# at the start of each run; the demo says so at the end.
set -eu
B=${EMBER_BUILD:-build}
EMBER=$B/ember
SNAP=$B/ember-snap
GUEST=$B/guests/sandbox.elf
CLONES=${DEMO_CLONES:-10}
HEAP=${DEMO_HEAP:-64M}
[ -c /dev/kvm ] || { echo "demo: /dev/kvm is missing: ember needs KVM" >&2; exit 1; }

work=${DEMO_DIR:-$B/demo}
# emptied only when it is the demo's own (its marker file) or absent
if [ -e "$work" ] && [ ! -f "$work/.ember-demo" ]; then
	echo "demo: $work exists and is not a demo directory (no .ember-demo): not touching it" >&2
	exit 1
fi
rm -rf "$work"
mkdir -p "$work"
: >"$work/.ember-demo"
golden=$work/golden

# Prints a command as sh would read it back: "   $ cmd 'arg' ...".
show() {
	printf '   $'
	for a; do
		case $a in
		'&') printf ' &' ;; # the command runs in the background
		*[!A-Za-z0-9_./=:,+-]* | '') printf " '%s'" "$(printf '%s' "$a" | sed "s/'/'\\\\''/g")" ;;
		*) printf ' %s' "$a" ;;
		esac
	done
	printf '\n'
}

timing() { awk -v p="$2" '$1=="ember-timing" && $2==p {print $3}' "$1"; }

echo "== 1. boot the sandbox (heap=$HEAP) and take the golden snapshot when it is ready"
set -- "$EMBER" boot --kernel "$GUEST" --cmdline "heap=$HEAP seed=42" --mem 256 --timings \
	--snapshot-on-ready "$golden" --exit-after-snapshot
show "$@"
"$@" >"$work/boot.out" 2>"$work/boot.err" || { cat "$work/boot.out" "$work/boot.err"; exit 1; }
sed 's/^/   guest| /' "$work/boot.out"
golden_sum=$(grep -o 'checksum=[0-9a-f]*' "$work/boot.out" | head -1)
ready=$(timing "$work/boot.err" ready)
snap_us=$(sed -n 's/.*ember-snapshot .*us_total=\([0-9]*\).*/\1/p' "$work/boot.err")
show "$SNAP" verify "$golden"
"$SNAP" verify "$golden" >/dev/null
snap_disk=$(du -sk "$golden" | cut -f1)

echo "== 2. restore it $CLONES times at once: each clone runs 'verify', 'generation', 'exit'"
set -- "$EMBER" restore --snapshot "$golden" --timings --guest-cmd verify \
	--guest-cmd generation --guest-cmd exit
show "$@"
echo "   ($CLONES of these started together, in the background, before waiting for any)"
i=1
pids=""
while [ "$i" -le "$CLONES" ]; do
	"$@" >"$work/c$i.out" 2>"$work/c$i.err" &
	pids="$pids $!"
	i=$((i + 1))
done
for p in $pids; do
	wait "$p" || { echo "demo: a clone failed" >&2; cat "$work"/c*.err >&2; exit 1; }
done
: >"$work/clones"
i=1
while [ "$i" -le "$CLONES" ]; do
	sum=$(grep -o 'checksum=[0-9a-f]*' "$work/c$i.out" | head -1)
	gen=$(grep -o 'generation=[0-9a-f]*' "$work/c$i.out" | head -1)
	echo "$i $(timing "$work/c$i.err" resumed) $(timing "$work/c$i.err" first-report) $sum $gen" \
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
printf '| %-44s | p50 %s us, p99 %s us |\n' "$CLONES at once on $(nproc) CPUs: start -> running" \
	"${resumed% *}" "${resumed#* }"
printf '| %-44s | p50 %s us, p99 %s us |\n' "$CLONES at once: start -> first port write" \
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

echo
echo "== 4. the invocation channel: a function guest served over vsock"
FN=$B/guests/fn.elf
set -- "$EMBER" boot --kernel "$FN" --cmdline "heap=16M seed=7" --mem 128 --vsock-cid 3 \
	--vsock-uds "$work/fn-boot.sock" --snapshot-on-ready "$work/fn-golden" --exit-after-snapshot
show "$@"
"$@" >"$work/fn-boot.out" 2>"$work/fn-boot.err" || { cat "$work/fn-boot.out" "$work/fn-boot.err"; exit 1; }
sed 's/^/   guest| /' "$work/fn-boot.out"
set -- "$EMBER" restore --snapshot "$work/fn-golden" --vsock-uds "$work/clone.sock" --timings
show "$@" "&"
"$@" >"$work/fn-clone.out" 2>"$work/fn-clone.err" &
clone=$!
# the clone's socket appears once it is restored; ember invoke retries nothing, so wait
n=0
while [ ! -S "$work/clone.sock" ] && [ "$n" -lt 500 ]; do sleep 0.01; n=$((n + 1)); done
printf 'hello from the ember demo' >"$work/payload"
show "$EMBER" invoke --vsock-uds "$work/clone.sock" --port 5000 --payload "$work/payload" \
	--request-id K --timings
echo "   (three times, K = 1, 2, 3)"
for k in 1 2 3; do
	"$EMBER" invoke --vsock-uds "$work/clone.sock" --port 5000 --payload "$work/payload" \
		--request-id "$k" --timings >"$work/resp$k" 2>"$work/inv$k.err" ||
		{ cat "$work/inv$k.err" "$work/fn-clone.err"; kill "$clone"; exit 1; }
done
kill "$clone"
wait "$clone" 2>/dev/null || true
field() { sed -n "s/.*ember-invoke .*$2=\([0-9]*\).*/\1/p" "$1"; }
echo
printf '| %-44s | %s |\n' "what" "value"
printf '|%s|%s|\n' "----------------------------------------------" "------------------------"
printf '| %-44s | %s us |\n' "clone: process start -> guest running" "$(timing "$work/fn-clone.err" resumed)"
for k in 1 2 3; do
	printf '| %-44s | connect %s us, response %s us |\n' "invocation $k (25 B -> $(wc -c <"$work/resp$k") B)" \
		"$(field "$work/inv$k.err" connect_us)" "$(field "$work/inv$k.err" response_us)"
done
echo
echo "the function's answer (8-byte digest of the heap pages it read, then the payload"
echo "XORed with the restored heap), as hex:"
od -A n -t x1 "$work/resp1" | head -3 | sed 's/^/  /'
[ "$(wc -c <"$work/resp1")" -eq 33 ] || { echo "demo: the response is not 8 + 25 bytes" >&2; exit 1; }
cmp -s "$work/resp1" "$work/resp2" || { echo "demo: two invocations of the same payload differ" >&2; exit 1; }
echo "the same payload gets the same answer every time: the clone's heap is the golden one."

echo
echo "== 5. warm start: ember pool keeps standby VMs of the fn snapshot, one process each,"
echo "   and resets a VM in place after every invocation"
POOL_SIZE=${DEMO_POOL_SIZE:-3}
POOL_N=${DEMO_POOL_N:-1000}
set -- "$EMBER" pool --snapshot "$work/fn-golden" --socket "$work/pool.sock" --size "$POOL_SIZE"
show "$@" "&"
"$@" 2>"$work/pool.err" &
pool=$!
n=0
until "$EMBER" pool status --socket "$work/pool.sock" 2>/dev/null | grep -q "^idle: $POOL_SIZE\$"; do
	n=$((n + 1))
	[ "$n" -lt 1500 ] || { echo "demo: the pool never became ready" >&2; cat "$work/pool.err" >&2; kill "$pool"; exit 1; }
	sleep 0.02
done
set -- "$EMBER" invoke --pool "$work/pool.sock" --payload "$work/payload"
show "$@"
"$@" >"$work/pool-resp" ||
	{ cat "$work/pool.err" >&2; kill "$pool"; exit 1; }
cmp -s "$work/pool-resp" "$work/resp1" ||
	{ echo "demo: the pool's answer differs from the clone's" >&2; kill "$pool"; exit 1; }
echo "   the pool's answer equals the clone's: every VM in it is the golden snapshot"
echo "   $POOL_N invocations, 1 KiB random payloads, one client (bench/pool_load):"
set -- "$B/bench/pool_load" --pool "$work/pool.sock" --n "$POOL_N" --concurrency 1
show "$@"
"$@" >"$work/load.out" ||
	{ cat "$work/pool.err" >&2; kill "$pool"; exit 1; }
"$EMBER" pool status --socket "$work/pool.sock" >"$work/pool-status"
kill -TERM "$pool"
wait "$pool" || { echo "demo: the pool did not stop cleanly" >&2; cat "$work/pool.err" >&2; exit 1; }
lf() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" "$work/load.out"; }
sf() { sed -n "s/^$1: //p" "$work/pool-status"; }
echo
printf '| %-44s | %s |\n' "pool, $POOL_N invocations (client -> response)" "value"
printf '|%s|%s|\n' "----------------------------------------------" "------------------------"
printf '| %-44s | %s of %s |\n' "answered OK (status and size checked)" "$(lf ok)" "$POOL_N"
printf '| %-44s | %s us |\n' "p50" "$(lf p50_us)"
printf '| %-44s | %s us |\n' "p90" "$(lf p90_us)"
printf '| %-44s | %s us |\n' "p99" "$(lf p99_us)"
printf '| %-44s | %s us |\n' "max" "$(lf max_us)"
printf '| %-44s | %s /s |\n' "invocations per second (one client)" "$(lf inv_per_s)"
printf '| %-44s | %s (p50 %s us, p99 %s us) |\n' "in-place resets" "$(sf resets)" \
	"$(sf reset_us_p50)" "$(sf reset_us_p99)"
printf '| %-44s | %s |\n' "VM processes started / crashed" "$(sf spawned) / $(sf crashes)"
[ "$(lf ok)" = "$POOL_N" ] || { echo "demo: not every invocation succeeded" >&2; exit 1; }
echo
echo "kept in $work: the golden snapshots golden/ and fn-golden/ (try"
echo "$SNAP info $golden), every command's output and log; the next make demo empties it."
