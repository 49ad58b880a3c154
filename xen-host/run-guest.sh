#!/usr/bin/env bash
# make run-guest: boot the guest image (make image) under QEMU, with
#   - an emulated NVMe drive at 00:05.0 backed by a file (NVME, made if missing),
#   - a virtio-net NIC at 00:04.0 (MAC 52:54:00:00:20:10) on TAP device TAP0:
#     the system's NIC, shared through the network server,
#   - an e1000 NIC at 00:06.0 (MAC 52:54:00:00:20:11) on TAP device TAP1: the
#     `own` app's NIC of its own for direct mode,
#   - both TAP devices on bridge BRIDGE, where Linux is HOST_IP,
#   - the console (ttyS0) on standard output or in CONSOLE, and the control
#     channel (ttyS1) on the Unix socket CTL.
# KVM if this machine has a real one, else TCG (a KVM that cannot run
# guests, such as kvm_pvm, is detected and skipped). As root.
#
# Settings (environment): GUEST_DIR (build/guest), NVME, NVME_MIB (256),
# TAP0 (lbg0), TAP1 (lbg1), BRIDGE (lbgbr0), HOST_IP (10.0.20.1/24), CTL,
# CONSOLE, NETNS (run in this network namespace, which the caller made and
# removes; otherwise the devices are made here and removed at exit),
# INITRD_EXTRA (a cpio appended to the initrd: another configuration),
# APPEND (extra kernel arguments), SMP (2), MEM (1024), ACCEL (kvm|tcg),
# QEMU_EXTRA (more QEMU arguments).
set -euo pipefail
cd "$(dirname "$0")/.."
G="${GUEST_DIR:-build/guest}"
NVME="${NVME:-$G/nvme.img}"
NVME_MIB="${NVME_MIB:-256}"
TAP0="${TAP0:-lbg0}"
TAP1="${TAP1:-lbg1}"
BRIDGE="${BRIDGE:-lbgbr0}"
HOST_IP="${HOST_IP:-10.0.20.1/24}"
CTL="${CTL:-$G/ctl.sock}"
SMP="${SMP:-2}"
MEM="${MEM:-1024}"

fail() { echo "run-guest: $*" >&2; exit 2; }
[ -f "$G/vmlinuz" ] && [ -f "$G/initrd.img" ] || fail "no image in $G (make image)"
command -v qemu-system-x86_64 >/dev/null || fail "qemu-system-x86_64 is missing (apt-get install qemu-system-x86)"
[ "$(id -u)" = 0 ] || fail "needs root (TAP devices and a bridge)"

# KVM only where it is hardware KVM: kvm_pvm serves /dev/kvm without VMX/SVM
# and cannot run these guests (../shared/GUEST.md).
accel="${ACCEL:-}"
if [ -z "$accel" ]; then
  accel=tcg
  if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then
    accel=kvm
  fi
fi
case "$accel" in
  kvm) cpu=host ;;
  tcg) cpu=max ;;
  *) fail "ACCEL=$accel: kvm or tcg" ;;
esac

if [ ! -f "$NVME" ]; then
  truncate -s "${NVME_MIB}M" "$NVME"
fi

initrd="$G/initrd.img"
if [ -n "${INITRD_EXTRA:-}" ]; then
  initrd="$INITRD_EXTRA.initrd"
  cat "$G/initrd.img" "$INITRD_EXTRA" > "$initrd"
fi

inns() { if [ -n "${NETNS:-}" ]; then ip netns exec "$NETNS" "$@"; else "$@"; fi; }
made=0
if ! inns ip link show "$BRIDGE" >/dev/null 2>&1; then
  inns ip link add "$BRIDGE" type bridge
  inns ip addr add "$HOST_IP" dev "$BRIDGE"
  inns ip link set "$BRIDGE" up
  made=1
fi
for t in "$TAP0" "$TAP1"; do
  inns ip link show "$t" >/dev/null 2>&1 || inns ip tuntap add dev "$t" mode tap
  inns ip link set "$t" master "$BRIDGE" up
done
cleanup() {
  [ "$initrd" = "$G/initrd.img" ] || rm -f "$initrd"
  if [ -z "${NETNS:-}" ] && [ "$made" = 1 ]; then
    ip link del "$TAP0" 2>/dev/null || true
    ip link del "$TAP1" 2>/dev/null || true
    ip link del "$BRIDGE" 2>/dev/null || true
  fi
}

if [ -n "${CONSOLE:-}" ]; then console="file:$CONSOLE"; else console=stdio; fi
rm -f "$CTL"
args=(
  -accel "$accel" -cpu "$cpu" -smp "$SMP" -m "$MEM"
  -display none -monitor none -no-reboot
  -kernel "$G/vmlinuz" -initrd "$initrd"
  -append "console=ttyS0 panic=-1 quiet ${APPEND:-}"
  -serial "$console"
  -chardev "socket,id=ctl,path=$CTL,server=on,wait=off" -serial chardev:ctl
  -drive "file=$NVME,if=none,id=nvm,format=raw,cache=writeback" -device nvme,drive=nvm,serial=libretto0,addr=05.0
  -netdev "tap,id=n0,ifname=$TAP0,script=no,downscript=no" -device virtio-net-pci,netdev=n0,addr=04.0,mac=52:54:00:00:20:10
  -netdev "tap,id=n1,ifname=$TAP1,script=no,downscript=no" -device e1000,netdev=n1,addr=06.0,mac=52:54:00:00:20:11
)
# shellcheck disable=SC2206
[ -n "${QEMU_EXTRA:-}" ] && args+=($QEMU_EXTRA)

ip4="${HOST_IP%/*}"
echo "run-guest: QEMU ($accel), NVMe $NVME, NICs on $TAP0 and $TAP1 (bridge $BRIDGE, Linux at $ip4)${NETNS:+ in network namespace $NETNS}"
echo "run-guest: when it is up: curl http://10.0.20.2/ (the httpd app, shared IP), http://10.0.20.3/ (the own app);"
echo "run-guest:   bin/libretto guest ctl $CTL stats|apps|drive|device|log|switch own direct|shutdown"
echo "run-guest:   nbd://10.0.20.2:10809 (the nbd app: a namespace of the NVMe drive, through the block server)"
if [ -n "${NETNS:-}" ]; then
  exec ip netns exec "$NETNS" qemu-system-x86_64 "${args[@]}"
fi
trap cleanup EXIT
qemu-system-x86_64 "${args[@]}"
