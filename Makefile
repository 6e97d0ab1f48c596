# Phase Boot build (issue 8, seed 003 "Build System Pattern"). See docs/building.md.
#
#   make deps        install the Debian packages every target needs (once; stamp file)
#   make build       static release binaries: phase-init, phase, plasmd
#   make initramfs   build/initramfs.cpio.zst (reproducible)
#   make rootfs      build/rootfs.squashfs (reproducible)
#   make release     build/release/<channel>/<arch>/{kernel,initramfs,rootfs,manifest.json}
#   make release ROOTFS=PATH INIT=/lib/systemd/systemd
#                    the same from your own root filesystem (directory, tarball or squashfs)
#   make distro-rootfs DISTRO=debian
#                    build/distro/debian.tar: a Debian minbase + systemd rootfs (mmdebstrap)
#   make image       build/phase-<MODE>.img: GPT, ESP with systemd-boot + phase-cache partition
#   make kernel      build/kernel/bzImage from linux-source + kernel-config/phase.config
#   make check-kernel-config KCONFIG=/boot/config-X
#   make test        fmt, clippy, workspace tests, build tests, QEMU boot tests
#   make clean

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := all
.DELETE_ON_ERROR:

ARCH ?= x86_64
ifeq ($(ARCH),arm64)
  $(error ARCH=arm64 is not yet supported: Phase Boot builds x86_64 only for now)
else ifeq ($(ARCH),aarch64)
  $(error ARCH=aarch64 is not yet supported: Phase Boot builds x86_64 only for now)
else ifneq ($(ARCH),x86_64)
  $(error ARCH=$(ARCH) is unknown: use ARCH=x86_64)
endif

# ---- variables (override on the command line) ---------------------------------------------
BUILD      ?= build
TRIPLE     := x86_64-unknown-linux-gnu
BIN_DIR    := target/$(TRIPLE)/release
CHANNEL    ?= stable
VERSION    ?= 0.1.0
EXPIRES    ?= 30d
CMDLINE    ?= console=tty0 console=ttyS0,115200 panic=10
MODE       ?= local
# The newest kernel in /lib/modules that has a matching /boot/vmlinuz.
KVER       ?= $(shell for k in $$(ls /lib/modules 2>/dev/null | sort -rV); do \
                [ -f /boot/vmlinuz-$$k ] && { echo $$k; break; }; done)
KERNEL     ?= /boot/vmlinuz-$(KVER)
KCONFIG    ?= $(if $(filter $(KERNEL_OUT)/bzImage,$(KERNEL)),$(KERNEL_OUT)/config,/boot/config-$(KVER))
MODULES_ROOT ?= /lib/modules
BUSYBOX    ?= /bin/busybox
KEYS_DIR   := $(BUILD)/keys
DEV_KEY    := $(KEYS_DIR)/dev.key
KEY        ?= $(DEV_KEY)
TRUST      ?= $(KEYS_DIR)/trust.toml
RELEASE_ROOT ?= $(BUILD)/release
RELEASE_DIR := $(RELEASE_ROOT)/$(CHANNEL)/$(ARCH)
# Bring your own root filesystem (issue 16 §2; docs/own-rootfs.md): ROOTFS is a directory, a
# tarball or a squashfs image; INIT is the init the target execs (phase.init= in the signed
# manifest's cmdline; quoted when it has arguments).
ROOTFS     ?=
INIT       ?=
DISTRO     ?= debian
DISTRO_SUITE ?=
ROOTFS_IMG := $(if $(strip $(ROOTFS)),$(BUILD)/own-rootfs.squashfs,$(BUILD)/rootfs.squashfs)
RELEASE_CMDLINE := $(strip $(CMDLINE) $(if $(strip $(INIT)),phase.init=$(if $(word 2,$(INIT)),"$(strip $(INIT))",$(strip $(INIT)))))
IMAGE      ?= $(BUILD)/phase-$(MODE).img
KERNEL_SRC ?=
KERNEL_BASE ?= tinyconfig
KERNEL_OUT := $(BUILD)/kernel
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
# Initramfs compression: zstd when the kernel config has RD_ZSTD, else gzip.
INITRD_COMP ?= $(shell grep -qs '^CONFIG_RD_ZSTD=y' $(KCONFIG) || [ ! -f $(KCONFIG) ] && echo zstd || echo gzip)
ifeq ($(INITRD_COMP),zstd)
  INITRD := $(BUILD)/initramfs.cpio.zst
else
  INITRD := $(BUILD)/initramfs.cpio.gz
endif
SOURCE_DATE_EPOCH ?= 0
SUDO       ?= $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

# The custom kernel (KERNEL=build/kernel/bzImage) has everything built in: no modules to carry.
NO_MODULES ?= $(if $(filter $(KERNEL_OUT)/bzImage,$(KERNEL)),1,)
ifeq ($(NO_MODULES),1)
  LAYOUT_MODULES := --no-modules
else
  # Recursive (=), not :=, so that KVER is looked up when a recipe runs, after `deps` has
  # installed the kernel on a fresh machine, not when make parsed this file.
  LAYOUT_MODULES = --kver $(KVER) --modules-root $(MODULES_ROOT)
endif
LAYOUT_TOOL := target/debug/phase-layout
STATIC_RUSTFLAGS := -C target-feature=+crt-static
DEB_PACKAGES := qemu-system-x86 linux-image-amd64 busybox-static squashfs-tools dnsmasq-base \
  ovmf systemd-boot-efi dosfstools mtools cpio zstd iproute2 fdisk file avahi-daemon \
  avahi-utils curl kmod gzip
KERNEL_PACKAGES := linux-source build-essential bc flex bison libelf-dev libssl-dev xz-utils

.PHONY: all deps build layout-tool initramfs initramfs-compressed-modules rootfs keys release image esp write-usb kernel \
  check-kernel-config test test-build test-qemu test-qemu-x86 run clean check-make-deps distro-rootfs

all: release

# ---- deps ---------------------------------------------------------------------------------
DEPS_STAMP := $(BUILD)/.deps-$(shell echo '$(DEB_PACKAGES)' | md5sum | cut -c1-8)
deps: $(DEPS_STAMP)
$(DEPS_STAMP):
	@mkdir -p $(BUILD)
	@missing=$$(for p in $(DEB_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "deps: installing $$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	else echo "deps: all Debian packages present"; fi
	@command -v cargo >/dev/null || { echo "deps: cargo not found: install Rust (rustup) first" >&2; exit 1; }
	@touch $@

# ---- build --------------------------------------------------------------------------------
# SKIP_BUILD=1 uses the binaries already in $(BIN_DIR) (still checked to be static).
# Every user-facing target reaches `deps` through `build` (or directly), so a fresh checkout's
# first command installs what it needs (issue 16).
build: deps
	$(if $(filter 1,$(SKIP_BUILD)),@echo "build: SKIP_BUILD=1 so using $(BIN_DIR)",RUSTFLAGS="$(STATIC_RUSTFLAGS)" cargo build --release --target $(TRIPLE) -p phase-init -p phase-provider)
	@for b in phase-init phase plasmd; do \
	    file -L $(BIN_DIR)/$$b | grep -q 'static' || { echo "build: $(BIN_DIR)/$$b is not static" >&2; exit 1; }; \
	done; echo "build: static binaries in $(BIN_DIR)"

layout-tool:
	cargo build -q -p phase-layout

# ---- keys ---------------------------------------------------------------------------------
keys: $(TRUST)
$(DEV_KEY): | build
	@mkdir -p $(KEYS_DIR)
	$(BIN_DIR)/plasmd keygen --out $@
# The trust root the initramfs carries: the public half of KEY (unless TRUST= names a file).
# Rewritten only when its text changes (so a different KEY= is always picked up).
$(KEYS_DIR)/trust.toml: $(KEY) FORCE
	@mkdir -p $(KEYS_DIR)
	@[ -f $(KEY).pub ] || { echo "keys: $(KEY).pub not found; pass TRUST=FILE" >&2; exit 1; }
	@printf '# Phase Boot trust root (make keys, KEY=%s)\nthreshold = 1\nkeys = ["%s"]\n' \
	  '$(KEY)' "$$(tr -d '[:space:]' < $(KEY).pub)" > $@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || { mv -f $@.tmp $@; echo "keys: $@ trusts $(KEY).pub"; }

# ---- initramfs ----------------------------------------------------------------------------
initramfs: $(INITRD)
$(BUILD)/release.conf: FORCE
	@mkdir -p $(BUILD)
	@printf 'channel=%s\narch=%s\nversion=%s\n' '$(CHANNEL)' '$(ARCH)' '$(VERSION)' > $@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv -f $@.tmp $@
$(BUILD)/initramfs.cpio: build layout-tool $(TRUST) $(BUILD)/release.conf FORCE
	@[ -n "$(KVER)$(NO_MODULES)" ] || { echo "initramfs: no kernel in /lib/modules with /boot/vmlinuz-*; run make deps" >&2; exit 1; }
	$(LAYOUT_TOOL) initramfs --layout initramfs-layout/initramfs.toml $(LAYOUT_MODULES) \
	  --var repo=$(CURDIR) --var bin_dir=$(BIN_DIR) \
	  --var busybox=$(BUSYBOX) --var trust=$(TRUST) --var release=$(BUILD)/release.conf --out $@
$(BUILD)/initramfs.cpio.zst: $(BUILD)/initramfs.cpio
	zstd -19 -T1 -q -f --no-progress $< -o $@
$(BUILD)/initramfs.cpio.gz: $(BUILD)/initramfs.cpio
	gzip -9 -n -c $< > $@

# Initramfs variants whose kernel modules are compressed as distributions ship them (.ko.xz,
# .ko.zst; issue 16 §3), for the QEMU test that boots them on Debian's kernel, which cannot
# decompress modules itself: the init must.
initramfs-compressed-modules: $(BUILD)/initramfs-modxz.cpio.zst $(BUILD)/initramfs-modzst.cpio.zst
$(BUILD)/initramfs-mod%.cpio.zst: $(BUILD)/initramfs.cpio
	scripts/compress-modules.sh $< $(MODULES_ROOT) $(KVER) $(BUILD)/modules-$* $*
	$(LAYOUT_TOOL) initramfs --layout initramfs-layout/initramfs.toml --kver $(KVER) \
	  --modules-root $(BUILD)/modules-$* --var repo=$(CURDIR) --var bin_dir=$(BIN_DIR) \
	  --var busybox=$(BUSYBOX) --var trust=$(TRUST) --var release=$(BUILD)/release.conf \
	  --out $(BUILD)/initramfs-mod$*.cpio
	zstd -19 -T1 -q -f --no-progress $(BUILD)/initramfs-mod$*.cpio -o $@

# ---- rootfs -------------------------------------------------------------------------------
rootfs: $(BUILD)/rootfs.squashfs
$(BUILD)/rootfs.squashfs: build layout-tool FORCE
	rm -rf $(BUILD)/rootfs.tree
	$(LAYOUT_TOOL) rootfs-tree --layout initramfs-layout/rootfs.toml \
	  --var bin_dir=$(BIN_DIR) --var busybox=$(BUSYBOX) --out $(BUILD)/rootfs.tree
	env -u SOURCE_DATE_EPOCH mksquashfs $(BUILD)/rootfs.tree $@.tmp -noappend -quiet -no-progress -comp zstd \
	  -all-root -all-time 0 -mkfs-time 0 -no-xattrs -reproducible -processors 1
	mv -f $@.tmp $@

# Your own root filesystem (ROOTFS=PATH) with plasmd, its unit and a network config added;
# scripts/own-rootfs.sh prints each file it adds.
$(BUILD)/own-rootfs.squashfs: build FORCE
	scripts/own-rootfs.sh '$(ROOTFS)' $(BIN_DIR)/plasmd '$(strip $(INIT))' $@

# A reference rootfs from a real distribution, for ROOTFS= (kept until removed: a download).
distro-rootfs: $(BUILD)/distro/$(DISTRO).tar
	@echo "distro-rootfs: next: make release ROOTFS=$< INIT=/lib/systemd/systemd"
$(BUILD)/distro/%.tar: | deps
	SUDO="$(SUDO)" scripts/distro-rootfs.sh $* $@ $(DISTRO_SUITE)

# ---- release ------------------------------------------------------------------------------
release: $(RELEASE_DIR)/manifest.json
$(RELEASE_DIR)/manifest.json: $(INITRD) $(ROOTFS_IMG) $(KEY) FORCE
	@[ -f "$(KERNEL)" ] || { echo "release: kernel $(KERNEL) not found (KERNEL=...)" >&2; exit 1; }
	@mkdir -p $(RELEASE_DIR)
	cp -f $(KERNEL) $(RELEASE_DIR)/kernel
	cp -f $(INITRD) $(RELEASE_DIR)/initramfs
	cp -f $(ROOTFS_IMG) $(RELEASE_DIR)/rootfs
	$(BIN_DIR)/plasmd manifest build --artifacts $(RELEASE_DIR) --channel $(CHANNEL) --arch $(ARCH) \
	  --version $(VERSION) --expires-in $(EXPIRES) --cmdline '$(RELEASE_CMDLINE)' --out $(BUILD)/manifest.unsigned.json
	$(BIN_DIR)/plasmd manifest sign --key $(KEY) --in $(BUILD)/manifest.unsigned.json --out $@
	@echo "release: $(RELEASE_DIR) ($(CHANNEL)/$(ARCH) $(VERSION), signed with $(KEY))$(if $(strip $(ROOTFS)), rootfs from $(ROOTFS))$(if $(strip $(INIT)), init $(strip $(INIT)))"

# ---- disk image ---------------------------------------------------------------------------
image: deps $(INITRD)
	@[ -f "$(KERNEL)" ] || { echo "image: kernel $(KERNEL) not found (KERNEL=...)" >&2; exit 1; }
	scripts/mkimage.sh $(IMAGE) $(MODE) $(KERNEL) $(INITRD) "$(CMDLINE)"
	scripts/check-image.sh $(IMAGE) $(MODE) $(KERNEL) $(INITRD)

# The ESP alone (seed 003 "Build System Pattern"): the FAT partition image that `make image`
# puts first on the GPT disk, as build/esp-<MODE>.img, for users who write their own ESP.
esp: image
	scripts/extract-esp.sh $(IMAGE) $(BUILD)/esp-$(MODE).img

write-usb:
	scripts/write-usb.sh "$(DEV)" $(IMAGE)

# ---- kernel -------------------------------------------------------------------------------
kernel: deps layout-tool
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) KERNEL_SRC="$(KERNEL_SRC)" KERNEL_BASE=$(KERNEL_BASE) JOBS=$(JOBS) SUDO="$(SUDO)" \
	  KERNEL_PACKAGES="$(KERNEL_PACKAGES)" LAYOUT_TOOL=$(LAYOUT_TOOL) \
	  scripts/build-kernel.sh $(KERNEL_OUT)

check-kernel-config: deps layout-tool
	@[ -f "$(KCONFIG)" ] || { echo "check-kernel-config: $(KCONFIG) not found (KCONFIG=...)" >&2; exit 1; }
	$(LAYOUT_TOOL) check-kernel-config --config $(KCONFIG)

# ---- tests --------------------------------------------------------------------------------
test: test-build fuzz-smoke bench-smoke test-qemu
# Workspace checks, then the build tests on the real artifacts: two initramfs and two rootfs
# builds give the same sha256, the cpio holds what the layout lists, the image checks out.
test-build: deps
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
	if cargo nextest --version >/dev/null 2>&1; then \
	  cargo nextest run --workspace --exclude phase-qemu-tests --no-fail-fast; \
	else cargo test --workspace --exclude phase-qemu-tests --no-fail-fast; fi
	$(MAKE) --no-print-directory initramfs rootfs
	sha256sum $(INITRD) $(BUILD)/rootfs.squashfs > $(BUILD)/first-build.sha256
	rm -f $(BUILD)/initramfs.cpio* $(BUILD)/rootfs.squashfs
	$(MAKE) --no-print-directory initramfs rootfs
	sha256sum -c $(BUILD)/first-build.sha256
	$(if $(and $(filter zstd,$(INITRD_COMP)),$(if $(NO_MODULES),,1)),scripts/check-size-budget.sh $(BUILD)/initramfs.cpio $(INITRD),@echo "size-budget: skipped (budgets are for zstd with Debian's modules)")
	diff <(cpio --quiet -t < $(BUILD)/initramfs.cpio) \
	  <($(LAYOUT_TOOL) list --names --layout initramfs-layout/initramfs.toml $(LAYOUT_MODULES) \
	    --var repo=$(CURDIR) --var bin_dir=$(BIN_DIR) \
	    --var busybox=$(BUSYBOX) --var trust=$(TRUST) --var release=$(BUILD)/release.conf)
	$(MAKE) --no-print-directory check-kernel-config
	$(MAKE) --no-print-directory image MODE=$(MODE)
	scripts/check-make-deps.sh
	BUSYBOX=$(BUSYBOX) scripts/test-own-rootfs.sh
	@echo "test-build: ok"

## --- qemu tests (owned by qemu helper) ---
# Boot tests under QEMU/TCG, one at a time (.config/nextest.toml); see docs/testing.md.
# They need the release tree, the USB image (test 6) and the custom kernel (test 7, ~6 min the
# first time). A single test: make test-qemu T=local_mode_boots_via_mdns_and_target_serves
test-qemu-x86: test-qemu
test-qemu: deps release $(BUILD)/chrony/usr/sbin/chronyd
	cargo build -q -p phase-discovery --bin phase-discovery-probe
	$(MAKE) --no-print-directory image MODE=local
	$(if $(NO_MODULES),,$(MAKE) --no-print-directory initramfs-compressed-modules)
	$(MAKE) --no-print-directory distro-rootfs DISTRO=debian
	$(MAKE) --no-print-directory release ROOTFS=$(BUILD)/distro/debian.tar INIT=/lib/systemd/systemd \
	  RELEASE_ROOT=$(BUILD)/release-debian
	[ -f $(KERNEL_OUT)/bzImage ] || $(MAKE) --no-print-directory kernel
	if cargo nextest --version >/dev/null 2>&1; then \
	  cargo nextest run -p phase-qemu-tests --no-fail-fast $(T); \
	else cargo test -p phase-qemu-tests --no-fail-fast $(T) -- --test-threads 1; fi
# A real NTP server for the no-clock boot test, unpacked from Debian's chrony package instead
# of installed, so that no chronyd service starts on this host.
$(BUILD)/chrony/usr/sbin/chronyd: | deps
	rm -rf $(BUILD)/chrony && mkdir -p $(BUILD)/chrony
	cd $(BUILD)/chrony && apt-get download -q chrony
	dpkg-deb -x $(BUILD)/chrony/chrony_*.deb $(BUILD)/chrony
	$@ -v
# The main job: LAN + provider + one VM in local mode, console live, summary; KEEP=1 keeps it up.
run: deps release
	scripts/run.sh
## --- end qemu tests ---

## --- bench (owned by bench helper; issue 10, see docs/benchmarks.md) ---
# make bench: every figure against its peer in the same run -> docs/benchmarks.md and
# bench/results.json (needs a quiet machine: ~15 min plus the TCG boots). make bench-smoke
# (part of make test): the same scripts on a 4 MiB input, one run, output under build/.
BENCH_DEBS := nginx-light wrk kexec-tools time openssl hyperfine
BENCH_SMOKE_SECTIONS ?= provider,hash,client,footprint,discovery,boot
.PHONY: bench bench-smoke bench-deps bench-baseline
bench-deps:
	@missing=$$(for p in $(BENCH_DEBS); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "bench-deps: installing $$missing"; export DEBIAN_FRONTEND=noninteractive; \
	    $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends $$missing; fi
bench-baseline: $(BUILD)/initramfs.cpio bench-deps
	BUSYBOX=$(BUSYBOX) KVER=$(KVER) bench/baseline/build.sh $(BUILD)/initramfs.cpio $(BUILD)/bench/baseline
bench: deps bench-deps release bench-baseline
	python3 bench/bench.py
bench-smoke: bench-deps build bench-baseline
	BENCH_SMOKE=1 python3 bench/bench.py --smoke --only $(BENCH_SMOKE_SECTIONS) \
	  --md $(BUILD)/bench-smoke/benchmarks.md --json $(BUILD)/bench-smoke/results.json
## --- end bench ---

## --- fuzz (issue 15 §1; see docs/testing.md "Fuzzing") ---
# make fuzz: every cargo-fuzz target of fuzz/ for FUZZ_SECONDS each, one after another; fails
# naming the target and its crash input under build/fuzz/artifacts/<target>/. The working corpus
# is build/fuzz/corpus/<target> (fuzz/seeds/ is only read). make fuzz-smoke: 15 s each.
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_SECONDS ?= 60
# Empty: every target `cargo fuzz list` names (the [[bin]]s of fuzz/Cargo.toml).
FUZZ_TARGETS ?=
.PHONY: fuzz fuzz-smoke fuzz-deps
fuzz-deps:
	@cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked
fuzz: fuzz-deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_OUT=$(BUILD)/fuzz scripts/fuzz.sh $(FUZZ_TARGETS)
fuzz-smoke: fuzz-deps
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=15
## --- end fuzz ---

# ---- clean --------------------------------------------------------------------------------
clean:
	rm -rf $(BUILD)/initramfs.cpio* $(BUILD)/rootfs.* $(BUILD)/release $(BUILD)/release.conf \
	  $(BUILD)/manifest.unsigned.json $(BUILD)/phase-*.img
	@echo "clean: kept $(KEYS_DIR) (dev key) and $(KERNEL_OUT); rm -rf $(BUILD) for everything"

FORCE:
