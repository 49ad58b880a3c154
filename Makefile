# libretto: the two commands are `make run` (boot the demo) and `make test`
# (every suite). Both set up what they need on a fresh machine.

SHELL := /bin/bash
NODE ?= node
NIC ?= gateway
PORT ?= 8080
CARGO ?= cargo
HOST_BIN := host/target/release/libretto
STAMP := build/.stamps

.PHONY: all setup components images build run test bench clean help image run-guest

all: build components images

help:
	@echo "make run         boot the demo system (no root needed)"
	@echo "make test        run every test suite; last line: N passed, N failed"
	@echo "make components  build the TypeScript components (cached by content)"
	@echo "make images      compose app images (app + POSIX shim + TCP/IP stack)"
	@echo "make build       build the host into bin/libretto"
	@echo "make bench       call and ring costs on both JS engines; as root also"
	@echo "                 the TCP/IP stack over TAP beside Linux over veth;"
	@echo "                 the block service beside fio's io_uring on one file"
	@echo "                 the network server in TypeScript and in Rust (netbench, wrk, redis-benchmark)"
	@echo "                 the guest under QEMU beside nginx and nbdkit in the same guest (builds the image)"
	@echo "make image       the guest image: Debian's kernel + an initramfs with the host,"
	@echo "                 precompiled components and a manifest (xen-host/README.md)"
	@echo "make run-guest   boot the guest image under QEMU (NVMe drive, NICs on TAP; root)"
	@echo "make clean       remove build outputs (keeps the component cache)"

# npm packages, pinned by package-lock.json; reinstalled when it changes.
$(STAMP)/npm: package.json package-lock.json
	@mkdir -p $(STAMP)
	@echo "== npm packages"
	@# npm ci rejects this lock file (npm 11 records no optional platform
	@# packages of other platforms); npm install still follows the lock.
	npm install --no-audit --no-fund
	@touch $@

setup: $(STAMP)/npm
	@bash tools/setup.sh

components: $(STAMP)/npm
	@echo "== components"
	@$(NODE) tools/build-components.mjs

images: build components
	@echo "== images"
	@$(NODE) tools/build-images.mjs

build:
	@echo "== host (cargo build --release)"
	@cd host && $(CARGO) build --release
	@mkdir -p bin && cp $(HOST_BIN) bin/libretto.tmp && mv -f bin/libretto.tmp bin/libretto

run: setup build components images
	@echo "== run"
	@NIC=$(NIC) PORT=$(PORT) tools/run.sh

test: setup build components images
	@$(NODE) tools/test-all.mjs

bench: setup build components images
	@bash tools/bench-setup.sh
	@bin/libretto bench --components build/components --out bench/results
	@$(NODE) bench/stack.mjs
	@$(NODE) bench/system.mjs
	@$(NODE) bench/switch.mjs
	@$(NODE) bench/block.mjs
	@$(NODE) bench/netserver.mjs
	@$(NODE) bench/nbd.mjs
	@$(NODE) bench/mc.mjs
	@$(NODE) bench/netpipe.mjs
	@$(NODE) bench/kv.mjs
	@$(NODE) bench/httpd.mjs
	@$(NODE) bench/guest.mjs

# The host as a bootable guest (xen-host/): build/guest/vmlinuz and initrd.img.
image: setup build components images
	@echo "== guest image"
	@bash xen-host/build-image.sh

run-guest: image
	@bash xen-host/run-guest.sh

clean:
	rm -rf build/components build/bundles bin/libretto
	cd host && $(CARGO) clean
