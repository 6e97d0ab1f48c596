#!/usr/bin/env bash
# Build test (issue 16 §1): in a clean clone of HEAD, `make -n run` and `make -n test` reach the
# `deps` step, so a fresh checkout's first command installs what it needs. Fails naming the
# target that would skip it. Run by `make test-build`.
set -euo pipefail
top=$(git rev-parse --show-toplevel)
clone=$(mktemp -d)
trap 'rm -rf "$clone"' EXIT
git clone -q --no-hardlinks "$top" "$clone/repo"
status=0
for target in run test release initramfs rootfs image esp kernel bench distro-rootfs test-qemu-arm; do
    # `make -n` prints each recipe it would run; the deps recipe is the one that calls apt-get.
    # Captured first: `make ... | grep -q` under pipefail fails when grep exits early (SIGPIPE).
    plan=$(make -C "$clone/repo" -n "$target" 2>&1 || true)
    if grep -q 'apt-get install' <<<"$plan"; then
        echo "check-make-deps: make $target reaches deps"
    else
        echo "check-make-deps: make $target does NOT reach deps in a clean clone" >&2
        status=1
    fi
done
exit $status
