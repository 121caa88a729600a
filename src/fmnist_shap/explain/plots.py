"""shap's image plots of one variant's attributions."""

import numpy as np
import shap
from scipy.special import softmax

from fmnist_shap.explain.base import Attributions
from fmnist_shap.explain.selection import SelectedImages
from fmnist_shap.pngs import figure_png


def image_plot_png(
    explanations: Attributions,
    samples: SelectedImages,
    images_NHW: np.ndarray,
    class_names: tuple[str, ...],
    rows: np.ndarray,
    title: str,
    scale_label: str = "SHAP value (logit)",
) -> bytes:
    """shap.image_plot of the chosen rows as PNG bytes, small and byte-stable: the title and the
    colour scale (labelled `scale_label`, what the method's values are) moved next to the grid,
    where shap leaves a fifth of the figure blank above and below it, and the margins cut."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probabilities = softmax(samples.logits_NC[rows], axis=-1)
    classes = explanations.classes_NK[rows]
    labels = np.array(
        [
            [f"{class_names[c]} {probabilities[r, c]:.2f}" for c in classes[r]]
            for r in range(len(rows))
        ]
    )
    actual = [f"actual: {class_names[label]}" for label in samples.labels_N[rows]]
    values = explanations.values_NHWK[rows]
    shap.image_plot(
        [values[..., j : j + 1] for j in range(values.shape[-1])],
        pixel_values=images_NHW[rows][..., None].astype(np.float32),
        labels=labels,
        true_labels=actual,
        show=False,
    )
    figure = plt.gcf()
    *grid, scale = figure.axes  # shap adds the colorbar last
    inch = 1 / figure.get_figheight()  # one inch, as a fraction of the figure's height
    top = max(ax.get_position().y1 for ax in grid)
    bottom = min(ax.get_position().y0 for ax in grid)
    bar = scale.get_position()
    scale.set_position([bar.x0, bottom - 0.3 * inch - bar.height, bar.width, bar.height])
    scale.set_xlabel(scale_label)
    figure.suptitle(title, y=top + 0.45 * inch, va="bottom")
    png = figure_png(figure, dpi=60)
    plt.close(figure)
    return png
