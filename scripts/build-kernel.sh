#!/usr/bin/env bash
# Builds the Phase Boot kernel (issue 8, `make kernel`): KERNEL_BASE (tinyconfig or defconfig)
# plus kernel-config/phase.config, then fails if any fragment option did not survive
# `make olddefconfig` (phase-layout check-kernel-config --exact), then builds bzImage.
# With KARCH=arm64 (issue 17 §2): kernel-config/phase-arm64.config, cross-compiled with
# aarch64-linux-gnu-gcc, and a raw Image (what arm64's kexec_file_load accepts).
#
# usage: build-kernel.sh OUTDIR        (writes OUTDIR/bzImage or OUTDIR/Image, and OUTDIR/config)
# env:   KERNEL_SRC   kernel source tree or tarball (default: Debian's linux-source tarball,
#                     installed with apt-get when absent)
#        KERNEL_BASE  tinyconfig (default) or defconfig
#        JOBS         parallel jobs (default: nproc)
#        KARCH        x86_64 (default) or arm64
#        KERNEL_SRC_DIR  where a source tarball is unpacked (default OUTDIR/src)
#        LAYOUT_TOOL  path of the phase-layout binary
#        CONFIG_ONLY  1: stop after the configuration check (OUTDIR/config), no bzImage
#        DEPS_ONLY    1: only install the kernel source and tools when absent, then stop
#        KERNEL_PACKAGES, SUDO   what to apt-get install and how
set -euo pipefail

out=${1:?usage: build-kernel.sh OUTDIR}
repo=$(cd "$(dirname "$0")/.." && pwd)
base=${KERNEL_BASE:-tinyconfig}
jobs=${JOBS:-$(nproc)}
tool=${LAYOUT_TOOL:-$repo/target/debug/phase-layout}
karch=${KARCH:-x86_64}
case $karch in
    x86_64) fragment=$repo/kernel-config/phase.config image=bzImage image_src=arch/x86/boot/bzImage cross= ;;
    arm64) fragment=$repo/kernel-config/phase-arm64.config image=Image image_src=arch/arm64/boot/Image
        cross=aarch64-linux-gnu- ;;
    *) echo "kernel: KARCH must be x86_64 or arm64" >&2; exit 2 ;;
esac
case $base in tinyconfig | defconfig) ;; *) echo "kernel: KERNEL_BASE must be tinyconfig or defconfig" >&2; exit 2 ;; esac
mkdir -p "$out"
out=$(cd "$out" && pwd)

src=${KERNEL_SRC:-}
if [[ -z $src ]]; then
    tarball=$(ls /usr/src/linux-source-*.tar.xz 2>/dev/null | sort -V | tail -1 || true)
    if [[ -z $tarball ]]; then
        echo "kernel: installing ${KERNEL_PACKAGES:-linux-source} (Debian's kernel source, ~140 MB)"
        export DEBIAN_FRONTEND=noninteractive
        ${SUDO:-} apt-get update -q
        # shellcheck disable=SC2086
        ${SUDO:-} apt-get install -y -q --no-install-recommends ${KERNEL_PACKAGES:-linux-source}
        tarball=$(ls /usr/src/linux-source-*.tar.xz | sort -V | tail -1)
    fi
    src=$tarball
fi
if [[ ${DEPS_ONLY:-0} == 1 ]]; then
    echo "kernel: source $src and build tools present (DEPS_ONLY=1: nothing built)"
    exit 0
fi
if [[ -f $src ]]; then
    # A tarball: unpack once into KERNEL_SRC_DIR (default OUTDIR/src), which both
    # architectures' builds may share: objects go to OUTDIR/obj.
    name=$(basename "$src" .tar.xz)
    srcdir=${KERNEL_SRC_DIR:-$out/src}
    if [[ ! -f $srcdir/$name/Makefile ]]; then
        echo "kernel: unpacking $src"
        rm -rf "$srcdir" && mkdir -p "$srcdir"
        tar -xf "$src" -C "$srcdir"
    fi
    src=$(cd "$srcdir/$name" && pwd)
fi
[[ -f $src/Makefile && -d $src/scripts/kconfig ]] || { echo "kernel: $src is not a kernel source tree" >&2; exit 1; }

obj=$out/obj
mkdir -p "$obj"
kmake() { make -C "$src" O="$obj" ARCH="$karch" ${cross:+CROSS_COMPILE=$cross} -j"$jobs" "$@"; }
echo "kernel: $base + $fragment in $src"
kmake -s "$base"
"$src/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "$fragment" >/dev/null
kmake -s olddefconfig
"$tool" check-kernel-config --exact --config "$obj/.config" --fragment "$fragment" \
    || { echo "kernel: options above did not survive olddefconfig (missing dependencies?)" >&2; exit 1; }
cp -f "$obj/.config" "$out/config"
if [[ ${CONFIG_ONLY:-0} == 1 ]]; then
    echo "kernel: $out/config ok (CONFIG_ONLY=1: $image not built)"
    exit 0
fi
kmake "$image" KBUILD_BUILD_TIMESTAMP="@${SOURCE_DATE_EPOCH:-0}" KBUILD_BUILD_USER=phase KBUILD_BUILD_HOST=phase
cp -f "$obj/$image_src" "$out/$image"
cp -f "$obj/.config" "$out/config"
echo "kernel: $out/$image ($(stat -c %s "$out/$image") bytes)"
