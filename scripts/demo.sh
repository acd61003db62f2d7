#!/bin/sh
# make demo: boot the sandbox guest (heap=64M) to ready and show what it took.
set -eu
B=${EMBER_BUILD:-build}
EMBER=$B/ember
GUEST=$B/guests/sandbox.elf
[ -c /dev/kvm ] || { echo "demo: /dev/kvm is missing: ember needs KVM" >&2; exit 1; }

out=$(mktemp); err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
echo "== ember boot --kernel $GUEST --cmdline 'heap=64M seed=42' --mem 256 --timings --guest-cmd verify"
"$EMBER" boot --kernel "$GUEST" --cmdline "heap=64M seed=42" --mem 256 --timings \
	--guest-cmd verify >"$out" 2>"$err" || { cat "$out" "$err"; exit 1; }
sed 's/^/   guest| /' "$out"
ready=$(awk '$1=="ember-timing" && $2=="ready" {print $3}' "$err")
first=$(awk '$1=="ember-timing" && $2=="first-entry" {print $3}' "$err")
sums=$(grep -o 'checksum=[0-9a-f]*' "$out" | sort -u)
echo
printf '%-34s %s\n' "process start -> first guest entry" "${first:-?} us"
printf '%-34s %s\n' "process start -> ready (heap built)" "${ready:-?} us"
printf '%-34s %s\n' "heap checksum (boot, verify)" "$(echo "$sums" | tr '\n' ' ')"
[ "$(echo "$sums" | wc -l)" -eq 1 ] || { echo "demo: verify checksum differs!" >&2; exit 1; }
