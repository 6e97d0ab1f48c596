#!/usr/bin/env bash
# A reference root filesystem from a real distribution (issue 16 §2; docs/own-rootfs.md), for
# `make release ROOTFS=...` and the QEMU test that boots it with systemd as PID 1.
#
#   debian   mmdebstrap --variant=minbase of SUITE (default bookworm) from Debian's mirror, plus
#            systemd, systemd-sysv and udev (systemd-networkd configures no link udev has not
#            seen); docs, man pages and locales left out (dpkg path-exclude);
#            hostname phase-debian; root's password locked. Output: an uncompressed tarball.
#
# mmdebstrap is installed from Debian's packages when missing. Needs root (mmdebstrap's root
# mode) and the network (a few tens of MB of packages).
#
# usage: distro-rootfs.sh DISTRO OUT.tar [SUITE]
set -euo pipefail

die() {
    echo "distro-rootfs: $*" >&2
    exit 1
}
[[ $# -ge 2 && $# -le 3 ]] || die "usage: $0 DISTRO OUT.tar [SUITE]"
distro=$1 out=$2 suite=${3:-}

case $distro in
    debian)
        suite=${suite:-bookworm}
        mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
        if ! command -v mmdebstrap >/dev/null; then
            echo "distro-rootfs: installing mmdebstrap"
            export DEBIAN_FRONTEND=noninteractive
            ${SUDO:-} apt-get update -q
            ${SUDO:-} apt-get install -y -q --no-install-recommends mmdebstrap
        fi
        mkdir -p "$(dirname "$out")"
        rm -f "$out.tmp"
        mmdebstrap --mode=root --variant=minbase --format=tar \
            --include=systemd,systemd-sysv,udev \
            --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/doc/*' \
            --dpkgopt='path-include=/usr/share/doc/*/copyright' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            --dpkgopt='path-exclude=/usr/share/info/*' \
            --customize-hook='echo phase-debian > "$1/etc/hostname"' \
            --customize-hook='printf "127.0.0.1\tlocalhost\n127.0.1.1\tphase-debian\n" > "$1/etc/hosts"' \
            --customize-hook='chroot "$1" passwd --lock root' \
            "$suite" "$out.tmp" "$mirror"
        mv -f "$out.tmp" "$out"
        ;;
    *)
        die "DISTRO=$distro is not known (known: debian); any rootfs tarball or directory works with make release ROOTFS=PATH"
        ;;
esac
echo "distro-rootfs: $out ($distro $suite, $(stat -c %s "$out") bytes)"
