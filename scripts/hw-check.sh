#!/bin/sh
# hw-check: the Linux guest kit end to end, on a machine with hardware KVM.
#
# Boots the kit (make linux-guest) with the ember-probe handler, takes a golden snapshot
# when the agent signals ready, then restores it N times in each mode:
#   fresh    a new `ember restore` process per clone
#   standby  `ember restore --standby`, then `ember ctl resume`, per clone
#   reset    one restored VM, `ember ctl reset` before each invocation
# invokes each clone once and checks:
#   response  `ember invoke` answered OK and the probe echoed this clone's payload
#   clock     the guest's CLOCK_MONOTONIC since ready is within [0, host time since the
#             restore + 1 s]: no jump by the time the snapshot waited
#   console   no soft-lockup, RCU-stall, hung-task or BUG lines on the guest's console
#   rng       every clone's getrandom() output differs (the agent re-seeds)
# and prints a pass/fail table. Exits 0 only when every check passed, 1 otherwise, 2 on
# a usage error. Needs root (ember opens /dev/kvm) and hardware KVM: on a KVM that
# emulates ring 0 (the CI machines' kvm_pvm, PLATFORM.md) Linux cannot boot, and the
# script says so and fails unless --force.
#
#   scripts/hw-check.sh [--clones N] [--modes fresh,standby,reset] [--build DIR]
#                       [--mem MIB] [--boot-timeout SEC] [--keep] [--force] [--dry-run]
set -eu

clones=100
modes=fresh,standby,reset
build=${EMBER_BUILD:-build}
mem=256
boot_timeout=120
keep=0
force=0
dry_run=0
port=5000
slack_ns=1000000000 # clock check: host-side latency the guest's clock may not show

usage() {
	sed -n '2,/^set -eu/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

usage_error() {
	echo "hw-check: $*" >&2
	echo "Try 'scripts/hw-check.sh --help'." >&2
	exit 2
}

is_count() {
	case $1 in '' | *[!0-9]*) return 1 ;; esac
	[ "$1" -ge 1 ] && [ "$1" -le 100000 ]
}

while [ $# -gt 0 ]; do
	case $1 in
	--clones | --modes | --build | --mem | --boot-timeout)
		[ $# -ge 2 ] || usage_error "$1 needs a value"
		opt=$1 val=$2
		shift 2
		case $opt in
		--clones) is_count "$val" || usage_error "--clones $val: not a number 1..100000"
			clones=$val ;;
		--modes) modes=$val ;;
		--build) build=$val ;;
		--mem) is_count "$val" || usage_error "--mem $val: not a number of MiB"
			mem=$val ;;
		--boot-timeout) is_count "$val" || usage_error "--boot-timeout $val: not a number of seconds"
			boot_timeout=$val ;;
		esac
		;;
	--keep) keep=1; shift ;;
	--force) force=1; shift ;;
	--dry-run) dry_run=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage_error "unknown argument '$1'" ;;
	esac
done
mode_list=$(echo "$modes" | tr , ' ')
[ -n "$mode_list" ] || usage_error "--modes is empty"
for m in $mode_list; do
	case $m in fresh | standby | reset) ;; *) usage_error "--modes: unknown mode '$m' (fresh, standby, reset)" ;; esac
done

ember=$build/ember
kernel=$build/linux-guest/vmlinux
initrd=$build/linux-guest/initramfs.cpio

# ---- the result table ---------------------------------------------------------------
# one line per row in $table: "MODE CHECK PASSED TOTAL NOTE"
table=$(mktemp "${TMPDIR:-/tmp}/hw-check-table.XXXXXX")
work=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	rc=$?
	if [ -n "$work" ]; then
		# every ember this script started has its command line under $work
		for pidfile in "$work"/*.pid; do
			if [ -f "$pidfile" ]; then
				kill -KILL "$(cat "$pidfile")" 2>/dev/null || true
			fi
		done
		if [ "$keep" = 1 ]; then
			echo "hw-check: kept $work" >&2
		else
			rm -rf "$work"
		fi
	fi
	rm -f "$table"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

row() { # row MODE CHECK PASSED TOTAL [NOTE...]
	r_mode=$1 r_check=$2 r_pass=$3 r_total=$4
	shift 4
	echo "$r_mode $r_check $r_pass $r_total ${*:-}" >>"$table"
}

print_table() {
	failed=0
	printf '\n%-9s %-10s %-9s %-6s %s\n' MODE CHECK PASSED RESULT NOTE
	while read -r t_mode t_check t_pass t_total t_note; do
		if [ "$t_total" = - ]; then
			res=SKIP
		elif [ "$t_pass" = "$t_total" ] && [ "$t_total" -gt 0 ]; then
			res=PASS
		else
			res=FAIL
			failed=1
		fi
		if [ "$res" = SKIP ]; then t_count=-; else t_count=$t_pass/$t_total; fi
		printf '%-9s %-10s %-9s %-6s %s\n' "$t_mode" "$t_check" "$t_count" "$res" "$t_note"
	done <"$table"
	echo
	if [ "$dry_run" = 1 ]; then
		echo "hw-check: dry run: nothing was booted"
		return 0
	fi
	if [ "$failed" = 1 ]; then
		echo "hw-check: FAIL"
		return 1
	fi
	echo "hw-check: PASS"
	return 0
}

# finish: print the table and exit with its verdict
finish() {
	if print_table; then exit 0; else exit 1; fi
}

# ---- preflight ----------------------------------------------------------------------
kvm_note=
kvm_ok=1
if [ ! -c /dev/kvm ]; then
	kvm_ok=0
	kvm_note="no /dev/kvm"
elif [ -d /sys/module/kvm_pvm ]; then
	kvm_ok=0
	kvm_note="software KVM (kvm_pvm): guest ring 0 is emulated, a Linux kernel cannot boot here (PLATFORM.md)"
elif [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; then
	kvm_note="hardware KVM ($(for k in kvm_intel kvm_amd; do [ -d /sys/module/$k ] && echo $k; done))"
else
	kvm_note="unknown KVM backend (no kvm_intel/kvm_amd module): trying"
fi
echo "hw-check: /dev/kvm: $kvm_note" >&2
if [ "$kvm_ok" = 1 ]; then row preflight kvm 1 1 "$kvm_note"; else row preflight kvm 0 1 "$kvm_note"; fi

missing=
for f in "$ember" "$kernel" "$initrd"; do
	[ -s "$f" ] || missing="$missing $f"
done
if [ -n "$missing" ]; then
	row preflight files 0 1 "missing:$missing (run: make all linux-guest)"
else
	row preflight files 1 1 "$kernel $initrd"
fi

cmdline="console=ttyS0 ember.handler=/bin/ember-probe ember.port=$port"
if [ "$dry_run" = 1 ]; then
	echo "hw-check: would boot: $ember boot --kernel $kernel --initrd $initrd --mem $mem" \
		"--cmdline '$cmdline' --vsock-cid 3 --vsock-uds WORK/boot.vsock" \
		"--snapshot-on-ready WORK/golden --exit-after-snapshot --timeout $boot_timeout" >&2
	for m in $mode_list; do
		echo "hw-check: would run $clones $m clones, one invocation each" >&2
		for c in response clock console rng; do
			row "$m" "$c" 0 - "dry run"
		done
	done
	finish
fi
if [ -n "$missing" ]; then
	finish
fi
if [ "$kvm_ok" = 0 ] && [ "$force" = 0 ]; then
	echo "hw-check: this machine cannot boot Linux in ember: $kvm_note." >&2
	echo "hw-check: run it on a host with hardware KVM (or pass --force to try anyway)." >&2
	finish
fi

# ---- boot and golden snapshot -------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/hw-check.XXXXXX")
golden=$work/golden
echo "hw-check: booting the kit (timeout ${boot_timeout}s), work directory $work" >&2
boot_rc=0
"$ember" boot --kernel "$kernel" --initrd "$initrd" --mem "$mem" --cmdline "$cmdline" \
	--vsock-cid 3 --vsock-uds "$work/boot.vsock" --snapshot-on-ready "$golden" \
	--exit-after-snapshot --timeout "$boot_timeout" --console "file:$work/boot.console" \
	--timings 2>"$work/boot.err" || boot_rc=$?
ready_mono=$(sed -n 's/.*ember-agent: ready .*mono_ns=\([0-9]\{1,19\}\) .*/\1/p' "$work/boot.console" 2>/dev/null | head -n 1)
if [ "$boot_rc" != 0 ] || [ ! -d "$golden" ] || [ -z "$ready_mono" ]; then
	row boot golden 0 1 "ember boot exited $boot_rc; ready line: ${ready_mono:-none} (see $work/boot.err, $work/boot.console)"
	keep=1
	finish
fi
row boot golden 1 1 "ready at guest mono_ns=$ready_mono"

# ---- clones -------------------------------------------------------------------------
now_ns() { date +%s%N; }

# wait_socket PATH: until a Unix socket exists there, up to 10 s
wait_socket() {
	n=0
	while [ ! -S "$1" ]; do
		n=$((n + 1))
		[ "$n" -le 1000 ] || return 1
		sleep 0.01
	done
}

ctl() { # ctl SOCK VERB...
	c_sock=$1
	shift
	"$ember" ctl --api-sock "$c_sock" --timeout 10 "$@" >/dev/null 2>>"$work/ctl.err"
}

# check MODE I OUT HOST_ELAPSED_NS INVOKE_RC: one invocation's response and clock
check() {
	c_mode=$1 c_i=$2 c_out=$3 c_host=$4 c_rc=$5
	if [ "$c_rc" = 0 ] && [ "$(sed -n 's/^payload=//p' "$c_out")" = "clone-$c_i" ]; then
		ok_resp=$((ok_resp + 1))
	else
		echo "hw-check: $c_mode clone $c_i: invoke exited $c_rc, response: $(head -c 200 "$c_out" | tr -c '[:print:]' '.')" >&2
	fi
	mono=$(sed -n 's/^mono_ns=\([0-9]\{1,19\}\)$/\1/p' "$c_out" | head -n 1)
	if [ -z "$mono" ]; then
		echo "hw-check: $c_mode clone $c_i: no mono_ns= line in the response" >&2
	else
		el=$((mono - ready_mono))
		if [ "$el" -ge 0 ] && [ "$el" -le $((c_host + slack_ns)) ]; then
			ok_clock=$((ok_clock + 1))
		else
			echo "hw-check: $c_mode clone $c_i: guest clock moved ${el} ns since ready, host ${c_host} ns since the restore" >&2
		fi
	fi
	sed -n 's/^rng=//p' "$c_out" >>"$work/$c_mode.rng"
}

run_mode() {
	m=$1
	# per-clone file names: f1.*, s1.*; the reset mode's one VM: reset.*
	case $m in fresh) p=f ;; standby) p=s ;; reset) p=reset ;; esac
	ok_resp=0 ok_clock=0
	: >"$work/$m.rng"
	if [ "$m" = reset ]; then
		sock=$work/reset.ctl vs=$work/reset.vsock
		t0=$(now_ns)
		"$ember" restore --snapshot "$golden" --api-sock "$sock" --vsock-uds "$vs" \
			--console "file:$work/reset.console" 2>"$work/reset.err" &
		echo $! >"$work/reset.pid"
		wait_socket "$vs" || echo "hw-check: reset: no vsock socket" >&2
	fi
	i=1
	while [ "$i" -le "$clones" ]; do
		case $m in
		fresh)
			sock=$work/f$i.ctl vs=$work/f$i.vsock
			t0=$(now_ns)
			"$ember" restore --snapshot "$golden" --api-sock "$sock" --vsock-uds "$vs" \
				--console "file:$work/f$i.console" 2>"$work/f$i.err" &
			echo $! >"$work/f$i.pid"
			wait_socket "$vs" || true
			;;
		standby)
			sock=$work/s$i.ctl vs=$work/s$i.vsock
			"$ember" restore --snapshot "$golden" --standby --api-sock "$sock" \
				--vsock-uds "$vs" --console "file:$work/s$i.console" 2>"$work/s$i.err" &
			echo $! >"$work/s$i.pid"
			wait_socket "$sock" || true
			t0=$(now_ns)
			ctl "$sock" resume || echo "hw-check: standby clone $i: resume failed" >&2
			;;
		reset)
			if [ "$i" -gt 1 ]; then
				t0=$(now_ns)
				ctl "$sock" reset || echo "hw-check: reset $i failed" >&2
			fi
			;;
		esac
		rc=0
		printf 'clone-%s' "$i" | "$ember" invoke --vsock-uds "$vs" --port "$port" \
			--payload - --timeout 10 >"$work/out" 2>"$work/invoke.err" || rc=$?
		check "$m" "$i" "$work/out" $(($(now_ns) - t0)) "$rc"
		if [ "$m" != reset ]; then
			ctl "$sock" shutdown || true
			wait "$(cat "$work/$p$i.pid")" 2>/dev/null || true
			rm -f "$work/$p$i.pid"
		fi
		i=$((i + 1))
	done
	if [ "$m" = reset ]; then
		ctl "$sock" shutdown || true
		wait "$(cat "$work/reset.pid")" 2>/dev/null || true
		rm -f "$work/reset.pid"
	fi
	row "$m" response "$ok_resp" "$clones"
	row "$m" clock "$ok_clock" "$clones" "guest mono since ready <= host time since restore + 1 s"
	bad=$(cat "$work"/boot.console "$work/$p"*.console 2>/dev/null |
		grep -c -E 'soft lockup|rcu.*(stall|self-detected)|hung_task|blocked for more than|BUG:|Oops' || true)
	if [ "$bad" = 0 ]; then row "$m" console 1 1; else row "$m" console 0 1 "$bad suspicious console lines"; fi
	distinct=$(sort -u "$work/$m.rng" | grep -c . || true)
	row "$m" rng "$distinct" "$clones" "distinct getrandom outputs"
}

for m in $mode_list; do
	echo "hw-check: $m: $clones clones" >&2
	run_mode "$m"
done
finish
