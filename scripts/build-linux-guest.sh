#!/bin/sh
# Builds the Linux guest kit from Debian packages only: Debian 12's generic amd64 kernel
# (vmlinux, and from the same package the modules for virtio-mmio, vsock and
# virtio-rng) and an initramfs holding the guest agent as /init (guest-agent/), and
# ember_mmio.ko built against that kernel's linux-headers package.
#
#   scripts/build-linux-guest.sh OUT MKCPIO      (make linux-guest runs it)
#
# OUT must already hold bin/ember-agent, bin/ember-echo and bin/ember-probe. Writes
# OUT/vmlinux and OUT/initramfs.cpio. The kernel package is downloaded once with
# apt-get and cached in build/linux-guest-cache/. Any failure exits 1 with the reason.
set -eu

out=${1:?usage: build-linux-guest.sh OUT MKCPIO}
mkcpio=${2:?usage: build-linux-guest.sh OUT MKCPIO}
cache=${EMBER_LINUX_GUEST_CACHE:-build/linux-guest-cache}
# the generic flavour, not "cloud": it has CONFIG_VMGENID=y (the kernel re-seeds itself
# on an ACPI VMGenID notification)
meta=linux-image-amd64
# what the agent needs, by module name; their dependencies are added from depends=
want="virtio_mmio vmw_vsock_virtio_transport virtio_rng"

die() {
	echo "build-linux-guest: error: $*" >&2
	exit 1
}

for b in ember-agent ember-echo ember-probe; do
	[ -x "$out/bin/$b" ] || die "$out/bin/$b is missing (run make linux-guest)"
done
[ -x "$mkcpio" ] || die "$mkcpio is missing"
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found (not a Debian system?)"
command -v objcopy >/dev/null 2>&1 || die "objcopy not found (binutils)"
mkdir -p "$cache"

# the cached package: the first linux-image-*-amd64 .deb that is not the cloud flavour
find_deb() {
	for f in "$cache"/linux-image-*-amd64_*.deb; do
		case "$f" in *-cloud-*) continue ;; esac
		[ -s "$f" ] && { echo "$f"; return 0; }
	done
	return 0
}
deb=$(find_deb)
if [ -z "$deb" ]; then
	command -v apt-get >/dev/null 2>&1 || die "apt-get not found"
	pkg=$(apt-cache depends "$meta" 2>/dev/null |
		sed -n 's/^ *|\{0,1\}Depends: \(linux-image-[^ ]*-amd64\)$/\1/p' | head -n 1)
	[ -n "$pkg" ] || die "apt-cache knows no $meta dependency (apt-get update needed?)"
	echo "build-linux-guest: downloading $pkg (once; cached in $cache)" >&2
	(cd "$cache" && apt-get -o Acquire::Retries=1 -o Acquire::http::Timeout=30 \
		download "$pkg") >"$cache/download.log" 2>&1 ||
		die "apt-get download $pkg failed: $(grep -v '^W:' "$cache/download.log" | tail -n 1)"
	deb=$(find_deb)
	[ -n "$deb" ] || die "apt-get download $pkg produced no .deb"
fi

# extracted once per package (unpacking 70 MB takes seconds): the stamp names the .deb
x="$cache/extract"
if [ "$(cat "$x/.from" 2>/dev/null || true)" != "$deb" ]; then
	rm -rf "$x"
	mkdir -p "$x"
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$x" --wildcards './boot/vmlinuz-*' \
		'./lib/modules/*/kernel/drivers/virtio/*' './lib/modules/*/kernel/net/vmw_vsock/*' \
		'./lib/modules/*/kernel/drivers/char/hw_random/*' ||
		die "$deb has no vmlinuz or no virtio/vsock/hw_random modules"
	echo "$deb" >"$x/.from"
fi
vmlinuz=
for f in "$x"/boot/vmlinuz-*; do vmlinuz=$f; done
[ -s "$vmlinuz" ] || die "no or empty vmlinuz in $deb"

# The kit ships vmlinux, the ELF inside the bzImage: Debian compresses it with xz, which
# ember's loader does not decode (it decodes LZ4 payloads), and the kernel's own
# decompressor runs in ring 0, which takes minutes where ring 0 is emulated
# (PLATFORM.md). The payload is where the setup header says (boot protocol 2.08+).
le() { # le BYTES OFFSET: an unsigned little-endian field of the bzImage
	od -An -tu"$1" -j "$2" -N "$1" "$vmlinuz" | tr -d ' '
}
if [ ! -s "$x/vmlinux" ]; then
	command -v xz >/dev/null 2>&1 || die "xz not found (xz-utils: scripts/install-deps.sh)"
	setup_sects=$(le 1 497)
	[ "$setup_sects" = 0 ] && setup_sects=4
	payload_offset=$(le 4 584)
	payload_length=$(le 4 588)
	[ "$payload_length" -gt 0 ] || die "$vmlinuz has no payload_length (not a bzImage 2.08+)"
	start=$(((setup_sects + 1) * 512 + payload_offset))
	# the payload ends with the le32 uncompressed size: --single-stream ignores it
	tail -c +$((start + 1)) "$vmlinuz" | head -c "$payload_length" |
		xz -dc --single-stream >"$x/vmlinux.tmp" ||
		die "cannot decompress the xz payload of $vmlinuz"
	[ "$(od -An -c -N 4 "$x/vmlinux.tmp" | tr -d ' ')" = '177ELF' ] ||
		die "the payload of $vmlinuz is not an ELF vmlinux"
	mv "$x/vmlinux.tmp" "$x/vmlinux"
fi

# module name (dashes as underscores, as the kernel names them) -> file
modfile() {
	for f in "$x"/lib/modules/*/kernel/drivers/virtio/*.ko \
		"$x"/lib/modules/*/kernel/net/vmw_vsock/*.ko \
		"$x"/lib/modules/*/kernel/drivers/char/hw_random/*.ko; do
		n=$(basename "$f" .ko | tr - _)
		[ "$n" = "$1" ] && { echo "$f"; return 0; }
	done
	return 1
}
depends() {
	objcopy -O binary --only-section=.modinfo "$1" "$out/modinfo" ||
		die "cannot read .modinfo of $1"
	tr '\0' '\n' <"$out/modinfo" | sed -n 's/^depends=//p' | tr , ' '
}
# dependencies first (depth-first, post-order), each once
order=""
visit() {
	case " $order " in *" $1 "*) return 0 ;; esac
	f=$(modfile "$1") || die "module $1 is not in $deb"
	for d in $(depends "$f"); do
		visit "$d"
	done
	order="$order $1"
}
for m in $want; do
	visit "$m"
done

# ember_mmio.ko (guest-agent/kmod/): Debian's kernels lack
# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, so this module registers ember's virtio-mmio
# devices instead. Built against the same version's linux-headers package, unpacked in
# the cache (nothing is installed on the host).
kver=${vmlinuz##*/vmlinuz-}
hdr="$cache/headers"
if [ "$(cat "$hdr/.from" 2>/dev/null || true)" != "$kver" ]; then
	command -v apt-get >/dev/null 2>&1 || die "apt-get not found"
	hpkgs="linux-headers-$kver $(apt-cache depends "linux-headers-$kver" 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-headers-[^ ]*-common\|linux-kbuild-[^ ]*\)$/\1/p')"
	case $hpkgs in *common*kbuild* | *kbuild*common*) ;;
	*) die "apt-cache knows no linux-headers-$kver with its -common and kbuild packages" ;; esac
	for p in $hpkgs; do
		set -- "$cache/${p}"_*.deb
		[ -s "$1" ] && continue
		echo "build-linux-guest: downloading $p (once; cached in $cache)" >&2
		(cd "$cache" && apt-get -o Acquire::Retries=1 -o Acquire::http::Timeout=30 \
			download "$p") >"$cache/download.log" 2>&1 ||
			die "apt-get download $p failed: $(grep -v '^W:' "$cache/download.log" | tail -n 1)"
	done
	rm -rf "$hdr"
	mkdir -p "$hdr"
	for p in $hpkgs; do
		set -- "$cache/${p}"_*.deb
		dpkg-deb -x "$1" "$hdr" || die "cannot unpack $1"
	done
	# its Makefile includes the -common tree by absolute path: point it at ours
	common=$(cd "$hdr"/usr/src/linux-headers-*-common && pwd) || die "no -common headers"
	echo "include $common/Makefile" >"$hdr/usr/src/linux-headers-$kver/Makefile"
	echo "$kver" >"$hdr/.from"
fi
command -v gcc-12 >/dev/null 2>&1 || die "gcc-12 not found (Debian 12's compiler, as the kernel's)"
kmod=$(mkdir -p "$out/kmod" && cd "$out/kmod" && pwd)
# kbuild takes seconds even with nothing to do: skip it when the module is up to date
if [ ! -s "$kmod/ember_mmio.ko" ] || [ -n "$(find guest-agent/kmod/ember_mmio.c \
	guest-agent/kmod/Kbuild "$hdr/.from" -newer "$kmod/ember_mmio.ko")" ]; then
	cp guest-agent/kmod/ember_mmio.c guest-agent/kmod/Kbuild "$kmod/"
	make -s -C "$hdr/usr/src/linux-headers-$kver" M="$kmod" modules >"$out/kmod.log" 2>&1 ||
		die "building ember_mmio.ko failed: $(tail -n 5 "$out/kmod.log")"
	# as INSTALL_MOD_STRIP=1 does: 200 KiB of debug information the guest never reads
	strip --strip-debug "$kmod/ember_mmio.ko" || die "strip --strip-debug ember_mmio.ko failed"
fi
[ -s "$kmod/ember_mmio.ko" ] || die "no ember_mmio.ko after the build ($out/kmod.log)"
# the kernel refuses a module whose vermagic is not its own: compare with Debian's
vermagic() {
	objcopy -O binary --only-section=.modinfo "$1" "$out/modinfo" ||
		die "cannot read .modinfo of $1"
	tr '\0' '\n' <"$out/modinfo" | sed -n 's/^vermagic=//p'
}
[ "$(vermagic "$kmod/ember_mmio.ko")" = "$(vermagic "$(modfile virtio_mmio)")" ] ||
	die "ember_mmio.ko's vermagic '$(vermagic "$kmod/ember_mmio.ko")' is not the kernel's"

stage="$out/stage"
rm -rf "$stage"
mkdir -p "$stage"
spec="$out/initramfs.spec"
list="$stage/ember.list"
: >"$list"
{
	echo "dir /dev 0755"
	echo "nod /dev/console 0600 c 5 1"
	echo "dir /proc 0755"
	echo "dir /sys 0755"
	echo "dir /tmp 1777"
	echo "dir /bin 0755"
	echo "dir /lib 0755"
	echo "dir /lib/modules 0755"
	echo "file /init $out/bin/ember-agent 0755"
	echo "file /bin/ember-echo $out/bin/ember-echo 0755"
	echo "file /bin/ember-probe $out/bin/ember-probe 0755"
	for m in $order; do
		echo "file /lib/modules/$m.ko $(modfile "$m") 0644"
		echo "/lib/modules/$m.ko" >>"$list"
		# its devices, right after the driver that binds them
		if [ "$m" = virtio_mmio ]; then
			echo "file /lib/modules/ember_mmio.ko $kmod/ember_mmio.ko 0644"
			echo "/lib/modules/ember_mmio.ko" >>"$list"
		fi
	done
	echo "file /lib/modules/ember.list $list 0644"
} >"$spec"
# written aside, then renamed: a VM or test reading the previous kit never sees a
# half-written file
"$mkcpio" "$out/initramfs.cpio.tmp" <"$spec" || die "mkcpio failed"
mv "$out/initramfs.cpio.tmp" "$out/initramfs.cpio"
cp "$x/vmlinux" "$out/vmlinux.tmp"
mv "$out/vmlinux.tmp" "$out/vmlinux"
echo "build-linux-guest: $out/vmlinux (from $(basename "$vmlinuz"))" >&2
echo "build-linux-guest: $out/initramfs.cpio (modules:$order, ember_mmio)" >&2
