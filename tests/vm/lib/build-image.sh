#!/bin/bash
# Build the guest image for the emulated-pmem test tier:
#   OUT/vmlinuz      Debian's own kernel, unpacked from linux-image-*.deb
#   OUT/base.cpio    an uncompressed initramfs: busybox, the real mke2fs and
#                    mkfs.xfs with their shared libraries, the kernel modules
#                    we need (with depmod -b output) and tests/vm/guest/init.
#
# Usage: build-image.sh OUTDIR KERNEL_PKG
# Everything comes from Debian packages already installed by run.sh
# (busybox-static, e2fsprogs, xfsprogs, cpio, kmod) plus the kernel .deb that
# this script fetches with `apt-get download`.
set -euo pipefail

out=$1
kpkg=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { echo "build-image: FATAL: $*" >&2; exit 1; }

work=$(mktemp -d "${out%/}.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- kernel package --------------------------------------------------------
# Kept next to the images: a change of the guest scripts rebuilds the image
# without downloading the kernel again.
debs="$(dirname "$out")/debs"
mkdir -p "$debs"
deb=$(ls "$debs/${kpkg}_"*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
    echo "build-image: fetching $kpkg" >&2
    (cd "$work" && apt-get download "$kpkg" >&2 2>"$work/apt.err") || {
        cat "$work/apt.err" >&2
        die "apt-get download $kpkg failed"
    }
    rm -f "$debs"/*.deb   # an older kernel's
    mv "$work"/*.deb "$debs/" 2>/dev/null
    deb=$(ls "$debs/${kpkg}_"*.deb 2>/dev/null | head -n1 || true)
fi
[ -n "$deb" ] || die "no .deb downloaded for $kpkg"
dpkg-deb -x "$deb" "$work/kpkg"
kver=$(ls "$work/kpkg/lib/modules" | head -n1)
[ -n "$kver" ] || die "no /lib/modules in $deb"
vmlinuz="$work/kpkg/boot/vmlinuz-$kver"
[ -f "$vmlinuz" ] || die "no vmlinuz in $deb"
config="$work/kpkg/boot/config-$kver"
for opt in CONFIG_MEMORY_FAILURE CONFIG_FS_DAX CONFIG_DEVTMPFS CONFIG_NVDIMM_PFN; do
    grep -q "^$opt=y" "$config" || die "$kpkg lacks $opt=y"
done

# --- initramfs tree --------------------------------------------------------
root="$work/root"
mkdir -p "$root"/{bin,sbin,dev,proc,sys,mnt,tmp,run,lib,lib64,etc,payload,var/tmp}
cp /bin/busybox "$root/bin/busybox"
# The real file-system tools (the busybox mke2fs applet cannot make a file
# system that ext4 mounts with -o dax reliably), with their shared libraries.
copy_with_libs() {
    local bin=$1 dst=$2
    cp "$bin" "$root$dst"
    ldd "$bin" | awk '/=>/ { print $3 } /^\t\/lib/ { print $1 }' | while read -r lib; do
        [ -f "$lib" ] || continue
        local d
        d=$(dirname "$lib")
        mkdir -p "$root$d"
        cp -L "$lib" "$root$d/"
    done
}
copy_with_libs "$(command -v mke2fs)" /sbin/mke2fs
copy_with_libs "$(command -v e2fsck)" /sbin/e2fsck
copy_with_libs "$(command -v mkfs.xfs)" /sbin/mkfs.xfs
copy_with_libs "$(command -v xfs_repair)" /sbin/xfs_repair
# Loop-mounted scratch file systems (tests/support/loopfs.hpp runs losetup
# --find --show, mkfs.<type>, mount, umount): util-linux's losetup (busybox's
# has no --find --show), mke2fs under the name mkfs.ext4 (it picks the type
# from its name); mount and umount are busybox's.
copy_with_libs "$(command -v losetup)" /sbin/losetup
ln -s mke2fs "$root/sbin/mkfs.ext4"
# /bin/sh (system(), popen(), `sh -c` in the steps) is dash, which looks
# commands up in PATH: Debian's busybox sh prefers its own applets, so
# `losetup --show` from a test would get busybox's losetup, which has no
# --show. busybox --install in init keeps an existing /bin/sh.
copy_with_libs "$(readlink -f /bin/dash)" /bin/dash
ln -s dash "$root/bin/sh"
# ld.so must sit where the binaries' PT_INTERP says.
mkdir -p "$root/lib64"
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
# mke2fs needs its config file for the ext4 feature set.
cp /etc/mke2fs.conf "$root/etc/mke2fs.conf"
touch "$root/etc/mtab"
# Users for tests that drop privileges (static glibc reads these directly).
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"

# --- modules ---------------------------------------------------------------
mods="libnvdimm nfit nd_btt nd_pmem dax_pmem device_dax crc32c_generic crc16 mbcache jbd2
      ext4 libcrc32c xfs virtio virtio_ring virtio_pci virtio_pci_modern_dev
      virtio_pci_legacy_dev nd_virtio virtio_pmem virtio_blk loop"
msrc="$work/kpkg/lib/modules/$kver"
mdst="$root/lib/modules/$kver"
mkdir -p "$mdst"
cp "$msrc/modules.builtin" "$msrc/modules.order" "$mdst/"
[ -f "$msrc/modules.builtin.modinfo" ] && cp "$msrc/modules.builtin.modinfo" "$mdst/"
for m in $mods; do
    grep -q "/$m.ko\$" "$msrc/modules.builtin" && continue   # built in
    f=$(find "$msrc/kernel" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" | head -n1)
    [ -n "$f" ] || die "module $m not in $kpkg"
    mkdir -p "$mdst/$(dirname "${f#$msrc/}")"
    cp "$f" "$mdst/${f#$msrc/}"
done
# Pull in any dependency the list above forgot, until closed.
for _ in 1 2 3 4; do
    depmod -b "$root" "$kver"
    missing=0
    while read -r dep; do
        [ -f "$mdst/$dep" ] && continue
        mkdir -p "$mdst/$(dirname "$dep")"
        cp "$msrc/$dep" "$mdst/$dep"
        missing=1
    done < <(tr ' ' '\n' < "$mdst/modules.dep" | sed -n 's/:$//;/\.ko/p' | sort -u)
    [ $missing = 0 ] && break
done
depmod -b "$root" "$kver"

# --- init ------------------------------------------------------------------
cp "$here/guest/init" "$root/init"
chmod 755 "$root/init"
echo "$kver" > "$root/etc/kernel-version"

(cd "$root" && find . -print0 | sort -z | cpio --null -o -H newc --quiet) > "$work/base.cpio"
cp "$vmlinuz" "$work/vmlinuz"

# Also unpack the uncompressed ELF kernel from the bzImage: QEMU boots it
# directly through its PVH entry (CONFIG_PVH=y), which under TCG saves the ~5 s
# the guest spends decompressing an xz kernel. run.sh falls back to the
# bzImage when this is absent.
if grep -q '^CONFIG_PVH=y' "$config"; then
    for off in $(LC_ALL=C grep -obUa $'\xfd''7zXZ' "$vmlinuz" | cut -d: -f1); do
        tail -c +$((off + 1)) "$vmlinuz" | xz -dc 2>/dev/null > "$work/vmlinux" || true
        if [ "$(head -c4 "$work/vmlinux" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
            break
        fi
        rm -f "$work/vmlinux"
    done
fi
echo "$kver" > "$work/kernel-version"

mkdir -p "$out"
mv "$work/vmlinuz" "$work/base.cpio" "$work/kernel-version" "$out/"
[ -f "$work/vmlinux" ] && mv "$work/vmlinux" "$out/"
echo "build-image: built $out (kernel $kver, initramfs $(du -h "$out/base.cpio" | cut -f1))" >&2
