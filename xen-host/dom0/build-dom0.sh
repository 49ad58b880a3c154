#!/usr/bin/env bash
# What the Xen test (test/integration/xen.test.ts) boots under QEMU, in
# build/xen/:
#   xen.elf      Debian's Xen hypervisor (xen-hypervisor-4.17-amd64, the
#                version of dom0's tools), the multiboot ELF QEMU's -kernel
#                loads
#   vmlinuz      dom0's kernel: the Debian kernel the libretto guest image
#                uses (build/guest/vmlinuz, from the .deb in build/guest/debs)
#   initrd.img   dom0's root: a gzip cpio of a debootstrap minbase with the
#                Xen tools, qemu-system-xen and SeaBIOS, the Xen backend
#                modules of that kernel; then, as a second (uncompressed)
#                cpio, xen-host/dom0/init as /init and the libretto guest
#                dom0 starts: /var/lib/libretto/vmlinuz (build/guest/),
#                libretto.img (build/guest/initrd.img, the guest's disk) and
#                initrd.img (a loader, xen-host/dom0/guest-loader, with
#                xen-host/dom0/guest.json and system.json in
#                /etc/libretto/xen/), and /etc/xen/libretto.xl, made from
#                the template xen-host/libretto.xl
# Each part is cached under a hash of its inputs: a second run is instant.
# Needs root (debootstrap), debootstrap, cpio, apt-get download, and the
# guest image (make image). Settings (environment): MIRROR and SUITE (this
# machine's Debian mirror and release), GUEST_MEMORY (MiB, 1024).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=build/xen
mkdir -p "$out/debs"

say() { echo "dom0: $*"; }
fail() { echo "dom0: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || fail "needs root (debootstrap)"
for t in debootstrap cpio dpkg-deb apt-get gzip sha256sum; do
  command -v "$t" >/dev/null || fail "$t is missing (apt-get install debootstrap cpio)"
done
[ -x /bin/busybox ] || fail "/bin/busybox is missing (apt-get install busybox-static)"
[ -f build/guest/vmlinuz ] && [ -f build/guest/initrd.img ] && [ -f build/guest/kernel-version ] \
  || fail "no guest image in build/guest (make image)"
kver=$(cat build/guest/kernel-version)
kdeb=$(ls build/guest/debs/linux-image-"$kver"_*.deb 2>/dev/null | head -1 || true)
[ -n "$kdeb" ] || fail "the guest kernel's package (linux-image-$kver) is not in build/guest/debs (make image)"

# This machine's Debian mirror and release.
SUITE="${SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}"
if [ -z "${MIRROR:-}" ]; then
  MIRROR=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && $2 ~ /\/debian\/?$/ { print $2; exit }' || true)
  [ -n "$MIRROR" ] || MIRROR=$(awk '$1 == "deb" && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
  MIRROR="${MIRROR:-http://deb.debian.org/debian}"
fi
PACKAGES=xen-utils-4.17,qemu-system-xen,seabios,iproute2,pciutils,kmod,busybox
# The Xen backends and what dom0 needs of the kernel's modules.
MODULES="xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xen-netback xen-blkback xen-pciback tun"

# --- dom0: hypervisor, kernel and root, keyed by what makes them ---------
key=$( { sed -n '/^# --- dom0:/,/^# --- the libretto guest/p' xen-host/dom0/build-dom0.sh; echo "$(basename "$kdeb") $MIRROR $SUITE $PACKAGES $MODULES"; } | sha256sum | cut -c1-16)
d="$out/dom0-$key"
if [ ! -f "$d/done" ]; then
  root="$d/root"
  # The debootstrap is kept until the rest is done (a failed step after it
  # does not cost it again).
  if [ ! -f "$d/bootstrapped" ]; then
    rm -rf "$d" && mkdir -p "$d"
    say "debootstrap $SUITE from $MIRROR with $PACKAGES (about 2 min; log in $d/debootstrap.log)"
    t0=$SECONDS
    if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >"$d/debootstrap.log" 2>&1; then
      fail "debootstrap failed: $(grep -E '^(E|W):' "$d/debootstrap.log" | tail -1) (log: $d/debootstrap.log)"
    fi
    touch "$d/bootstrapped"
    say "debootstrap done in $((SECONDS - t0)) s"
  fi

  # The hypervisor: the same version as dom0's tools.
  xver=$(chroot "$root" dpkg-query -W -f '${Version}' xen-utils-4.17)
  xdeb=$(ls "$out"/debs/xen-hypervisor-4.17-amd64_"${xver//:/%3a}"_amd64.deb 2>/dev/null | head -1 || true)
  if [ -z "$xdeb" ]; then
    say "downloading xen-hypervisor-4.17-amd64 $xver"
    (cd "$out/debs" && apt-get download -q "xen-hypervisor-4.17-amd64=$xver" >/dev/null 2>&1) \
      || fail "apt-get download xen-hypervisor-4.17-amd64=$xver failed (apt-get update?)"
    xdeb=$(ls "$out"/debs/xen-hypervisor-4.17-amd64_*"${xver#*:}"*_amd64.deb | head -1)
  fi
  rm -rf "$d/xen" && mkdir -p "$d/xen"
  dpkg-deb -x "$xdeb" "$d/xen"
  xgz=$(ls "$d"/xen/boot/xen-4.17*-amd64.gz 2>/dev/null | head -1 || true)
  [ -n "$xgz" ] || fail "$(basename "$xdeb") holds no boot/xen-4.17-amd64.gz"
  zcat "$xgz" > "$d/xen.elf"
  rm -rf "$d/xen"

  # dom0's kernel and its modules: the guest's kernel package.
  say "dom0 kernel $kver and modules ($MODULES)"
  # (unpacked inside dom0's root, whose depmod maps their dependencies)
  kdir="$root/tmp/kernel"
  rm -rf "$kdir" && mkdir -p "$kdir" && dpkg-deb -x "$kdeb" "$kdir"
  cp "$kdir/boot/vmlinuz-$kver" "$d/vmlinuz"
  mods="$kdir/lib/modules/$kver"
  chroot "$root" depmod -b /tmp/kernel "$kver" || fail "depmod of $kver failed"
  mkdir -p "$root/lib/modules/$kver"
  cp "$mods/modules.builtin" "$mods/modules.order" "$root/lib/modules/$kver/"
  for m in $MODULES; do
    line=$(grep -E "/$m\.ko(\.[a-z]+)?:" "$mods/modules.dep" || true)
    [ -n "$line" ] || { grep -qE "/$m\.ko" "$mods/modules.builtin" || fail "module $m is not in $kver"; continue; }
    for f in $(echo "$line" | tr -d ':'); do
      mkdir -p "$root/lib/modules/$kver/$(dirname "$f")"
      cp "$mods/$f" "$root/lib/modules/$kver/$f"
    done
  done
  rm -rf "$kdir"
  chroot "$root" depmod "$kver" || fail "depmod in dom0's root failed"

  # Strip what a dom0 in RAM never reads: docs, manuals, locales, apt's caches.
  rm -rf "$root"/usr/share/{doc,man,info,locale,lintian,bash-completion} "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/*
  mkdir -p "$root"/{proc,sys,dev,run,tmp,var/log/xen,var/lib/xen,var/lib/libretto,etc/xen}

  say "packing dom0's root ($(du -sh "$root" | cut -f1)) as a gzip cpio"
  (cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) | gzip -6 > "$d/dom0.cpio.gz"
  rm -rf "$root"
  touch "$d/done"
  # Older dom0 builds go: one is enough.
  for old in "$out"/dom0-*; do [ "$old" = "$d" ] || rm -rf "$old"; done
fi

# --- the libretto guest dom0 starts, keyed by the image and its config ---
gkey=$( { cat xen-host/dom0/init xen-host/dom0/guest-loader xen-host/libretto.xl xen-host/dom0/guest.json xen-host/dom0/system.json xen-host/dom0/build-dom0.sh; echo "${GUEST_MEMORY:-1024}"; stat -c '%s %Y' build/guest/vmlinuz build/guest/initrd.img; } | sha256sum | cut -c1-16)
if [ ! -f "$out/payload-$gkey.cpio" ] || [ ! -f "$out/initrd.img" ] || [ "$(cat "$out/initrd.key" 2>/dev/null)" != "$key-$gkey" ]; then
  say "the libretto guest for dom0: build/guest/ with xen-host/dom0/guest.json and system.json, and libretto.xl"
  p="$out/payload"
  rm -rf "$p" && mkdir -p "$p/var/lib/libretto" "$p/etc/xen"
  cp xen-host/dom0/init "$p/init" && chmod +x "$p/init"
  cp build/guest/vmlinuz "$p/var/lib/libretto/vmlinuz"
  # The image goes to the guest as a Xen disk (libretto.img); its initrd is
  # a loader that unpacks it (xen-host/dom0/guest-loader says why), with the
  # guest's configuration for this test in /etc/libretto/xen/.
  cp build/guest/initrd.img "$p/var/lib/libretto/libretto.img"
  l="$out/loader"
  rm -rf "$l" && mkdir -p "$l/bin" "$l/lib" "$l/etc/libretto/xen"
  cp /bin/busybox "$l/bin/busybox"
  cp xen-host/dom0/guest-loader "$l/init" && chmod +x "$l/init"
  cp xen-host/dom0/guest.json xen-host/dom0/system.json "$l/etc/libretto/xen/"
  sha256sum build/guest/initrd.img | cut -d' ' -f1 > "$l/etc/libretto/xen/image.sha256"
  dpkg-deb --fsys-tarfile "$kdeb" | tar -xO "./lib/modules/$kver/kernel/drivers/block/xen-blkfront.ko" > "$l/lib/xen-blkfront.ko" \
    || fail "no xen-blkfront.ko in $(basename "$kdeb")"
  (cd "$l" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -9 > "$p/var/lib/libretto/initrd.img"
  rm -rf "$l"

  # The xl configuration: the template, with the devices and settings of
  # this test. Each change must find its line, or the template moved on.
  xl="$p/etc/xen/libretto.xl"
  sed -e 's|^memory *=.*|memory  = '"${GUEST_MEMORY:-1024}"'|' \
      -e 's|^extra *= *"\(.*\)"|extra   = "\1 libretto.config=/etc/libretto/xen/guest.json"|' \
      -e 's|^serial *=.*|serial  = [ "file:/run/libretto-guest.console", "unix:/run/libretto-ctl.sock,server=on,wait=off" ]|' \
      -e "s|^pci *=.*|pci = [ '0000:00:04.0,vslot=4' ]|" \
      xen-host/libretto.xl > "$xl"
  for want in '^memory  = ' 'libretto.config=' 'file:/run/libretto-guest.console' "^pci = \[ '0000:00:04.0,vslot=4' \]" '^kernel *= *"/var/lib/libretto/vmlinuz"' '^ramdisk *= *"/var/lib/libretto/initrd.img"' '^type *= *"hvm"'; do
    grep -q "$want" "$xl" || fail "xen-host/libretto.xl has no line to give /$want/"
  done
  cat >> "$xl" <<'EOF'
# The image, read by the loader in the initrd: a PV disk only (xvde has no
# emulated IDE twin), served by QEMU in dom0 (the default backend's hotplug
# script times out under emulation). Writable only because QEMU 7.2's qdisk
# refuses a read-only one ("Block node is read-only"); the loader only reads.
disk = [ 'format=raw,vdev=xvde,access=rw,backendtype=qdisk,target=/var/lib/libretto/libretto.img' ]
# Under QEMU's TCG: the CPU has no RDTSCP (a work-around in QEMU's command
# line), so the guest reads the TSC natively instead of through emulation.
tsc_mode = "native"
EOF
  rm -f "$out"/payload-*.cpio
  (cd "$p" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$out/payload-$gkey.cpio"
  rm -rf "$p"
  # dom0's initramfs: its root, then the guest (the kernel reads both; an
  # uncompressed archive after a compressed one must start on a 4-byte
  # boundary, and zeros between archives are skipped).
  gz=$(stat -c %s "$d/dom0.cpio.gz")
  { cat "$d/dom0.cpio.gz"; head -c $(( (512 - gz % 512) % 512 )) /dev/zero; cat "$out/payload-$gkey.cpio"; } > "$out/initrd.img.tmp"
  mv "$out/initrd.img.tmp" "$out/initrd.img"
  echo "$key-$gkey" > "$out/initrd.key"
fi
cp "$d/xen.elf" "$out/xen.elf"
cp "$d/vmlinuz" "$out/vmlinuz"
say "$out/xen.elf, $out/vmlinuz and $out/initrd.img ($(du -h "$out/initrd.img" | cut -f1)) are ready"
