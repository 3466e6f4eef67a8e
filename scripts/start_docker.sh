#!/usr/bin/env bash
# Make Docker ready for the image tests (tests/test_images.py) on Debian, as root:
#   1. install Debian's docker.io and debootstrap when missing,
#   2. start dockerd in the background when no daemon answers (bounded wait),
#   3. build the debian:bookworm-slim base image with debootstrap when it is missing.
# Idempotent: when all three are in place it only checks them (about a second). Anywhere else
# (not root, not Debian) it says why and exits 0: the image tests then skip with their reason.
#   bash scripts/start_docker.sh        # bootstrap.sh's `test` variant calls it
set -euo pipefail
cd "$(dirname "$0")/.."

base_image="debian:bookworm-slim"
# Debian's client has BuildKit built in; a newer /usr/local/bin/docker may lack the buildx plugin.
docker=/usr/bin/docker
log="${DOCKERD_LOG:-/var/log/dockerd.log}"
wait_seconds="${DOCKERD_WAIT_SECONDS:-60}"

# Each line says how long the script has run so far: CI logs show what the set-up costs.
say() { echo "start_docker: [${SECONDS} s] $*"; }

if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
  say "skipped (needs root on Debian); the docker-marked tests skip unless a daemon answers"
  exit 0
fi

if [[ ! -x "$docker" ]] || ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null \
  || ! command -v shellcheck >/dev/null
then
  # tests/test_kind.py lints scripts/kind-e2e.sh with it.
  say "installing docker.io, debootstrap and shellcheck"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    docker.io debootstrap shellcheck >/dev/null
fi

if ! "$docker" info >/dev/null 2>&1; then
  say "starting dockerd (log: $log)"
  # setsid: the daemon outlives this script and the shell that ran it.
  setsid dockerd >>"$log" 2>&1 </dev/null &
  for ((waited = 0; waited < wait_seconds; waited++)); do
    "$docker" info >/dev/null 2>&1 && break
    sleep 1
  done
  if ! "$docker" info >/dev/null 2>&1; then
    say "dockerd did not answer within ${wait_seconds} s; last lines of $log:" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
fi

if ! "$docker" image inspect "$base_image" >/dev/null 2>&1; then
  say "building $base_image with debootstrap"
  DOCKER="$docker" bash scripts/make_base_image.sh "$base_image"
fi
say "ready ($("$docker" version --format 'daemon {{.Server.Version}}'), $base_image present)"
