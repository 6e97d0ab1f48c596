#!/usr/bin/env bash
# Bring your own root filesystem (issue 16 §2; docs/own-rootfs.md): turns a directory, a
# tarball (`docker export`, mmdebstrap, any tar that GNU tar reads: plain, gz, xz, zst, bz2) or
# a squashfs image into the squashfs lowerdir of a Phase Boot release, with what the target needs
# to re-serve the artifacts it booted from (seed 000 "Self-Hosting Loop"):
#
#   /usr/local/bin/plasmd                      the static provider (always; replaces any older one)
#   /etc/phase/services/plasmd.toml            plasmd for phase-init's own supervisor (used when
#                                              the release has no phase.init)
#   /etc/systemd/system/plasmd.service         when the rootfs has systemd: the unit, enabled in
#   + multi-user.target.wants/ link            multi-user.target
#   /etc/systemd/network/80-phase-dhcp.network when the rootfs has systemd-networkd and no network
#   + systemd-networkd links                   setup of its own: DHCPv4 on en*/eth*, networkd and
#                                              systemd-networkd-wait-online enabled
#   /var/lib/phase/boot                        where phase-init bind-mounts the verified artifacts
#   /etc/machine-id (empty)                    when the rootfs has systemd and no machine id, or
#                                              "uninitialized": otherwise every boot is a first
#                                              boot and systemd-firstboot waits on the console
#
# Every file it adds is printed as `own-rootfs: added PATH (why)`. Nothing else in the rootfs is
# changed. The tree is staged in OUT.tree (removed afterwards unless KEEP_TREE=1); ownership,
# modes and xattrs are kept (the tree must be unpacked as root), timestamps are set to 0 so the
# same input gives the same squashfs.
#
# usage: own-rootfs.sh ROOTFS PLASMD INIT OUT.squashfs
#   ROOTFS  directory, tarball or squashfs image
#   PLASMD  the static plasmd to install
#   INIT    the init the release will exec (phase.init=), checked to exist in the rootfs; may be
#           empty (then phase-init supervises /etc/phase/services itself)
set -euo pipefail

die() {
    echo "own-rootfs: $*" >&2
    exit 1
}
[[ $# -eq 4 ]] || die "usage: $0 ROOTFS PLASMD INIT OUT.squashfs"
src=$1 plasmd=$2 init=$3 out=$4
here=$(cd "$(dirname "$0")/.." && pwd)
unit_src=$here/initramfs-layout/rootfs/usr/lib/systemd/system/plasmd.service
service_src=$here/initramfs-layout/rootfs/etc/phase/services/plasmd.toml

[[ -e $src ]] || die "ROOTFS=$src does not exist (a directory, a tarball or a squashfs image)"
[[ -x $plasmd ]] || die "$plasmd missing (make build)"
file -L "$plasmd" | grep -q static || die "$plasmd is not a static binary"
[[ $(id -u) -eq 0 ]] || die "must run as root: unpacking a rootfs keeps its owners and device nodes"

tree=$out.tree
rm -rf "$tree"
mkdir -p "$tree"
# The staging tree can be hundreds of MB: removed on every exit, also after an error.
trap '[[ ${KEEP_TREE:-} == 1 ]] || rm -rf "$tree"; rm -f "$out.tmp"' EXIT

# ---- unpack -----------------------------------------------------------------------------------
if [[ -d $src ]]; then
    kind=directory
    cp -a "$src/." "$tree/"
elif [[ $(head -c 4 "$src" | od -An -c | tr -d ' ') == hsqs ]]; then
    kind=squashfs
    unsquashfs -quiet -no-progress -force -dest "$tree" "$src" >/dev/null
else
    kind=tarball
    # POSIX ACLs are left out: squashfs cannot store them (mksquashfs would warn per file).
    tar --numeric-owner --xattrs --xattrs-include='*' --xattrs-exclude='system.posix_acl_*' \
        -xpf "$src" -C "$tree" ||
        die "$src is neither a directory, a squashfs image nor a tarball GNU tar can read"
fi
[[ -d $tree/etc ]] || die "$src ($kind) has no /etc: is it a root filesystem? (a tarball must hold ./etc, not DIR/etc)"
echo "own-rootfs: unpacked $src ($kind, $(du -sh --apparent-size "$tree" | cut -f1))"

# The host path of PATH inside the tree, following symlinks component by component as the
# target would (absolute links stay inside the tree; merged /usr's /lib -> usr/lib works).
# Fails after 40 links.
resolve() {
    local rest=${1#/} cur= n=0 comp link
    while [[ -n $rest ]]; do
        comp=${rest%%/*}
        if [[ $rest == */* ]]; then rest=${rest#*/}; else rest=; fi
        case $comp in
            '' | .) continue ;;
            ..) cur=${cur%/*}; continue ;;
        esac
        if [[ -L $tree$cur/$comp ]]; then
            ((++n <= 40)) || return 1
            link=$(readlink "$tree$cur/$comp")
            [[ $link == /* ]] && cur=
            rest=${link#/}${rest:+/$rest}
        else
            cur=$cur/$comp
        fi
    done
    echo "$tree$cur"
}

# ---- checks -----------------------------------------------------------------------------------
if [[ -n $init ]]; then
    bin=${init%% *}
    target=$(resolve "$bin") || die "INIT=$bin: too many symlinks in the rootfs"
    [[ -f $target && -x $target ]] ||
        die "INIT=$bin is not an executable file in $src (the release would fail at exec after switch_root)"
fi
# The first of /usr/lib/systemd and /lib/systemd that holds NAME in the rootfs (as a path of
# the rootfs); fails if neither does.
systemd_lib() {
    local d
    for d in /usr/lib/systemd /lib/systemd; do
        [[ -e $tree$d/$1 ]] && { echo "$d"; return 0; }
    done
    return 1
}
has_systemd=$(systemd_lib system) || true
if [[ -z $init && -n $has_systemd ]]; then
    echo "own-rootfs: note: the rootfs has systemd but INIT is empty: phase-init will supervise /etc/phase/services itself (set INIT=/lib/systemd/systemd to boot systemd)"
fi

added() { echo "own-rootfs: added $1 ($2)"; }

# ---- what the target needs to re-serve itself -------------------------------------------------
install -D -m 0755 -o 0 -g 0 "$plasmd" "$tree/usr/local/bin/plasmd"
added /usr/local/bin/plasmd "static provider, $(stat -c %s "$plasmd") bytes"
install -d -m 0755 "$tree/var/lib/phase/boot"
added /var/lib/phase/boot "mount point of the verified artifacts"
install -d -m 0755 "$tree/etc/phase/services"
sed 's|"/usr/bin/plasmd"|"/usr/local/bin/plasmd"|' "$service_src" >"$tree/etc/phase/services/plasmd.toml"
added /etc/phase/services/plasmd.toml "plasmd under phase-init's supervisor when there is no phase.init"

enable() { # enable UNIT TARGET.wants|TARGET.requires NAME_IN_DIR
    local dir=$tree/etc/systemd/system/$2
    install -d -m 0755 "$dir"
    ln -sfn "$1" "$dir/$3"
    added "/etc/systemd/system/$2/$3" "enables $3"
}

if [[ -n $has_systemd ]]; then
    install -d -m 0755 "$tree/etc/systemd/system"
    sed 's|^ExecStart=/usr/bin/plasmd|ExecStart=/usr/local/bin/plasmd|' "$unit_src" \
        >"$tree/etc/systemd/system/plasmd.service"
    grep -q '^ExecStart=/usr/local/bin/plasmd ' "$tree/etc/systemd/system/plasmd.service" ||
        die "could not point plasmd.service at /usr/local/bin/plasmd"
    added /etc/systemd/system/plasmd.service "systemd unit of the provider"
    enable /etc/systemd/system/plasmd.service multi-user.target.wants plasmd.service

    # systemd's first-boot rule (machine-id(5)): no /etc/machine-id, or one that says
    # "uninitialized", makes every boot a first boot here (the overlay's upperdir is RAM), and
    # Debian's systemd-firstboot.service then waits for locale, timezone and root password on
    # the console: the boot stalls. An empty file is "not a first boot" with a fresh machine id
    # in RAM each boot, the right thing for one image booted by many machines.
    mid=$tree/etc/machine-id
    if [[ -L $mid ]]; then
        echo "own-rootfs: kept /etc/machine-id (a symlink: $(readlink "$mid"))"
    elif [[ ! -e $mid ]] || grep -qx uninitialized "$mid"; then
        : >"$mid"
        chmod 0444 "$mid"
        added /etc/machine-id "empty: no first-boot wizard waiting on the console, a fresh machine id each boot"
    elif [[ -s $mid ]]; then
        echo "own-rootfs: note: /etc/machine-id holds an id: every machine booting this image shares it (empty the file for one id per boot)"
    fi

    # A network setup of the rootfs's own wins: networkd files, ifupdown stanzas other than lo,
    # NetworkManager, netplan.
    own_net=
    compgen -G "$tree/etc/systemd/network/*.network" >/dev/null && own_net="/etc/systemd/network/*.network"
    if [[ -f $tree/etc/network/interfaces ]] &&
        grep -Eq '^[[:space:]]*(auto|allow-hotplug|iface)[[:space:]]+[^l[:space:]]' "$tree/etc/network/interfaces"; then
        own_net=/etc/network/interfaces
    fi
    compgen -G "$tree/etc/netplan/*.yaml" >/dev/null && own_net="/etc/netplan/*.yaml"
    [[ -e $tree/usr/sbin/NetworkManager ]] && own_net=NetworkManager
    networkd=$(systemd_lib systemd-networkd) && networkd=$networkd/system || networkd=
    if [[ -n $own_net ]]; then
        echo "own-rootfs: kept the rootfs's own network setup ($own_net)"
    elif [[ -n $networkd ]]; then
        systemd_lib systemd-udevd >/dev/null || echo "own-rootfs: warning: the rootfs has systemd-networkd but no systemd-udevd (Debian: the udev package): networkd leaves every link unconfigured until udev has seen it, so plasmd will have no address" >&2
        install -d -m 0755 "$tree/etc/systemd/network"
        cat >"$tree/etc/systemd/network/80-phase-dhcp.network" <<'EOF'
# Added by Phase Boot (scripts/own-rootfs.sh): the rootfs had no network setup of its own.
# DHCPv4 on every wired interface, so plasmd can serve the next machine.
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
LinkLocalAddressing=no
EOF
        added /etc/systemd/network/80-phase-dhcp.network "DHCPv4 on en*/eth* (no network setup found)"
        enable "$networkd/systemd-networkd.service" multi-user.target.wants systemd-networkd.service
        enable "$networkd/systemd-networkd.socket" sockets.target.wants systemd-networkd.socket
        enable "$networkd/systemd-networkd-wait-online.service" network-online.target.wants \
            systemd-networkd-wait-online.service
    else
        echo "own-rootfs: warning: no network setup and no systemd-networkd in the rootfs: plasmd will serve only once something brings an interface up" >&2
    fi
fi

# ---- squash -----------------------------------------------------------------------------------
# Owners and xattrs (file capabilities) are the rootfs's own: no -all-root, no -no-xattrs.
# -reproducible gives the same image whatever the number of processors.
rm -f "$out.tmp"
env -u SOURCE_DATE_EPOCH mksquashfs "$tree" "$out.tmp" -noappend -quiet -no-progress -comp zstd \
    -all-time 0 -mkfs-time 0 -reproducible >/dev/null 2> >(grep -v '^Unrecognised xattr prefix system.posix_acl' >&2)
mv -f "$out.tmp" "$out"
echo "own-rootfs: $out ($(stat -c %s "$out") bytes) from $src${init:+, init $init}"
