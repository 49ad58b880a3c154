#!/usr/bin/env bash
# Check (and where possible install) what the build and the tests need.
# Runs from `make run` and `make test`; quiet when all is in place.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "setup: $*" >&2; exit 2; }

command -v node >/dev/null || fail "node is not installed (Node.js 20 or later is needed)"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || fail "Node.js $node_major is too old; 20 or later is needed"

command -v cargo >/dev/null || fail "cargo is not installed (rustup with a nightly toolchain is needed)"
# host/rust-toolchain.toml selects nightly (wasmtime 50 needs rustc 1.97).
if ! (cd host && cargo --version >/dev/null 2>&1); then
  fail "the nightly Rust toolchain named in host/rust-toolchain.toml is not installed (rustup toolchain install nightly)"
fi

# Debian packages the test suites use, installed when missing (root only).
need=()
for pkg in $(cat tools/debian-packages.txt 2>/dev/null | sed 's/#.*//'); do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "== Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: not root, so not installing Debian packages: ${need[*]} (tests that need them will say so)" >&2
  fi
fi
