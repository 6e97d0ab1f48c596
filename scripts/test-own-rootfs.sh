#!/usr/bin/env bash
# Build test of scripts/own-rootfs.sh (issue 16 §2), run by `make test-build`: small rootfs trees
# as a directory, a tarball and a squashfs image; what is added in each case (systemd or not,
# networkd with or without a network setup of its own); and the refusals: an INIT missing from
# the rootfs (also one that only exists on the host through an absolute symlink), an input that
# is not a root filesystem. A static busybox stands in for plasmd.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tool=$here/own-rootfs.sh
plasmd=${BUSYBOX:-/bin/busybox}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() {
    echo "test-own-rootfs: FAIL: $*" >&2
    exit 1
}
# listing IMAGE: the paths in a squashfs image, one per line, without the squashfs-root prefix.
listing() { unsquashfs -l "$1" | sed -n 's|^squashfs-root||p'; }
has() { grep -qx "$2" <<<"$1" || fail "$3: $2 missing from the image"; }
lacks() { ! grep -qx "$2" <<<"$1" || fail "$3: $2 should not be in the image"; }

# A plain rootfs: busybox, /sbin/init -> /bin/busybox (absolute link, resolved in the tree).
plain=$work/plain
mkdir -p "$plain"/{etc,bin,sbin}
cp "$plasmd" "$plain/bin/busybox"
ln -s /bin/busybox "$plain/sbin/init"
ln -s busybox "$plain/bin/sh"

# 1. directory input, no systemd: plasmd + the phase-init service file, no systemd units.
log=$("$tool" "$plain" "$plasmd" /sbin/init "$work/1.sqfs" 2>&1) || fail "directory input: $log"
l=$(listing "$work/1.sqfs")
has "$l" /usr/local/bin/plasmd "directory input"
has "$l" /etc/phase/services/plasmd.toml "directory input"
has "$l" /var/lib/phase/boot "directory input"
has "$l" /sbin/init "directory input"
lacks "$l" /etc/systemd/system/plasmd.service "no systemd"
grep -q 'own-rootfs: added /usr/local/bin/plasmd' <<<"$log" || fail "the build log does not list what was added: $log"
unsquashfs -cat "$work/1.sqfs" etc/phase/services/plasmd.toml | grep -q '"/usr/local/bin/plasmd"' ||
    fail "the service file does not run /usr/local/bin/plasmd"
[[ -e $plain/usr ]] && fail "the input directory was changed"

# 2. the same image again is byte for byte the same (times 0, -reproducible).
"$tool" "$plain" "$plasmd" /sbin/init "$work/2.sqfs" >/dev/null 2>&1 || fail "second build"
cmp -s "$work/1.sqfs" "$work/2.sqfs" || fail "two builds of the same rootfs differ"

# 3. refusals.
if log=$("$tool" "$plain" "$plasmd" /sbin/no-such-init "$work/3.sqfs" 2>&1); then
    fail "a missing INIT was accepted"
fi
grep -q 'INIT=/sbin/no-such-init is not an executable file' <<<"$log" || fail "unclear error: $log"
[[ -e $work/3.sqfs ]] && fail "an image was written despite the missing INIT"
[[ -e $work/3.sqfs.tree ]] && fail "the staging tree was left behind after the refusal"
# /usr/bin/env exists on the host, not in this tree: followed on the host, this absolute link
# would look fine; resolved inside the tree as the target will, it is missing.
[[ -x /usr/bin/env ]] || fail "this test needs /usr/bin/env on the host"
ln -s /usr/bin/env "$plain/sbin/hostlink"
if "$tool" "$plain" "$plasmd" /sbin/hostlink "$work/3.sqfs" >/dev/null 2>&1; then
    fail "an INIT that resolves outside the rootfs was accepted"
fi
rm "$plain/sbin/hostlink"
mkdir -p "$work/notroot/bin"
if log=$("$tool" "$work/notroot" "$plasmd" "" "$work/3.sqfs" 2>&1); then
    fail "a tree without /etc was accepted"
fi
grep -q 'has no /etc' <<<"$log" || fail "unclear error for a non-rootfs: $log"

# 4. tarball input with systemd and networkd (+ udevd), no network setup: unit, links, .network.
sd=$work/sd
cp -a "$plain" "$sd"
mkdir -p "$sd/usr/lib/systemd/system"
ln -s usr/lib "$sd/lib"
for b in systemd systemd-networkd systemd-udevd; do
    cp "$plasmd" "$sd/usr/lib/systemd/$b"
done
tar -C "$sd" -czf "$work/sd.tar.gz" .
log=$("$tool" "$work/sd.tar.gz" "$plasmd" /lib/systemd/systemd "$work/4.sqfs" 2>&1) || fail "tarball input: $log"
l=$(listing "$work/4.sqfs")
for p in /etc/systemd/system/plasmd.service /etc/systemd/system/multi-user.target.wants/plasmd.service \
    /etc/systemd/network/80-phase-dhcp.network \
    /etc/systemd/system/multi-user.target.wants/systemd-networkd.service \
    /etc/systemd/system/network-online.target.wants/systemd-networkd-wait-online.service; do
    has "$l" "$p" "tarball with systemd"
done
unsquashfs -cat "$work/4.sqfs" etc/systemd/system/plasmd.service |
    grep -qx 'ExecStart=/usr/local/bin/plasmd serve --artifacts /var/lib/phase/boot' ||
    fail "plasmd.service does not start /usr/local/bin/plasmd"
grep -q warning <<<"$log" && fail "unexpected warning: $log"
# No /etc/machine-id in that tarball: an empty one is added (else a first boot, every boot).
[[ $(unsquashfs -cat "$work/4.sqfs" etc/machine-id | wc -c) -eq 0 ]] && has "$l" /etc/machine-id "no machine id" ||
    fail "no empty /etc/machine-id added to a systemd rootfs without one"

# 5. squashfs input with a network setup of its own: kept, nothing of ours added for it; and a
# machine id of "uninitialized" (first boot) replaced by an empty file.
echo uninitialized >"$sd/etc/machine-id"
mkdir -p "$sd/etc/systemd/network"
printf '[Match]\nName=eth0\n[Network]\nAddress=192.0.2.50/24\n' >"$sd/etc/systemd/network/10-own.network"
rm "$sd/usr/lib/systemd/systemd-udevd"
mksquashfs "$sd" "$work/sd.sqfs" -quiet -no-progress -noappend >/dev/null
log=$("$tool" "$work/sd.sqfs" "$plasmd" /lib/systemd/systemd "$work/5.sqfs" 2>&1) || fail "squashfs input: $log"
l=$(listing "$work/5.sqfs")
has "$l" /etc/systemd/network/10-own.network "squashfs input"
lacks "$l" /etc/systemd/network/80-phase-dhcp.network "own network setup"
grep -q "kept the rootfs's own network setup" <<<"$log" || fail "no note about the own network setup: $log"
[[ $(unsquashfs -cat "$work/5.sqfs" etc/machine-id | wc -c) -eq 0 ]] ||
    fail "an 'uninitialized' /etc/machine-id was kept (systemd-firstboot would wait on the console)"

# 6. networkd without udevd and without a network setup: the config, and a warning; a real
# machine id is kept, with a note.
rm "$sd/etc/systemd/network/10-own.network"
echo 0123456789abcdef0123456789abcdef >"$sd/etc/machine-id"
log=$("$tool" "$sd" "$plasmd" /lib/systemd/systemd "$work/6.sqfs" 2>&1) || fail "no udevd: $log"
grep -q 'no systemd-udevd' <<<"$log" || fail "no warning about the missing udevd: $log"
[[ $(unsquashfs -cat "$work/6.sqfs" etc/machine-id) == 0123456789abcdef0123456789abcdef ]] ||
    fail "a machine id of the rootfs's own was changed"
grep -q 'shares it' <<<"$log" || fail "no note about a shared machine id: $log"

echo "test-own-rootfs: ok (directory, tarball, squashfs inputs; 3 refusals)"
