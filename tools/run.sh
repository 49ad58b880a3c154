#!/usr/bin/env bash
# make run: boot the demo system. Without root (the default), the NIC is
# the gateway: http://127.0.0.1:PORT/ on this machine reaches the httpd
# image on the virtual network. With NIC=tap (as root) the NIC is a TAP
# device, libretto0, with Linux at 10.0.0.1 and the system at 10.0.0.2.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-8080}"
NIC="${NIC:-gateway}"
dir=build/run
mkdir -p "$dir"
root=$(pwd)
case "$NIC" in
  gateway)
    nic="\"gateway\": { \"forwards\": [ { \"listen\": \"127.0.0.1:$PORT\", \"to\": \"10.0.0.2:80\" } ] }"
    url="http://127.0.0.1:$PORT/"
    ;;
  tap)
    if [ "$(id -u)" != 0 ]; then echo "make run NIC=tap: needs root (to make the TAP device libretto0)" >&2; exit 2; fi
    ip link show libretto0 >/dev/null 2>&1 || ip tuntap add dev libretto0 mode tap
    ip addr replace 10.0.0.1/24 dev libretto0
    ip link set libretto0 up
    nic='"tap": "libretto0"'
    url="http://10.0.0.2/"
    ;;
  *) echo "make run: NIC=$NIC: gateway (default) or tap" >&2; exit 2 ;;
esac
cat > "$dir/system.json" <<JSON
{
  "name": "libretto-demo",
  "control": "$root/$dir/control.sock",
  "nic": { $nic },
  "shared_ip": "10.0.0.2/24",
  "network_server": "$root/build/components/network-server.wasm",
  "apps": [
    { "name": "httpd", "image": "$root/build/images/httpd.wasm", "ports": { "tcp": [80] }, "args": { "port": 80 } }
  ]
}
JSON
echo "libretto: booting the network server and the httpd image ($dir/system.json)"
echo "libretto: open $url  (try ${url}128k; bin/libretto ctl --manifest $dir/system.json stats; Ctrl-C stops)"
exec bin/libretto run "$dir/system.json"
