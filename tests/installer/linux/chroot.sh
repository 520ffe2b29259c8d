#!/usr/bin/env bash
# The fresh Debian root for the installer journey: a debootstrap bookworm chroot made
# from Debian's packages, cached as a tarball (built once), unpacked fresh per run.
# Usage (sourced): base_tarball -> prints the tarball path (builds it when missing)
#                  chroot_fresh DIR, chroot_mount DIR, chroot_umount DIR
set -euo pipefail

CHROOT_CACHE="${DEMAIL_CHROOT_CACHE:-/root/.cache/demail-chroot}"
CHROOT_MIRROR="${DEMAIL_CHROOT_MIRROR:-http://deb.debian.org/debian}"
CHROOT_SECURITY="${DEMAIL_CHROOT_SECURITY:-http://deb.debian.org/debian-security}"
# Bump when the recipe below changes, so a stale cache is not reused.
CHROOT_RECIPE=2

base_tarball() {
    local tb="$CHROOT_CACHE/bookworm-base-r$CHROOT_RECIPE.tar"
    if [ -s "$tb" ]; then echo "$tb"; return; fi
    mkdir -p "$CHROOT_CACHE/apt-archives/partial"
    local tmp; tmp="$(mktemp -d "$CHROOT_CACHE/build.XXXXXX")"
    echo "debootstrap bookworm → $tb (einmalig / once)" >&2
    # minbase + systemd (systemd-analyze verify runs inside the root) + ca-certificates.
    debootstrap --variant=minbase --include=systemd,ca-certificates,procps \
        --cache-dir="$CHROOT_CACHE/apt-archives" bookworm "$tmp/root" "$CHROOT_MIRROR" >"$tmp/debootstrap.log" 2>&1 \
        || { tail -n 30 "$tmp/debootstrap.log" >&2; rm -rf "$tmp"; return 1; }
    cat >"$tmp/root/etc/apt/sources.list" <<SRC
deb $CHROOT_MIRROR bookworm main
deb $CHROOT_MIRROR bookworm-updates main
deb $CHROOT_SECURITY bookworm-security main
SRC
    chroot "$tmp/root" apt-get update -qq >"$tmp/update.log" 2>&1 || { tail -n 20 "$tmp/update.log" >&2; rm -rf "$tmp"; return 1; }
    chroot "$tmp/root" apt-get clean
    tar -C "$tmp/root" -cf "$tb.part" . && mv "$tb.part" "$tb"
    rm -rf "$tmp"
    echo "$tb"
}

chroot_fresh() {
    local dir="$1" tb
    tb="$(base_tarball)"
    mkdir -p "$dir"
    tar -C "$dir" -xf "$tb"
}

# /proc and /dev for maintainer scripts; the downloaded .debs are kept between runs.
# Call only inside a private mount namespace (unshare -m --propagation private), so
# nothing mounted here can reach the host.
chroot_mount() {
    local dir="$1"
    mount -t proc proc "$dir/proc"
    mount --bind /dev "$dir/dev"
    mkdir -p "$CHROOT_CACHE/apt-archives/partial"
    mount --bind "$CHROOT_CACHE/apt-archives" "$dir/var/cache/apt/archives"
    mkdir -p "$dir/run/user"
    mount -t tmpfs tmpfs "$dir/run/user"
}

chroot_umount() {
    local dir="$1" m
    for m in run/user var/cache/apt/archives dev proc; do
        mountpoint -q "$dir/$m" 2>/dev/null && umount -l "$dir/$m" || true
    done
}
