"""PNG helpers shared by every stage that draws: imported by the explain plots and the global
stage alike, so editing explain code does not rerun `global` (and the other way round)."""

import io

import numpy as np


def cropped_png(png: bytes, pad: int = 6) -> bytes:
    """The PNG cut to its non-white content plus `pad` pixels, written without the Software
    and date metadata, so the same figure gives the same bytes.

    What `savefig(bbox_inches="tight")` does, without its second drawing of the figure
    (measured: half of a shap image plot's time)."""
    import matplotlib.image

    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
    ink_rows, ink_cols = np.nonzero((pixels[..., :3] < 1.0).any(axis=-1))
    if len(ink_rows):
        top, left = max(ink_rows.min() - pad, 0), max(ink_cols.min() - pad, 0)
        pixels = pixels[top : ink_rows.max() + pad + 1, left : ink_cols.max() + pad + 1]
    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, pixels, format="png", metadata={"Software": None})
    return buffer.getvalue()
