# bench/warm.sh: the warm-start sections of bench/run.sh, which sources it after its
# own functions (golden, fn_golden) and variables (B, EMBER, tmp). bench/warm.c does
# the measuring (bench/floor_reset.c is its floor); bench/README.md says what is
# measured, from which event to which.
#
#   standby      resume of a standby VM -> running / first report / first vsock
#                response, against the floor (state set in a pre-built VM, then run)
#   reset        in-place reset -> the guest's first port write after N written pages,
#                per memory backend, against the floor (madvise + set state + run)
#   standby_mem  host memory per idle standby VM (private PSS), and per fn VM that
#                served an invocation and was reset
#
#   BENCH_WARM_RUNS=10        runs per command (defaults: standby 100, reset 30 for N <= 256,
#                             half that up to 2048 pages, a fifth (at least 5) above)
#   BENCH_STANDBY_VMS=50      standby_mem: VMs at once (default 200)
#   BENCH_RESET_PAGES="0 256" reset: written pages (default "0 256 2048 16384")
#   BENCH_RESET_BACKENDS=mmap reset: ember's memory backends (default "mmap uffd")

WARM=$B/bench/warm
FLOOR_RESET=$B/bench/floor_reset
WARM_STANDBY_RUNS=${BENCH_WARM_RUNS:-100}
WARM_RESET_RUNS=${BENCH_WARM_RUNS:-30}
WARM_VMS=${BENCH_STANDBY_VMS:-200}
WARM_PAGES=${BENCH_RESET_PAGES:-"0 256 2048 16384"}
WARM_BACKENDS=${BENCH_RESET_BACKENDS:-"mmap uffd"}

warm_setup() {
	for f in "$WARM" "$FLOOR_RESET"; do
		[ -x "$f" ] || { echo "bench: $f is not built (make bench builds it)" >&2; exit 1; }
	done
	for n in $WARM_PAGES; do
		case $n in
		'' | *[!0-9]*) echo "bench: BENCH_RESET_PAGES: '$n' is not a page count" >&2; exit 2 ;;
		esac
		# the 64 MiB sandbox heap has 16384 pages
		[ "$n" -le 16384 ] || { echo "bench: BENCH_RESET_PAGES: $n > 16384 (heap=64M)" >&2; exit 2; }
	done
	mkdir -p "$tmp/warm"
	golden 64
}

# Standby resume (ember restore --standby, then `resume` on the control socket) against
# floor_reset's `go`, and the fn guest's first vsock response, interleaved.
section_standby() {
	warm_setup
	fn_golden
	"$WARM" standby --ember "$EMBER" --floor "$FLOOR_RESET" --sandbox "$tmp/golden-64M" \
		--fn "$tmp/fn-golden" --tmp "$tmp/warm" --runs "$WARM_STANDBY_RUNS" \
		--json "$tmp/standby.json"
}

# In-place reset after N written pages (the sandbox's `dirty N` command), one long-lived
# VM per ember backend and per floor variant, interleaved; pages_reverted >= N checked.
section_reset() {
	warm_setup
	"$WARM" reset --ember "$EMBER" --floor "$FLOOR_RESET" --sandbox "$tmp/golden-64M" \
		--tmp "$tmp/warm" --runs "$WARM_RESET_RUNS" --sizes "$WARM_PAGES" \
		--backends "$WARM_BACKENDS" --json "$tmp/reset.json"
}

# BENCH_STANDBY_VMS standby VMs of the sandbox at once, their private PSS; then as many
# fn VMs after an invocation and a reset --standby.
section_standby_mem() {
	warm_setup
	fn_golden
	"$WARM" mem --ember "$EMBER" --sandbox "$tmp/golden-64M" --fn "$tmp/fn-golden" \
		--tmp "$tmp/warm" --count "$WARM_VMS" --json "$tmp/standby_mem.json"
}
