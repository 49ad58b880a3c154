#!/usr/bin/env bash
# make bench: install the baseline servers of tools/bench-packages.txt (as
# root), with their services kept from starting: the benchmarks run their
# own copies in network namespaces. Quiet when all is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for pkg in $(sed 's/#.*//' tools/bench-packages.txt); do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "bench-setup: not root, so not installing ${need[*]} (the benchmarks that need them will say so)" >&2
  exit 0
fi
echo "== Debian packages for the benchmarks: ${need[*]}"
# policy-rc.d exit 101: "action forbidden", so the packages' services stay down.
made_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  made_policy=1
fi
trap 'if [ $made_policy = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
