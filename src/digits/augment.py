"""Random rotation, zoom and shift of image batches in NumPy, for the input pipeline.

The same transform family as the reference kernel's ImageDataGenerator (and the Keras random
layers), done as one vectorized bilinear warp per batch: about 3 ms for 128 images, where
the Keras layers cost a third of each training step on a 2-core CPU. Nothing here is specific to
digits (no flips, mild ranges), so it serves any 28x28 grey-image set.
"""

from __future__ import annotations

import numpy as np


def random_affine(
    images: np.ndarray,
    rng: np.random.Generator,
    *,
    rotation_degrees: float,
    zoom: float,
    shift: float,
) -> np.ndarray:
    """Rotate, zoom and shift each image of ``images`` (n, h, w, c) by its own random amounts.

    Angles are uniform in +-``rotation_degrees``, scales in 1 +- ``zoom`` (per axis, as the
    kernel's ``zoom_range``), shifts in +- ``shift`` of the side; pixels from outside are 0.
    """
    count, height, width, _ = images.shape
    draws = rng.uniform(-1, 1, (5, count)).astype(np.float32)
    angle = np.deg2rad(rotation_degrees) * draws[0]
    scale_y, scale_x = 1 + zoom * draws[1], 1 + zoom * draws[2]
    shift_y, shift_x = shift * height * draws[3], shift * width * draws[4]

    # Inverse map: for each output pixel, where to read in the source (about the image centre).
    center_y, center_x = (height - 1) / 2, (width - 1) / 2
    out_y, out_x = np.meshgrid(
        np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij"
    )
    rel_y = out_y[None] - center_y - shift_y[:, None, None]
    rel_x = out_x[None] - center_x - shift_x[:, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    src_y = (cos * rel_y - sin * rel_x) / scale_y[:, None, None] + center_y
    src_x = (sin * rel_y + cos * rel_x) / scale_x[:, None, None] + center_x
    return _bilinear(images, src_y, src_x)


def _bilinear(images: np.ndarray, src_y: np.ndarray, src_x: np.ndarray) -> np.ndarray:
    count, height, width, channels = images.shape
    # One zero border all round, so reads outside the image fall on zeros without masking.
    padded_height, padded_width = height + 2, width + 2
    padded = np.zeros((count, padded_height, padded_width, channels), images.dtype)
    padded[:, 1:-1, 1:-1] = images
    src_y = np.clip(src_y + 1, 0, height + 0.999)
    src_x = np.clip(src_x + 1, 0, width + 0.999)
    y0, x0 = src_y.astype(np.intp), src_x.astype(np.intp)  # floor: both are >= 0
    wy, wx = (src_y - y0)[..., None], (src_x - x0)[..., None]
    # Gathers from the flat pixel list: twice as fast as indexing (batch, y, x) arrays.
    pixels = padded.reshape(-1, channels)
    top_left = (np.arange(count)[:, None, None] * padded_height + y0) * padded_width + x0
    a, b = pixels.take(top_left, axis=0), pixels.take(top_left + 1, axis=0)
    c = pixels.take(top_left + padded_width, axis=0)
    d = pixels.take(top_left + padded_width + 1, axis=0)
    top, bottom = a + (b - a) * wx, c + (d - c) * wx
    return (top + (bottom - top) * wy).astype(images.dtype)
