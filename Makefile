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
#                    (ARCH=arm64: build/kernel-arm64/Image, kernel-config/phase-arm64.config)
#   make check-kernel-config KCONFIG=/boot/config-X
#   make test        fmt, clippy, workspace tests, build tests, QEMU boot tests (x86_64, arm64)
#   make ARCH=arm64 release   the same release for aarch64 (cross build; docs/building.md)
#   make test-qemu-arm        the arm64 QEMU boot tests
#   make clean

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := all
.DELETE_ON_ERROR:

ARCH ?= x86_64
# arm64 and aarch64 are one architecture (issue 17); aarch64 is the canonical name, as in
# release/<channel>/aarch64/ and the manifest's "arch".
ifneq ($(filter arm64 aarch64,$(ARCH)),)
  override ARCH := aarch64
else ifneq ($(filter amd64 x86_64,$(ARCH)),)
  override ARCH := x86_64
else
  $(error ARCH=$(ARCH) is unknown: use ARCH=x86_64 (amd64) or ARCH=arm64 (aarch64))
endif

# ---- variables (override on the command line) ---------------------------------------------
BUILD      ?= build
# The project's own kernel (`make kernel`): build/kernel/bzImage, or build/kernel-arm64/Image.
KERNEL_OUT := $(BUILD)/kernel$(if $(filter aarch64,$(ARCH)),-arm64)
KERNEL_IMAGE := $(KERNEL_OUT)/$(if $(filter aarch64,$(ARCH)),Image,bzImage)
# The host's own static binaries: plasmd signs every release, whatever its ARCH.
HOST_TRIPLE := x86_64-unknown-linux-gnu
HOST_BIN_DIR := target/$(HOST_TRIPLE)/release
ifeq ($(ARCH),aarch64)
  # Cross build with Debian's rustc-web and its arm64 std (rustup cannot fetch targets here),
  # in a target directory of its own: the two compilers' artifacts must not mix. Debian's arm64
  # kernel, busybox and systemd-boot are unpacked, not installed, into ARM64_ROOT.
  TRIPLE   := aarch64-unknown-linux-gnu
  CROSS_TARGET_DIR := target/debian-aarch64
  BIN_DIR  := $(CROSS_TARGET_DIR)/$(TRIPLE)/release
  ARCH_OUT := $(BUILD)/aarch64
  ARM64_ROOT := $(BUILD)/debian-arm64
  ARM64_STAMP := $(ARM64_ROOT)/.unpacked
  KVER     ?= $(shell ls $(ARM64_ROOT)/lib/modules 2>/dev/null | sort -rV | head -n1)
  KERNEL   ?= $(ARM64_ROOT)/boot/vmlinuz-$(KVER)
  KCONFIG  ?= $(if $(filter $(KERNEL_IMAGE),$(KERNEL)),$(KERNEL_OUT)/config,$(ARM64_ROOT)/boot/config-$(KVER))
  MODULES_ROOT ?= $(ARM64_ROOT)/lib/modules
  BUSYBOX  ?= $(ARM64_ROOT)/bin/busybox
  RESCUE_ROOT ?= $(ARM64_ROOT)
  SYSTEMD_BOOT ?= $(ARM64_ROOT)/usr/lib/systemd/boot/efi/systemd-bootaa64.efi
  EFI_BOOT_NAME := BOOTAA64.EFI
  CMDLINE  ?= console=ttyAMA0 panic=10
  CARGO_BUILD = env -u RUSTUP_TOOLCHAIN PATH=/usr/bin:/bin:/usr/sbin:/sbin RUSTC=/usr/bin/rustc \
    RUSTDOC=/usr/bin/rustdoc CARGO_TARGET_DIR=$(CROSS_TARGET_DIR) \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
    RUSTFLAGS="$(STATIC_RUSTFLAGS)" /usr/bin/cargo build --release --target $(TRIPLE)
else
  TRIPLE   := $(HOST_TRIPLE)
  BIN_DIR  := $(HOST_BIN_DIR)
  ARCH_OUT := $(BUILD)
  ARM64_STAMP :=
  SYSTEMD_BOOT ?= /usr/lib/systemd/boot/efi/systemd-bootx64.efi
  EFI_BOOT_NAME := BOOTX64.EFI
  CARGO_BUILD = RUSTFLAGS="$(STATIC_RUSTFLAGS)" cargo build --release --target $(TRIPLE)
endif
HOST_PLASMD := $(HOST_BIN_DIR)/plasmd
CHANNEL    ?= stable
VERSION    ?= 0.1.0
EXPIRES    ?= 30d
# Manifest format of `make release` (docs/manifest.md): 2 lists every chunk's SHA-256 (issue
# 19); 1 for boot media built before v2. CHUNK_SIZE (e.g. 1M) overrides the per-artifact default.
MANIFEST_VERSION ?= 2
CHUNK_SIZE ?=
CMDLINE    ?= console=tty0 console=ttyS0,115200 panic=10
MODE       ?= local
# The newest kernel in /lib/modules that has a matching /boot/vmlinuz.
KVER       ?= $(shell for k in $$(ls /lib/modules 2>/dev/null | sort -rV); do \
                [ -f /boot/vmlinuz-$$k ] && { echo $$k; break; }; done)
KERNEL     ?= /boot/vmlinuz-$(KVER)
KCONFIG    ?= $(if $(filter $(KERNEL_IMAGE),$(KERNEL)),$(KERNEL_OUT)/config,/boot/config-$(KVER))
MODULES_ROOT ?= /lib/modules
BUSYBOX    ?= /bin/busybox
# The initramfs's rescue shell and tools come from klibc-utils under RESCUE_ROOT
# (scripts/rescue-tools.sh); the rootfs and the bench's shell baseline keep BUSYBOX.
RESCUE_ROOT ?= /
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
ROOTFS_IMG := $(if $(strip $(ROOTFS)),$(ARCH_OUT)/own-rootfs.squashfs,$(ARCH_OUT)/rootfs.squashfs)
RELEASE_CMDLINE := $(strip $(CMDLINE) $(if $(strip $(INIT)),phase.init=$(if $(word 2,$(INIT)),"$(strip $(INIT))",$(strip $(INIT)))))
IMAGE      ?= $(ARCH_OUT)/phase-$(MODE).img
KERNEL_SRC ?=
KERNEL_BASE ?= tinyconfig
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
# Initramfs compression: zstd when the kernel config has RD_ZSTD, else gzip.
INITRD_COMP ?= $(shell grep -qs '^CONFIG_RD_ZSTD=y' $(KCONFIG) || [ ! -f $(KCONFIG) ] && echo zstd || echo gzip)
ifeq ($(INITRD_COMP),zstd)
  INITRD := $(ARCH_OUT)/initramfs.cpio.zst
else
  INITRD := $(ARCH_OUT)/initramfs.cpio.gz
endif
SOURCE_DATE_EPOCH ?= 0
SUDO       ?= $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

# The custom kernel (KERNEL=build/kernel/bzImage, build/kernel-arm64/Image) has everything
# built in: no modules to carry.
NO_MODULES ?= $(if $(filter $(KERNEL_IMAGE),$(KERNEL)),1,)
ifeq ($(NO_MODULES),1)
  LAYOUT_MODULES := --no-modules
else
  # Recursive (=), not :=, so that KVER is looked up when a recipe runs, after `deps` has
  # installed the kernel on a fresh machine, not when make parsed this file.
  LAYOUT_MODULES = --kver $(KVER) --modules-root $(MODULES_ROOT)
endif
RESCUE_DIR := $(ARCH_OUT)/rescue
INITRAMFS_VARS = --var repo=$(CURDIR) --var bin_dir=$(BIN_DIR) --var rescue=$(RESCUE_DIR) \
  --var trust=$(TRUST) --var release=$(ARCH_OUT)/release.conf
LAYOUT_TOOL := target/debug/phase-layout
STATIC_RUSTFLAGS := -C target-feature=+crt-static
COMMON_PACKAGES := squashfs-tools dnsmasq-base dosfstools mtools cpio zstd iproute2 fdisk file \
  avahi-daemon avahi-utils curl kmod gzip
ifeq ($(ARCH),aarch64)
  # Debian's rustc-web and the arm64 std of the same version, in one apt transaction (issue 17).
  DEB_PACKAGES := $(COMMON_PACKAGES) qemu-system-arm qemu-efi-aarch64 rustc-web cargo-web \
    libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross
else
  DEB_PACKAGES := $(COMMON_PACKAGES) qemu-system-x86 linux-image-amd64 busybox-static klibc-utils \
    ovmf systemd-boot-efi
endif
KERNEL_PACKAGES := linux-source build-essential bc flex bison libelf-dev libssl-dev xz-utils

.PHONY: check-disk all deps build layout-tool initramfs initramfs-compressed-modules rootfs keys release image esp write-usb kernel kernel-image \
  check-kernel-config test test-build test-deps test-background test-qemu test-qemu-x86 test-qemu-arm run clean check-make-deps distro-rootfs

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
	    if echo "$$missing" | grep -q ':arm64' && ! dpkg --print-foreign-architectures | grep -qx arm64; then \
	        echo "deps: dpkg --add-architecture arm64"; $(SUDO) dpkg --add-architecture arm64; fi; \
	    $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	else echo "deps: all Debian packages present"; fi
	@command -v cargo >/dev/null || { echo "deps: cargo not found: install Rust (rustup) first" >&2; exit 1; }
	@touch $@

# ---- build --------------------------------------------------------------------------------
# SKIP_BUILD=1 uses the binaries already in $(BIN_DIR) (still checked to be static).
# Every user-facing target reaches `deps` through `build` (or directly), so a fresh checkout's
# first command installs what it needs (issue 16).
# ARCH=arm64 also builds the host's plasmd, which signs the release. $(BIN_DIR)/phase, the
# `phase` tool for hosts, is a link to phase-init, which runs the tool when called by that name.
FILE_ARCH := $(if $(filter aarch64,$(ARCH)),ARM aarch64,x86-64)
# phase-init and phase-provider build apart (issue 18 §1): cargo unifies the features of the
# packages of one build, and plasmd's tracing-subscriber env-filter (regex-automata) must not
# reach /init. /init is built for size (Cargo.toml: opt-level "z"); plasmd, which lives on the
# rootfs and serves every peer, for speed (PLASMD_OPT_LEVEL; at "z" it answered 0.80x as many
# manifest requests per second as at 3 in one run of the provider bench). The arm64 cross
# build keeps one dependency tree (both at "z"), which saves `make test` a second cross
# compile of it; PLASMD_OPT_LEVEL=3 builds arm64's plasmd for speed too.
PLASMD_OPT_LEVEL ?= $(if $(filter aarch64,$(ARCH)),,3)
build: deps $(ARM64_STAMP)
	$(if $(filter 1,$(SKIP_BUILD)),@echo "build: SKIP_BUILD=1 so using $(BIN_DIR)",$(CARGO_BUILD) -p phase-init)
	$(if $(filter 1,$(SKIP_BUILD)),,$(if $(PLASMD_OPT_LEVEL),CARGO_PROFILE_RELEASE_OPT_LEVEL=$(PLASMD_OPT_LEVEL)) $(CARGO_BUILD) -p phase-provider)
	$(if $(or $(filter 1,$(SKIP_BUILD)),$(filter x86_64,$(ARCH))),,CARGO_PROFILE_RELEASE_OPT_LEVEL=3 RUSTFLAGS="$(STATIC_RUSTFLAGS)" cargo build --release --target $(HOST_TRIPLE) -p phase-provider)
	@# The host's `phase` tool is the same multicall binary (issue 18 §1): a link named phase.
	@ln -sfn phase-init $(BIN_DIR)/phase
	@for b in phase-init phase plasmd; do \
	    file -L $(BIN_DIR)/$$b | grep -qE 'statically linked|static-pie linked' || { echo "build: $(BIN_DIR)/$$b is not static" >&2; exit 1; }; \
	    file -L $(BIN_DIR)/$$b | grep -q '$(FILE_ARCH)' || { echo "build: $(BIN_DIR)/$$b is not $(FILE_ARCH)" >&2; exit 1; }; \
	done; echo "build: static $(FILE_ARCH) binaries in $(BIN_DIR)"

# Debian's arm64 kernel, modules, busybox, klibc-utils and systemd-bootaa64.efi, unpacked
# (ARCH=arm64 only).
$(BUILD)/debian-arm64/.unpacked: scripts/arm64-debs.sh | deps
	scripts/arm64-debs.sh $(BUILD)/debian-arm64
	@touch $@

layout-tool:
	cargo build -q -p phase-layout

# ---- keys ---------------------------------------------------------------------------------
keys: $(TRUST)
$(DEV_KEY): | build
	@mkdir -p $(KEYS_DIR)
	$(HOST_PLASMD) keygen --out $@
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
$(ARCH_OUT)/release.conf: FORCE
	@mkdir -p $(ARCH_OUT)
	@printf 'channel=%s\narch=%s\nversion=%s\n' '$(CHANNEL)' '$(ARCH)' '$(VERSION)' > $@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv -f $@.tmp $@
# Rebuilt every time (FORCE: its inputs are files the layout names), but replaced only when
# its bytes change, so the zstd -19 below (about 9 s) and the variants run only then.
$(ARCH_OUT)/initramfs.cpio: build layout-tool $(TRUST) $(ARCH_OUT)/release.conf FORCE
	@[ -n "$(KVER)$(NO_MODULES)" ] || { echo "initramfs: no kernel in /lib/modules with /boot/vmlinuz-*; run make deps" >&2; exit 1; }
	scripts/rescue-tools.sh $(RESCUE_ROOT) $(RESCUE_DIR)
	$(LAYOUT_TOOL) initramfs --layout initramfs-layout/initramfs.toml $(LAYOUT_MODULES) \
	  $(INITRAMFS_VARS) --out $@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv -f $@.tmp $@
$(ARCH_OUT)/initramfs.cpio.zst: $(ARCH_OUT)/initramfs.cpio
	zstd -19 -T1 -q -f --no-progress $< -o $@
$(ARCH_OUT)/initramfs.cpio.gz: $(ARCH_OUT)/initramfs.cpio
	gzip -9 -n -c $< > $@

# Initramfs variants whose kernel modules are compressed as distributions ship them (.ko.xz,
# .ko.zst; issue 16 §3), for the QEMU test that boots them on Debian's kernel, which cannot
# decompress modules itself: the init must.
initramfs-compressed-modules: $(ARCH_OUT)/initramfs-modxz.cpio.zst $(ARCH_OUT)/initramfs-modzst.cpio.zst
$(ARCH_OUT)/initramfs-mod%.cpio.zst: $(ARCH_OUT)/initramfs.cpio
	scripts/compress-modules.sh $< $(MODULES_ROOT) $(KVER) $(ARCH_OUT)/modules-$* $*
	$(LAYOUT_TOOL) initramfs --layout initramfs-layout/initramfs.toml --kver $(KVER) \
	  --modules-root $(ARCH_OUT)/modules-$* $(INITRAMFS_VARS) \
	  --out $(ARCH_OUT)/initramfs-mod$*.cpio
	zstd -19 -T1 -q -f --no-progress $(ARCH_OUT)/initramfs-mod$*.cpio -o $@

# ---- rootfs -------------------------------------------------------------------------------
rootfs: $(ARCH_OUT)/rootfs.squashfs
$(ARCH_OUT)/rootfs.squashfs: build layout-tool FORCE
	rm -rf $(ARCH_OUT)/rootfs.tree
	$(LAYOUT_TOOL) rootfs-tree --layout initramfs-layout/rootfs.toml \
	  --var bin_dir=$(BIN_DIR) --var busybox=$(BUSYBOX) --out $(ARCH_OUT)/rootfs.tree
	env -u SOURCE_DATE_EPOCH mksquashfs $(ARCH_OUT)/rootfs.tree $@.tmp -noappend -quiet -no-progress -comp zstd \
	  -all-root -all-time 0 -mkfs-time 0 -no-xattrs -reproducible -processors 1
	mv -f $@.tmp $@

# Your own root filesystem (ROOTFS=PATH) with plasmd, its unit and a network config added;
# scripts/own-rootfs.sh prints each file it adds.
$(ARCH_OUT)/own-rootfs.squashfs: build FORCE
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
	$(HOST_PLASMD) manifest build --artifacts $(RELEASE_DIR) --channel $(CHANNEL) --arch $(ARCH) \
	  --version $(VERSION) --expires-in $(EXPIRES) --cmdline '$(RELEASE_CMDLINE)' \
	  --manifest-version $(MANIFEST_VERSION) $(if $(strip $(CHUNK_SIZE)),--chunk-size $(CHUNK_SIZE)) \
	  --out $(ARCH_OUT)/manifest.unsigned.json
	$(HOST_PLASMD) manifest sign --key $(KEY) --in $(ARCH_OUT)/manifest.unsigned.json --out $@
	@echo "release: $(RELEASE_DIR) ($(CHANNEL)/$(ARCH) $(VERSION), signed with $(KEY))$(if $(strip $(ROOTFS)), rootfs from $(ROOTFS))$(if $(strip $(INIT)), init $(strip $(INIT)))"

# ---- disk image ---------------------------------------------------------------------------
image: deps $(INITRD)
	@[ -f "$(KERNEL)" ] || { echo "image: kernel $(KERNEL) not found (KERNEL=...)" >&2; exit 1; }
	SYSTEMD_BOOT=$(SYSTEMD_BOOT) EFI_BOOT_NAME=$(EFI_BOOT_NAME) \
	  scripts/mkimage.sh $(IMAGE) $(MODE) $(KERNEL) $(INITRD) "$(CMDLINE)"
	EFI_BOOT_NAME=$(EFI_BOOT_NAME) scripts/check-image.sh $(IMAGE) $(MODE) $(KERNEL) $(INITRD)

# The ESP alone (seed 003 "Build System Pattern"): the FAT partition image that `make image`
# puts first on the GPT disk, as build/esp-<MODE>.img, for users who write their own ESP.
esp: image
	scripts/extract-esp.sh $(IMAGE) $(ARCH_OUT)/esp-$(MODE).img

write-usb:
	scripts/write-usb.sh "$(DEV)" $(IMAGE)

# ---- kernel -------------------------------------------------------------------------------
kernel: deps layout-tool kernel-image
# The build alone, without kernel's prerequisites (`make test` builds layout-tool and installs
# the kernel source before it starts this in the background).
kernel-image:
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) KERNEL_SRC="$(KERNEL_SRC)" KERNEL_BASE=$(KERNEL_BASE) JOBS=$(JOBS) SUDO="$(SUDO)" \
	  KARCH=$(if $(filter aarch64,$(ARCH)),arm64,x86_64) KERNEL_SRC_DIR=$(BUILD)/kernel-src \
	  KERNEL_PACKAGES="$(KERNEL_PACKAGES)" LAYOUT_TOOL=$(LAYOUT_TOOL) \
	  scripts/build-kernel.sh $(KERNEL_OUT)

check-kernel-config: deps layout-tool
	@[ -f "$(KCONFIG)" ] || { echo "check-kernel-config: $(KCONFIG) not found (KCONFIG=...)" >&2; exit 1; }
	$(LAYOUT_TOOL) check-kernel-config --config $(KCONFIG)

# ---- tests --------------------------------------------------------------------------------
# Every install first (test-deps: two apt-get installs at once fail on dpkg's lock). Then the
# builds that need no quiet machine, the two kernels and the arm64 cross build, run one after
# another niced in the background (scripts/beside.sh, test-background) from the start: they
# take the core that the foreground leaves idle (the fuzz runs, the single-threaded link and
# compression steps, the one-VM-at-a-time x86_64 QEMU tests). Last, the tests that need them:
# the x86_64 test of the own kernel and the arm64 QEMU tests. Logs: $(BUILD)/logs/. Measured:
# docs/testing.md "CI time".
OWN_KERNEL_X86_TEST := custom_kernel_boots_without_modules_and_kexecs
test: check-disk test-deps layout-tool
	scripts/beside.sh $(BUILD)/logs/test-background.log \
	  '$(MAKE) --no-print-directory test-background' \
	  $(MAKE) --no-print-directory test-build fuzz-smoke bench-smoke test-qemu SKIP_QEMU_TESTS=$(OWN_KERNEL_X86_TEST)
	$(MAKE) --no-print-directory test-qemu-arm ALSO_QEMU_TESTS=$(OWN_KERNEL_X86_TEST)
# The background half of `make test`: the kernels (x86_64, then arm64), then the arm64 cross
# build. Nothing here installs anything (test-deps did) or builds layout-tool (test did), so it
# never waits on dpkg's lock or on the foreground's cargo lock of target/debug.
test-background:
	[ -f $(BUILD)/kernel/bzImage ] || $(MAKE) --no-print-directory kernel-image
	[ -f $(BUILD)/kernel-arm64/Image ] || $(MAKE) --no-print-directory ARCH=arm64 kernel-image
	$(MAKE) --no-print-directory ARCH=arm64 build
# Everything `make test` installs (Debian packages for both architectures, the kernel source,
# Debian's arm64 kernel and busybox, cargo-fuzz, the Debian rootfs for ROOTFS=), one after
# another, before anything runs in the background.
test-deps: deps bench-deps fuzz-deps $(BUILD)/distro/debian.tar
	DEPS_ONLY=1 KERNEL_PACKAGES="$(KERNEL_PACKAGES)" SUDO="$(SUDO)" scripts/build-kernel.sh $(KERNEL_OUT)
	$(MAKE) --no-print-directory ARCH=arm64 deps $(BUILD)/debian-arm64/.unpacked
# A fresh clone's `make test` writes about $(MIN_FREE_GIB) GiB under target/ and build/ (cargo's
# debug, release, cross and fuzz builds, two kernels, the QEMU runs' scratch). Stop at once with
# the reason, not half an hour in with "No space left on device". MIN_FREE_GIB=0 skips it.
MIN_FREE_GIB ?= 14
check-disk:
	@mkdir -p $(BUILD); \
	free=$$(df -Pk $(BUILD) | awk 'NR==2 {print int($$4 / 1048576)}'); \
	if [ "$$free" -lt $(MIN_FREE_GIB) ]; then \
	  echo "check-disk: $$free GiB free under $(BUILD)/, a fresh 'make test' needs about $(MIN_FREE_GIB) GiB" >&2; \
	  echo "check-disk: free space (cargo clean, rm -rf $(BUILD)/qemu-tests) or set MIN_FREE_GIB=0 to go on" >&2; \
	  exit 1; \
	fi; echo "check-disk: $$free GiB free under $(BUILD)/ (need about $(MIN_FREE_GIB))"
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
	sha256sum $(INITRD) $(ARCH_OUT)/rootfs.squashfs > $(ARCH_OUT)/first-build.sha256
	rm -f $(ARCH_OUT)/initramfs.cpio* $(ARCH_OUT)/rootfs.squashfs
	$(MAKE) --no-print-directory initramfs rootfs
	sha256sum -c $(ARCH_OUT)/first-build.sha256
	$(if $(and $(filter zstd,$(INITRD_COMP)),$(if $(NO_MODULES),,1)),scripts/check-size-budget.sh $(ARCH_OUT)/initramfs.cpio $(INITRD),@echo "size-budget: skipped (budgets are for zstd with Debian's modules)")
	scripts/test-size-budget.sh $(ARCH_OUT)/initramfs.cpio $(INITRD)
	scripts/check-init-unwind.sh $(BIN_DIR)/phase-init
	diff <(cpio --quiet -t < $(ARCH_OUT)/initramfs.cpio) \
	  <($(LAYOUT_TOOL) list --names --layout initramfs-layout/initramfs.toml $(LAYOUT_MODULES) \
	    $(INITRAMFS_VARS))
	$(MAKE) --no-print-directory check-kernel-config
	$(MAKE) --no-print-directory release
	scripts/test-check-chunks.sh $(HOST_PLASMD) $(RELEASE_DIR) $(TRUST)
	$(MAKE) --no-print-directory image MODE=$(MODE)
	scripts/check-make-deps.sh
	BUSYBOX=$(BUSYBOX) scripts/test-own-rootfs.sh
	@echo "test-build: ok"

## --- qemu tests (owned by qemu helper) ---
# Boot tests under QEMU/TCG, one at a time (.config/nextest.toml); see docs/testing.md.
# They need the release tree, the USB image (test 6) and the custom kernel (test 7, ~10 min the
# first time). A single test: make test-qemu T=local_mode_boots_via_mdns_and_target_serves
# SKIP_QEMU_TESTS="NAME..." leaves out the tests of those exact names (and, for the own-kernel
# test, the kernel build it needs).
test-qemu-x86: test-qemu
test-qemu: deps release $(BUILD)/chrony/usr/sbin/chronyd
	cargo build -q -p phase-discovery --bin phase-discovery-probe
	$(MAKE) --no-print-directory image MODE=local
	$(if $(NO_MODULES),,$(MAKE) --no-print-directory initramfs-compressed-modules)
	$(MAKE) --no-print-directory distro-rootfs DISTRO=debian
	$(MAKE) --no-print-directory release ROOTFS=$(BUILD)/distro/debian.tar INIT=/lib/systemd/systemd \
	  RELEASE_ROOT=$(BUILD)/release-debian
	$(if $(filter $(OWN_KERNEL_X86_TEST),$(SKIP_QEMU_TESTS)),,[ -f $(KERNEL_IMAGE) ] || $(MAKE) --no-print-directory kernel)
	if cargo nextest --version >/dev/null 2>&1; then \
	  cargo nextest run -p phase-qemu-tests --no-fail-fast \
	    -E 'not binary(arm64)$(foreach s,$(SKIP_QEMU_TESTS), and not test(=$(s)))' $(T); \
	else cargo test -p phase-qemu-tests --no-fail-fast $(T) -- --test-threads 1 --skip arm64_ \
	  $(foreach s,$(SKIP_QEMU_TESTS),--skip $(s)); fi
# arm64 guests (issue 17 §3): the arm64 release from a cross build, served beside x86_64's by
# the host's plasmd from one tree, booted under qemu-system-aarch64 (TCG, one VM at a time).
# ALSO_QEMU_TESTS="NAME..." runs the x86_64 tests of those exact names in the same run (`make
# test`: the own-kernel test, whose kernel was built in the background).
test-qemu-arm: deps release
	$(MAKE) --no-print-directory ARCH=arm64 deps release
	$(MAKE) --no-print-directory ARCH=arm64 image MODE=local
	[ -f $(BUILD)/kernel-arm64/Image ] || $(MAKE) --no-print-directory ARCH=arm64 kernel
	$(if $(filter $(OWN_KERNEL_X86_TEST),$(ALSO_QEMU_TESTS)),[ -f $(KERNEL_IMAGE) ] || $(MAKE) --no-print-directory kernel)
	if cargo nextest --version >/dev/null 2>&1; then \
	  cargo nextest run -p phase-qemu-tests --no-fail-fast \
	    -E 'binary(arm64)$(foreach s,$(ALSO_QEMU_TESTS), or test(=$(s)))' $(T); \
	else cargo test -p phase-qemu-tests --no-fail-fast --test arm64 $(T) -- --test-threads 1 \
	  $(if $(ALSO_QEMU_TESTS),&& cargo test -p phase-qemu-tests --no-fail-fast -- --test-threads 1 --exact $(ALSO_QEMU_TESTS)); fi
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
BENCH_SMOKE_SECTIONS ?= provider,hash,client,footprint,discovery,boot,swarm
.PHONY: bench bench-smoke bench-deps bench-baseline bench-swarm
bench-deps:
	@missing=$$(for p in $(BENCH_DEBS); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "bench-deps: installing $$missing"; export DEBIAN_FRONTEND=noninteractive; \
	    $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends $$missing; fi
bench-baseline: $(ARCH_OUT)/initramfs.cpio bench-deps
	BUSYBOX=$(BUSYBOX) KVER=$(KVER) bench/baseline/build.sh $(ARCH_OUT)/initramfs.cpio $(BUILD)/bench/baseline
bench: deps bench-deps release bench-baseline
	$(MAKE) --no-print-directory ARCH=arm64 deps release
	python3 bench/bench.py
# make bench-swarm: only the boot-storm section (issue 19 §4-§5; N up to 64 clients in network
# namespaces, tbf-capped links, about 5 min), written to build/bench-swarm/ (docs/benchmarks.md
# is written by the full make bench only).
bench-swarm: deps bench-deps build
	python3 bench/bench.py --only swarm --md $(BUILD)/bench-swarm/benchmarks.md --json $(BUILD)/bench-swarm/results.json
bench-smoke: bench-deps build release bench-baseline
	BENCH_SMOKE=1 python3 bench/bench.py --smoke --only $(BENCH_SMOKE_SECTIONS) \
	  --md $(BUILD)/bench-smoke/benchmarks.md --json $(BUILD)/bench-smoke/results.json
## --- end bench ---

## --- fuzz (issue 15 §1; see docs/testing.md "Fuzzing") ---
# make fuzz: every cargo-fuzz target of fuzz/ for FUZZ_SECONDS each, one after another; fails
# naming the target and its crash input under build/fuzz/artifacts/<target>/. The working corpus
# is build/fuzz/corpus/<target> (fuzz/seeds/ is only read). make fuzz-smoke: 10 s each.
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
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=10
## --- end fuzz ---

# ---- clean --------------------------------------------------------------------------------
clean:
	rm -rf $(ARCH_OUT)/initramfs.cpio* $(ARCH_OUT)/rootfs.* $(BUILD)/release $(ARCH_OUT)/release.conf \
	  $(ARCH_OUT)/manifest.unsigned.json $(ARCH_OUT)/phase-*.img
	@echo "clean: kept $(KEYS_DIR) (dev key) and $(KERNEL_OUT); rm -rf $(BUILD) for everything"

FORCE:
