#!/bin/sh
# Regenerates fuzz/data (the fixture state files and chunk file the index and ws targets
# check against) and the seed corpora in fuzz/corpus from a real snapshot of the hello
# test guest, plus hand-made control frames and virtqueue rings. Run after a change to
# the snapshot format, then commit fuzz/data and fuzz/corpus. Needs a built ember
# (make all) and /dev/kvm.
set -eu
cd "$(dirname "$0")/.."
B=${EMBER_BUILD:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ---- little-endian bytes: le N VALUE prints VALUE as N bytes ----
le() {
	_n=$1 _v=$2 _i=0
	while [ "$_i" -lt "$_n" ]; do
		printf "\\$(printf '%03o' $((_v & 255)))"
		_v=$((_v >> 8)) _i=$((_i + 1))
	done
}
# desc ADDR LEN FLAGS NEXT: one 16-byte split-ring descriptor
desc() { le 8 "$1"; le 4 "$2"; le 2 "$3"; le 2 "$4"; }
pad_to() { # pad_to FILE SIZE
	s=$(stat -c %s "$1")
	[ "$s" -lt "$2" ] && head -c $(($2 - s)) /dev/zero >>"$1"
	return 0
}

"$B/ember" boot --kernel "$B/guests/hello.elf" --mem 8 --console none \
	--snapshot-on-ready "$tmp/raw" --exit-after-snapshot >/dev/null
"$B/ember" restore --snapshot "$tmp/raw" --record-ws --console none >/dev/null
"$B/ember-snap" compress "$tmp/raw" "$tmp/lz4" >/dev/null

rm -rf fuzz/data fuzz/corpus
mkdir -p fuzz/data fuzz/corpus/state fuzz/corpus/lz4_index fuzz/corpus/lz4_chunk \
	fuzz/corpus/ws fuzz/corpus/ctl fuzz/corpus/virtq
cp "$tmp/raw/state.msgpack" fuzz/data/state-raw.msgpack
cp "$tmp/lz4/state.msgpack" fuzz/data/state-lz4.msgpack
cp "$tmp/lz4/memory.lz4" fuzz/data/memory.lz4

# state: the msgpack bodies (the target writes the preamble)
tail -c +17 "$tmp/raw/state.msgpack" >fuzz/corpus/state/raw
tail -c +17 "$tmp/lz4/state.msgpack" >fuzz/corpus/state/lz4
cp "$tmp/lz4/memory.idx" fuzz/corpus/lz4_index/index
cp "$tmp/raw/ws.bin" fuzz/corpus/ws/ws

# lz4_chunk: byte 0 = log2(chunk size) - 12, byte 1 = kind, then the stored bytes of
# the chunk file's first lz4 chunk (index entries: offset u64, crc u32, len|kind<<24)
csize=$(od -An -tu4 -j16 -N4 "$tmp/lz4/memory.idx" | tr -d ' ')
shift_=0
while [ $((4096 << shift_)) -lt "$csize" ]; do shift_=$((shift_ + 1)); done
n=$(( ($(stat -c %s "$tmp/lz4/memory.idx") - 80) / 16 ))
i=0
while [ "$i" -lt "$n" ]; do
	e=$((80 + i * 16))
	word=$(od -An -tu4 -j$((e + 12)) -N4 "$tmp/lz4/memory.idx" | tr -d ' ')
	if [ $((word >> 24)) -eq 2 ]; then
		off=$(od -An -tu8 -j$e -N8 "$tmp/lz4/memory.idx" | tr -d ' ')
		{ le 1 "$shift_"; le 1 2; tail -c +$((off + 1)) "$tmp/lz4/memory.lz4" |
			head -c $((word & 0xffffff)); } >fuzz/corpus/lz4_chunk/lz4
		break
	fi
	i=$((i + 1))
done
{ le 1 0; le 1 1; head -c 4096 "$tmp/lz4/memory.lz4"; } >fuzz/corpus/lz4_chunk/raw
{ le 1 0; le 1 0; } >fuzz/corpus/lz4_chunk/zero

# ctl: control-socket request bodies (msgpack maps), a pool/invoke header, an OK line
printf '\201\244verb\246status' >fuzz/corpus/ctl/status
printf '\203\244verb\250snapshot\243dir\246/tmp/s\244diff\303' >fuzz/corpus/ctl/snapshot_diff
printf '\202\244verb\245reset\247standby\303' >fuzz/corpus/ctl/reset
printf '\202\244verb\243cmd\243cmd\245hello' >fuzz/corpus/ctl/cmd
{ printf 'EMBQ'; le 2 1; le 2 0; le 8 7; le 4 5; le 4 0; } >fuzz/corpus/ctl/request_header
{ printf 'EMBR'; le 2 1; le 2 0; le 8 0; le 4 5; le 4 0; } >fuzz/corpus/ctl/response_header
printf 'OK 1073741824\n' >fuzz/corpus/ctl/ok_line

# virtq: 4 bytes (log2 size, indirect, next_avail) + guest RAM from 0: descriptors at 0,
# avail at 0x1000, used at 0x2000
# ring FILE INDIRECT COUNT HEAD...: header, the descriptors already in FILE.d, avail ring
ring() {
	_f=$1 _ind=$2 _cnt=$3
	shift 3
	{ le 1 4; le 1 "$_ind"; le 2 0; cat "$_f.d"; } >"$_f"
	pad_to "$_f" $((4 + 0x1000))
	{ le 2 0; le 2 "$_cnt"; for h in "$@"; do le 2 "$h"; done; } >>"$_f"
	rm -f "$_f.d"
}
v=fuzz/corpus/virtq
{ desc 0x4000 64 0 0; desc 0x5000 256 2 0; } >"$v/two_single.d"
ring "$v/two_single" 0 2 0 1
{ desc 0x4000 24 1 1; desc 0x5000 4096 2 0; } >"$v/chain.d"
ring "$v/chain" 0 1 0
{ desc 0x3000 32 4 0; } >"$v/indirect.d"
ring "$v/indirect" 1 1 0
pad_to "$v/indirect" $((4 + 0x3000))
{ desc 0x4000 16 1 1; desc 0x6000 512 2 0; } >>"$v/indirect"
echo "make-seeds: fuzz/data and fuzz/corpus regenerated"
