#!/usr/bin/env bash
# Build the pipeline's images from docker/Dockerfile: the CPU image (every step but training) and
# the GPU image (training); optionally push them; print the `digits compile` / `digits submit`
# image arguments, by tag and pinned by digest.
#   bash scripts/build_images.sh [--registry R] [--tag T] [--push] [--target cpu|gpu|all]
# Defaults: no registry, tag = the project's version, both targets. The default names,
# digits-pipeline:VERSION and digits-pipeline:VERSION-gpu, are the ones `digits compile` and
# `digits run --runner docker` use. Without a registry the Debian base image is built with
# debootstrap when it is missing and cannot be pulled (root only).
# DOCKER picks the client (default: `docker` when it has buildx, else Debian's /usr/bin/docker,
# whose built-in BuildKit runs through DOCKER_BUILDKIT=1).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,11s/^# \{0,1\}//p' "$0"; }
die() { echo "build_images: $*" >&2; exit 2; }

registry="" tag="" push=false target=all
while (($#)); do
  case "$1" in
    --registry) registry="${2:?--registry needs a value}"; shift 2 ;;
    --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
    --push) push=true; shift ;;
    --target) target="${2:?--target needs a value}"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
case "$target" in cpu) targets=(cpu) ;; gpu) targets=(gpu) ;; all) targets=(cpu gpu) ;;
  *) die "--target $target: expected cpu, gpu or all" ;; esac
if $push && [[ -z "$registry" ]]; then die "--push needs --registry (where to push)"; fi
if [[ -z "$tag" ]]; then
  tag="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' src/digits/__init__.py)"
fi
repository="${registry:+${registry%/}/}digits-pipeline"
image_name() { if [[ "$1" == gpu ]]; then echo "$repository:$tag-gpu"; else echo "$repository:$tag"; fi; }

if [[ -z "${DOCKER:-}" ]]; then
  if docker buildx version >/dev/null 2>&1; then DOCKER=docker; else DOCKER=/usr/bin/docker; fi
fi
"$DOCKER" info >/dev/null 2>&1 || die "no Docker daemon answers $DOCKER (as root on Debian: bash scripts/start_docker.sh)"

base_image="$(sed -n 's/^ARG BASE_IMAGE=//p' docker/Dockerfile)"
if ! "$DOCKER" image inspect "$base_image" >/dev/null 2>&1 \
  && ! "$DOCKER" pull "$base_image" >/dev/null 2>&1; then
  [[ -z "$registry" && "$(id -u)" == 0 ]] \
    || die "$base_image is missing and cannot be pulled: sudo bash scripts/make_base_image.sh"
  DOCKER="$DOCKER" bash scripts/make_base_image.sh "$base_image"
fi

secret=()
ca=/etc/ssl/certs/ca-certificates.crt
if [[ -s "$ca" ]]; then secret=(--secret "id=ca,src=$ca"); fi

declare -A reference
for t in "${targets[@]}"; do
  name="$(image_name "$t")"
  started=$SECONDS
  DOCKER_BUILDKIT=1 "$DOCKER" build -f docker/Dockerfile --target "$t" "${secret[@]}" \
    --build-arg "DIGITS_GIT_COMMIT=$(git rev-parse HEAD 2>/dev/null || true)" -t "$name" .
  size="$("$DOCKER" image inspect --format '{{.Size}}' "$name")"
  echo "build_images: built $name in $((SECONDS - started)) s, $((size / 1000000)) MB"
  if $push; then
    "$DOCKER" push "$name"
    # The registry's digest: what a cluster pulls, immune to the tag moving later.
    reference[$t]="$("$DOCKER" image inspect --format '{{index .RepoDigests 0}}' "$name")"
  else
    reference[$t]="$("$DOCKER" image inspect --format '{{.Id}}' "$name")"
  fi
done

args=""
for t in "${targets[@]}"; do
  if [[ "$t" == cpu ]]; then args+=" --image $(image_name cpu)"; else args+=" --train-image $(image_name gpu)"; fi
done
echo
echo "Image arguments (digits compile / digits submit / digits run --runner docker):"
echo " $args"
if $push; then
  pinned=""
  for t in "${targets[@]}"; do
    if [[ "$t" == cpu ]]; then pinned+=" --image ${reference[cpu]}"; else pinned+=" --train-image ${reference[gpu]}"; fi
  done
  echo "Pinned by digest (what the cluster runs cannot change under the same tag):"
  echo " $pinned"
else
  echo "Local image IDs (not pushed; --registry R --push prints the repo@sha256 digests to pin):"
  for t in "${targets[@]}"; do echo "  $(image_name "$t")  ${reference[$t]}"; done
fi
