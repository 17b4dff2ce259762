"""Read the viewer's canvas and render the same view of a DICOM with numpy.

The reference is made the way a display pipeline does it: HU are
interpolated bilinearly at each canvas pixel centre (mapped through the
image corners the viewer reports), then the DICOM linear VOI function is
applied. Comparing at canvas resolution keeps the test honest about the
window and the slice, with a tolerance for sub-pixel differences at edges.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

__all__ = ["Comparison", "canvas_grey", "compare", "reference_view"]

_READ_CANVAS = """(selector) => {
  const c = selector ? document.querySelector(selector) : window.filmlessViewer.canvas();
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const bytes = new Uint8Array(c.width * c.height);
  for (let i = 0, j = 0; j < bytes.length; i += 4, j += 1) bytes[j] = d[i];
  let s = '';
  for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
  const rect = selector ? null : window.filmlessViewer.imageRect();
  return { width: c.width, height: c.height, b64: btoa(s), rect };
}"""


def canvas_grey(page: Any, selector: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """A canvas as 8-bit grey (red channel) and, for the active viewport, the image rect."""
    got = page.evaluate(_READ_CANVAS, selector)
    pixels = np.frombuffer(base64.b64decode(got["b64"]), dtype=np.uint8).reshape(got["height"], got["width"])
    return pixels, got["rect"]


def _window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    # DICOM PS3.3 C.11.2.1.2.1 linear VOI, as the viewer reports center/width.
    return np.clip(((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0, 0, 255)


def reference_view(
    ds: Dataset,
    center: float,
    width: float,
    rect: dict[str, Any],
    shape: tuple[int, int],
    window_first: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(reference grey image at canvas size, mask of canvas pixels inside the image).

    ``window_first`` windows the image before interpolating, as a 2D canvas
    scaling an 8-bit image does (the first-stage preview).
    """
    hu = ds.pixel_array.astype(np.float64) * float(getattr(ds, "RescaleSlope", 1)) + float(
        getattr(ds, "RescaleIntercept", 0)
    )
    if window_first:
        hu = np.round(_window(hu, center, width))
    rows, cols = hu.shape
    (x0, y0), (x1, y1) = rect["first"], rect["last"]
    h, w = shape
    kx = (np.arange(w) + 0.5 - x0) * (cols - 1) / (x1 - x0)
    ky = (np.arange(h) + 0.5 - y0) * (rows - 1) / (y1 - y0)
    ix, iy = np.meshgrid(kx, ky)
    inside = (ix >= 0) & (ix <= cols - 1) & (iy >= 0) & (iy <= rows - 1)
    ixc, iyc = np.clip(ix, 0, cols - 1.000001), np.clip(iy, 0, rows - 1.000001)
    i0, j0 = np.floor(ixc).astype(int), np.floor(iyc).astype(int)
    fx, fy = ixc - i0, iyc - j0
    v = (
        hu[j0, i0] * (1 - fx) * (1 - fy)
        + hu[j0, i0 + 1] * fx * (1 - fy)
        + hu[j0 + 1, i0] * (1 - fx) * fy
        + hu[j0 + 1, i0 + 1] * fx * fy
    )
    return (v if window_first else _window(v, center, width)), inside


@dataclass(frozen=True)
class Comparison:
    mean_abs: float
    p99: float
    bad_fraction: float  # share of pixels off by more than 48 grey levels

    def matches(self) -> bool:
        return self.mean_abs < 0.6 and self.bad_fraction < 0.0005


def compare(canvas: np.ndarray, reference: np.ndarray, inside: np.ndarray) -> Comparison:
    diff = np.abs(canvas.astype(np.float64) - reference)[inside]
    return Comparison(float(diff.mean()), float(np.percentile(diff, 99)), float((diff > 48).mean()))
