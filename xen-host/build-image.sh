#!/usr/bin/env bash
# make image: the libretto guest image in build/guest/:
#   vmlinuz      Debian's packaged kernel (linux-image-amd64 of the day)
#   initrd.img   an uncompressed cpio: busybox, bin/libretto and its
#                libraries, the drivers as modules, the components
#                precompiled for any x86-64-v2 CPU (.cwasm), the guest
#                configuration and manifest (xen-host/guest.json,
#                xen-host/system.json), and xen-host/init as /init
# Inputs: bin/libretto, build/images/httpd.wasm, build/images/nbd.wasm,
# build/components/network-server.wasm, build/components/block-server.wasm
# (make build images). Needs
# busybox-static and cpio (tools/debian-packages.txt) and apt-get download.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=build/guest
mkdir -p "$out/debs"

say() { echo "image: $*"; }
fail() { echo "image: $*" >&2; exit 2; }

for f in bin/libretto build/images/httpd.wasm build/images/nbd.wasm build/components/network-server.wasm build/components/block-server.wasm; do
  [ -f "$f" ] || fail "$f is missing (make build images)"
done
command -v busybox >/dev/null && [ -x /bin/busybox ] || fail "busybox is missing (apt-get install busybox-static)"
command -v cpio >/dev/null || fail "cpio is missing (apt-get install cpio)"

# The kernel: Debian's, the package linux-image-amd64 points at today
# (cached; KERNEL_PACKAGE=linux-image-X-amd64 picks one).
pkg="${KERNEL_PACKAGE:-}"
if [ -z "$pkg" ]; then
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
fi
if [ -z "$pkg" ]; then
  # No package lists: use the newest cached kernel, if any.
  deb=$(ls -t "$out"/debs/linux-image-*-amd64_*.deb 2>/dev/null | head -1 || true)
  [ -n "$deb" ] || fail "cannot name Debian's kernel package (run apt-get update)"
else
  deb=$(ls "$out"/debs/"$pkg"_*.deb 2>/dev/null | head -1 || true)
  if [ -z "$deb" ]; then
    say "downloading $pkg"
    (cd "$out/debs" && apt-get download -q "$pkg" >/dev/null) || fail "apt-get download $pkg failed"
    deb=$(ls "$out"/debs/"$pkg"_*.deb | head -1)
  fi
fi
kdir="$out/kernel/$(basename "$deb" .deb)"
if [ ! -d "$kdir/boot" ]; then
  say "unpacking $(basename "$deb")"
  rm -rf "$kdir.tmp" && mkdir -p "$kdir.tmp"
  dpkg-deb -x "$deb" "$kdir.tmp"
  mv "$kdir.tmp" "$kdir"
fi
kver=$(ls "$kdir/lib/modules" | head -1)
cp "$kdir/boot/vmlinuz-$kver" "$out/vmlinuz"

# The root.
stage="$out/root"
rm -rf "$stage"
mkdir -p "$stage"/{bin,sbin,lib,lib64,etc/libretto,lib/libretto,proc,sys,dev,run,tmp,var/lib/libretto}
cp /bin/busybox "$stage/bin/busybox"
for a in $(/bin/busybox --list); do
  [ -e "$stage/bin/$a" ] || ln -s busybox "$stage/bin/$a"
done
ln -s ../bin/busybox "$stage/sbin/modprobe"
ln -s ../bin/busybox "$stage/sbin/poweroff"

# bin/libretto without its debug information, and the libraries it links.
objcopy --strip-all bin/libretto "$stage/bin/libretto"
for lib in $(ldd bin/libretto | awk '$3 ~ /^\// { print $3 } $1 ~ /^\/lib64\// { print $1 }'); do
  mkdir -p "$stage$(dirname "$lib")"
  cp -L "$lib" "$stage$lib"
done

# Drivers: the modules xen-host/modules lists and what they depend on.
mods="$kdir/lib/modules/$kver"
[ -f "$mods/modules.dep" ] || /bin/busybox depmod -b "$kdir" "$kver"
mkdir -p "$stage/lib/modules/$kver"
cp "$mods/modules.builtin" "$mods/modules.order" "$stage/lib/modules/$kver/" 2>/dev/null || true
for m in $(cat xen-host/modules); do
  line=$(grep -E "/$m\.ko(\.[a-z]+)?:" "$mods/modules.dep" || true)
  [ -n "$line" ] || { grep -qE "/$m\.ko" "$mods/modules.builtin" || say "module $m: not in $kver (skipped)"; continue; }
  for f in $(echo "$line" | tr -d ':'); do
    mkdir -p "$stage/lib/modules/$kver/$(dirname "$f")"
    cp "$mods/$f" "$stage/lib/modules/$kver/$f"
  done
done
/bin/busybox depmod -b "$stage" "$kver"

# The components, precompiled for any x86-64-v2 CPU.
say "precompiling components for the guest (x86-64-v2)"
bin/libretto guest precompile "$stage/lib/libretto/httpd.cwasm" build/images/httpd.wasm
bin/libretto guest precompile "$stage/lib/libretto/network-server.cwasm" build/components/network-server.wasm
bin/libretto guest precompile "$stage/lib/libretto/nbd.cwasm" build/images/nbd.wasm
bin/libretto guest precompile "$stage/lib/libretto/block-server.cwasm" build/components/block-server.wasm

cp xen-host/guest.json xen-host/system.json xen-host/modules "$stage/etc/libretto/"
cp xen-host/init "$stage/init"
chmod +x "$stage/init"

# Uncompressed: under emulation the kernel unpacks it faster than it
# decompresses one (docs/PERFORMANCE.md, the guest).
(cd "$stage" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) > "$out/initrd.img.tmp"
mv "$out/initrd.img.tmp" "$out/initrd.img"
echo "$kver" > "$out/kernel-version"
say "$out/vmlinuz (Debian $kver) and $out/initrd.img ($(du -h "$out/initrd.img" | cut -f1)) are ready; make run-guest boots them"
