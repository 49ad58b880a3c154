#!/usr/bin/env bash
# make run: boot the demo system. Without root (the default), the NIC is
# the gateway: a port on 127.0.0.1 of this machine reaches the app image on
# the virtual network. With NIC=tap (as root) the NIC is a TAP device,
# libretto0, with Linux at 10.0.0.1 and the system at 10.0.0.2.
#
# APP picks the app:
#   httpd (default)  http://127.0.0.1:8080/  the HTTP server
#   nbd              nbd://127.0.0.1:10809   the NBD server over a 256 MiB
#                    namespace of build/run/nbd.img (made on first run),
#                    through the block server
set -euo pipefail
cd "$(dirname "$0")/.."
APP="${APP:-httpd}"
NIC="${NIC:-gateway}"
case "$APP" in
  httpd) app_port=80; default_port=8080 ;;
  nbd) app_port=10809; default_port=10809 ;;
  *) echo "make run: APP=$APP: httpd (default) or nbd" >&2; exit 2 ;;
esac
# PORT is the user's if given; else the app's default. Under make, the
# Makefile's own default (PORT ?= 8080) is not a choice the user made
# unless PORT came on make's command line (then MAKEFLAGS names it).
if [ -z "${PORT:-}" ] || { [ -n "${MAKELEVEL:-}" ] && [ "$PORT" = 8080 ] && [[ " ${MAKEFLAGS:-} " != *" PORT="* ]]; }; then
  PORT=$default_port
fi
dir=build/run
mkdir -p "$dir"
root=$(pwd)
case "$NIC" in
  gateway)
    nic="\"gateway\": { \"forwards\": [ { \"listen\": \"127.0.0.1:$PORT\", \"to\": \"10.0.0.2:$app_port\" } ] }"
    host="127.0.0.1:$PORT"
    ;;
  tap)
    if [ "$(id -u)" != 0 ]; then echo "make run NIC=tap: needs root (to make the TAP device libretto0)" >&2; exit 2; fi
    ip link show libretto0 >/dev/null 2>&1 || ip tuntap add dev libretto0 mode tap
    ip addr replace 10.0.0.1/24 dev libretto0
    ip link set libretto0 up
    nic='"tap": "libretto0"'
    host="10.0.0.2:$app_port"
    ;;
  *) echo "make run: NIC=$NIC: gateway (default) or tap" >&2; exit 2 ;;
esac
case "$APP" in
  httpd)
    block=''
    apps="{ \"name\": \"httpd\", \"image\": \"$root/build/images/httpd.wasm\", \"ports\": { \"tcp\": [80] }, \"args\": { \"port\": 80 } }"
    ;;
  nbd)
    # The block device is a file the host makes on first run; the app gets
    # all of it as namespace 1 (512-byte blocks), through the block server.
    block="\"block\": { \"device\": \"$root/$dir/nbd.img\", \"size\": \"256M\", \"server\": \"$root/build/components/block-server.wasm\" },"
    apps="{ \"name\": \"nbd\", \"image\": \"$root/build/images/nbd.wasm\", \"ports\": { \"tcp\": [10809] }, \"args\": { \"port\": 10809 },
      \"block\": { \"namespaces\": [ { \"nsid\": 1, \"size\": \"256M\", \"block_size\": 512 } ], \"mode\": \"server\" } }"
    ;;
esac
cat > "$dir/system.json" <<JSON
{
  "name": "libretto-demo",
  "control": "$root/$dir/control.sock",
  "nic": { $nic },
  "shared_ip": "10.0.0.2/24",
  "network_server": "$root/build/components/network-server.wasm",
  $block
  "apps": [
    $apps
  ]
}
JSON
case "$APP" in
  httpd)
    url="http://$host/"
    [ "$NIC" = tap ] && url="http://10.0.0.2/"
    echo "libretto: booting the network server and the httpd image ($dir/system.json)"
    echo "libretto: open $url  (try ${url}128k; bin/libretto ctl --manifest $dir/system.json stats; Ctrl-C stops)"
    ;;
  nbd)
    url="nbd://$host"
    echo "libretto: booting the network server, the block server and the nbd image over $dir/nbd.img ($dir/system.json)"
    echo "libretto: serving $url  (try nbdinfo $url; nbdcopy $url copy.img; qemu-img info $url;"
    echo "          fio --ioengine=nbd --uri=$url --rw=randread --bs=4k --size=64M --name=r;"
    echo "          bin/libretto ctl --manifest $dir/system.json switch nbd direct block; Ctrl-C stops)"
    ;;
esac
exec bin/libretto run "$dir/system.json"
