#!/usr/bin/env bash
# Build the Dockerfile's default base, debian:bookworm-slim, without any image registry:
# debootstrap a minimal bookworm root file system and import it. Needs root, debootstrap, docker.
#   sudo bash scripts/make_base_image.sh [TAG]
set -euo pipefail
tag="${1:-debian:bookworm-slim}"
sources=/etc/apt/sources.list.d/debian.sources
mirror="$(awk '/^URIs:/ {print $2; exit}' "$sources" 2>/dev/null || true)"
mirror="${mirror:-http://deb.debian.org/debian}"

rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
# The image's apt must reach the same mirror the host uses.
if [[ -f "$sources" ]]; then
  cp "$sources" "$rootfs/etc/apt/sources.list.d/debian.sources"
  rm -f "$rootfs/etc/apt/sources.list"
fi
# Slim like the official -slim images: dpkg skips documentation, manuals and translations from
# now on, those already unpacked go, and so do the downloaded packages and apt's lists.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EXCLUDES'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EXCLUDES
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$rootfs"/usr/share/{groff,info,linda,locale,man}/* "$rootfs"/usr/share/lintian/overrides/* \
  "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | "${DOCKER:-docker}" import - "$tag" >/dev/null
echo "make_base_image: built $tag from $mirror"
