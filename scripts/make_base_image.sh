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
tar -C "$rootfs" -c . | "${DOCKER:-docker}" import - "$tag" >/dev/null
echo "make_base_image: built $tag from $mirror"
