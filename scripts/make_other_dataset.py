"""Build a second Kaggle-format data set that is not MNIST: rendered letters, for the "recipe is
general" check (does a recipe chosen on the digits still beat the classical baseline elsewhere?).

What it is: 10 classes, each one Latin letter in upper or lower case at random (label 0 = A/a,
1 = C/c, 2 = E/e, 3 = F/f, 4 = H/h, 5 = K/k, 6 = M/m, 7 = N/n, 8 = R/r, 9 = X/x; letters shaped
like digits, such as O, I, S, Z, B, G, were left out). Each image is drawn with Pillow in one of
the DejaVu faces that ship inside matplotlib (a dependency of MLflow, so nothing is downloaded):
Sans, Serif and Sans Mono in regular, bold and oblique/italic. A random affine jitter follows
(rotation ±20°, shear ±0.3, scale 0.75-1.15, shift ±3 px), sometimes a thicker stroke (dilation),
a slight blur, then downsampling to 28×28 and Gaussian pixel noise (σ 8 grey levels). Ink is
bright on black and pixels are 0-255 integers, as in Kaggle's Digit Recognizer. Classes are
balanced; the same seed writes the same bytes.

Writes, in OUTPUT_DIR (default ``other_data``), the three files `digits run` takes:
``train.csv`` (label, pixel0..pixel783), ``test.csv`` (pixel0..pixel783) and ``test_labels.csv``
(ImageId, Label; ImageId is the 1-based row of test.csv):

    .venv/bin/python scripts/make_other_dataset.py --output-dir other_data
    .venv/bin/digits run --data other_data/train.csv --predict-data other_data/test.csv \
        --predict-labels other_data/test_labels.csv
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter, ImageFont

LETTERS = "ACEFHKMNRX"
FACES = [
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
]
SIDE = 28
CANVAS = 84  # drawn at 3x, then downsampled: smooth edges like MNIST's anti-aliasing


def font_dir() -> Path:
    """matplotlib's bundled TrueType folder (DejaVu faces)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def render(letter: str, face: ImageFont.FreeTypeFont, rng: np.random.Generator) -> np.ndarray:
    """One jittered 28x28 uint8 image of ``letter`` (bright ink on black)."""
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    ImageDraw.Draw(canvas).text((CANVAS / 2, CANVAS / 2), letter, fill=255, font=face, anchor="mm")
    if rng.random() < 0.3:
        canvas = canvas.filter(ImageFilter.MaxFilter(5))
    angle = math.radians(rng.uniform(-20, 20))
    shear = rng.uniform(-0.3, 0.3)
    scale = rng.uniform(0.75, 1.15)
    shift = rng.uniform(-3, 3, size=2) * CANVAS / SIDE
    # Forward map: scale, shear, rotate about the centre, then shift; PIL wants the inverse.
    rotate = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    forward = rotate @ np.array([[1.0, shear], [0.0, 1.0]]) * scale
    inverse = np.linalg.inv(forward)
    centre = np.array([CANVAS / 2, CANVAS / 2])
    offset = centre - inverse @ (centre + shift)
    coefficients = (*inverse[0], offset[0], *inverse[1], offset[1])
    canvas = canvas.transform(canvas.size, Image.AFFINE, coefficients, Image.BILINEAR)
    canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.5)))
    pixels = np.asarray(canvas.resize((SIDE, SIDE), Image.LANCZOS), dtype=np.float64)
    pixels += rng.normal(0.0, 8.0, size=pixels.shape)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def make_images(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images with balanced labels 0-9, in random order."""
    fonts = [
        ImageFont.truetype(str(font_dir() / name), size=int(s))
        for name in FACES
        for s in (42, 50, 58)
    ]
    labels = rng.permutation(np.arange(count) % len(LETTERS))
    images = np.empty((count, SIDE * SIDE), dtype=np.uint8)
    for row, label in enumerate(labels):
        letter = LETTERS[label] if rng.random() < 0.5 else LETTERS[label].lower()
        images[row] = render(letter, fonts[rng.integers(len(fonts))], rng).ravel()
    return images, labels


def write_dataset(output_dir: Path, train_rows: int, test_rows: int, seed: int) -> None:
    """Write train.csv, test.csv and test_labels.csv in Kaggle's Digit Recognizer format."""
    rng = np.random.default_rng(seed)
    output_dir.mkdir(parents=True, exist_ok=True)
    columns = [f"pixel{i}" for i in range(SIDE * SIDE)]
    images, labels = make_images(train_rows, rng)
    train = pd.DataFrame(images, columns=columns)
    train.insert(0, "label", labels)
    train.to_csv(output_dir / "train.csv", index=False)
    images, labels = make_images(test_rows, rng)
    pd.DataFrame(images, columns=columns).to_csv(output_dir / "test.csv", index=False)
    pd.DataFrame({"ImageId": np.arange(1, test_rows + 1), "Label": labels}).to_csv(
        output_dir / "test_labels.csv", index=False
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", type=Path, default=Path("other_data"))
    parser.add_argument("--train-rows", type=int, default=8000)
    parser.add_argument("--test-rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_dataset(args.output_dir, args.train_rows, args.test_rows, args.seed)
    print(f"wrote {args.output_dir}/train.csv, test.csv, test_labels.csv")


if __name__ == "__main__":
    main()
