#!/usr/bin/env bash
# The first thing to run on a lent GPU machine, unchanged, from anywhere in the checkout:
#
#   bash bench/gpu_check.sh
#
# Such a machine has PyTorch but no TensorFlow, and only the working tree travels (no venv).
# Without a GPU it says so in one line and exits 0. With one it installs what is missing (keras 3
# and the few runtime libraries the training path imports, at the versions pyproject.toml pins;
# never TensorFlow), puts this checkout on PYTHONPATH (no install: the code measured is the code
# here, and nothing needs a build backend or the network), sets KERAS_BACKEND=torch and runs
# bench/train_bench.py once on the bundled sample tiled to 42,000 rows:
#   (a) the article's code path (30 epochs, plain fit on NumPy arrays, float32, no augmentation);
#   (b) our train step with the `reference` recipe (30 epochs, the recipe's own augmentation:
#       Keras random layers, which run on the GPU), mixed precision, compiled.
# It ends with a table: throughput ratio T = (b) img/s / (a) img/s (goal >= 5) and the seconds
# the 30-epoch reference recipe trains for on 42,000 rows (goal <= 20 s on one H100-class GPU).
#
# Environment (default):
#   PYTHON             the interpreter with PyTorch (python3)
#   GPU_CHECK_ROWS     training rows, the sample tiled (42000)
#   GPU_CHECK_EPOCHS   epochs of both paths (30)
#   GPU_CHECK_BACKEND  Keras backend (torch)
#   GPU_CHECK_FLAGS    train_bench.py flags for (b) ("--precision mixed --jit-compile
#                      --augmentation layers"; Keras 3.15 ignores --jit-compile, with a warning,
#                      while the model holds its random image layers: they set supports_jit=False)
#   GPU_CHECK_OUT      where train_bench.json and train_bench.log go (a new temporary folder)
#   GPU_CHECK_FORCE=1  run without a GPU: checks this script's logic on a CPU (use few rows and
#                      epochs, e.g. GPU_CHECK_BACKEND=tensorflow GPU_CHECK_ROWS=700
#                      GPU_CHECK_EPOCHS=1 in the project's venv)
# Where pip cannot reach PyPI, point it at wheels: PIP_NO_INDEX=1 PIP_FIND_LINKS=/path/to/wheels.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
checkout=$PWD
PYTHON=${PYTHON:-python3}
rows=${GPU_CHECK_ROWS:-42000}
epochs=${GPU_CHECK_EPOCHS:-30}
backend=${GPU_CHECK_BACKEND:-torch}
read -r -a flags <<<"${GPU_CHECK_FLAGS:---precision mixed --jit-compile --augmentation layers}"

say() { echo "gpu_check: $*"; }
no_gpu() {
    say "no usable GPU here ($1); nothing to measure."
    exit 0
}

# --- 1. A GPU, and PyTorch seeing it ------------------------------------------------------------
if [[ ${GPU_CHECK_FORCE:-0} == 1 ]]; then
    say "GPU_CHECK_FORCE=1: running without checking for a GPU"
else
    command -v nvidia-smi >/dev/null 2>&1 || no_gpu "no nvidia-smi"
    gpus=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null) || gpus=""
    [[ -n $gpus ]] || no_gpu "nvidia-smi lists no GPU"
    "$PYTHON" -c 'import torch' >/dev/null 2>&1 || no_gpu "$PYTHON has no PyTorch"
    "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
        >/dev/null 2>&1 || no_gpu "PyTorch sees no CUDA device"
    say "GPU: ${gpus//$'\n'/, }"
fi

# --- 2. What the training path imports, at pyproject.toml's versions ----------------------------
missing=$(
    "$PYTHON" - "$checkout/pyproject.toml" <<'EOF'
import re
import sys
import tomllib
from importlib import metadata

# Distribution -> what the training path needs of it (train_bench, digits.training/fitting).
NEEDED = ("keras", "numpy", "pandas", "pyarrow", "scikit-learn", "fsspec")
with open(sys.argv[1], "rb") as handle:
    dependencies = tomllib.load(handle)["project"]["dependencies"]
pins = {}
for requirement in dependencies:
    name, _extras, version = re.match(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?(.*)", requirement).groups()
    pins[name.lower()] = name + version.strip()
missing = []
for name in NEEDED:
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        missing.append(pins[name])
        continue
    if name == "keras" and int(version.split(".")[0]) < 3:  # Keras 2 cannot run on torch
        missing.append(pins[name])
print(" ".join(missing))
EOF
)
if [[ -n $missing ]]; then
    say "installing $missing"
    read -r -a requirements <<<"$missing"
    if ! "$PYTHON" -m pip install --quiet --disable-pip-version-check "${requirements[@]}"; then
        say "could not install $missing (no PyPI here? PIP_NO_INDEX=1 PIP_FIND_LINKS=<wheels>)" >&2
        exit 1
    fi
fi

# --- 3. This checkout, importable as `digits` without installing it ------------------------------
# pyproject.toml maps digits -> src/digits, digits.components -> components/ and
# digits.pipelines -> pipelines/; a folder of links does the same.
shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
mkdir "$shim/digits"
ln -s "$checkout"/src/digits/* "$shim/digits/"
ln -s "$checkout/components" "$shim/digits/components"
ln -s "$checkout/pipelines" "$shim/digits/pipelines"
export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=$backend

# --- 4. The bench ------------------------------------------------------------------------------
out=${GPU_CHECK_OUT:-$(mktemp -d)}
mkdir -p "$out"
say "KERAS_BACKEND=$backend, $rows rows, $epochs epochs, (b): --recipe reference ${flags[*]}"
started=$SECONDS
"$PYTHON" "$checkout/bench/train_bench.py" \
    --rows "$rows" --recipe reference --epochs "$epochs" --reference-epochs "$epochs" \
    "${flags[@]}" --summary-json "$out/train_bench.json" 2>&1 | tee "$out/train_bench.log"
wall=$((SECONDS - started))

# --- 5. The summary ----------------------------------------------------------------------------
"$PYTHON" - "$out/train_bench.json" "$wall" "$rows" "$epochs" <<'EOF'
import json
import sys

summary = json.load(open(sys.argv[1]))
wall, rows, epochs = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
reference, ours = summary["paths"]["reference"], summary["paths"]["ours"]
# The goals are for the full check; a shortened one (fewer rows or epochs) is not judged.
full = rows == 42000 and epochs == 30


def verdict(met: bool) -> str:
    return ("yes" if met else "NO") if full else "n/a"


rows_out = [
    (
        "throughput ratio T ((b)/(a) img/s)",
        f"{summary['T']:.2f}  ({ours['images_per_second']:,.0f} / "
        f"{reference['images_per_second']:,.0f} img/s)",
        ">= 5",
        verdict(summary["T"] >= 5),
    ),
    (
        f"reference recipe, {epochs} epochs, {rows:,} rows",
        f"{ours['total_seconds']:.1f} s of epochs",
        "<= 20 s",
        verdict(ours["total_seconds"] <= 20),
    ),
    (
        "(a) article path, same rows",
        f"{reference['total_seconds']:.1f} s of epochs",
        "",
        "",
    ),
    (
        "held-out accuracy (a) / (b)",
        f"{reference['final_held_out']:.2%} / {ours['final_held_out']:.2%}",
        "",
        "",
    ),
    ("time-to-accuracy ratio R", "n/a" if summary["R"] is None else f"{summary['R']:.2f}", "", ""),
    ("bench wall time", f"{wall} s", "", ""),
]
print()
print(
    f"gpu_check summary: backend {summary['backend']}, device {summary['devices']}, "
    f"(b) computes in {summary['compute_dtype']}"
)
header = ("check", "measured", "goal", "met")
widths = [max(len(row[i]) for row in [header, *rows_out]) for i in range(len(header))]
for row in [header, tuple("-" * width for width in widths), *rows_out]:
    print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
print(f"(figures: {sys.argv[1]})")
EOF
