"""shap's Partition and Permutation explainers with an image masker (`blur(H,W)`,
`inpaint_telea`, `inpaint_ns`).

Images reach the masker as raw 0-255 pixels: shap's inpaint maskers cast to uint8, so [0, 1]
floats would all become 0. The model scales them itself, for every masker alike. With the blur
masker the rows of a model call are built in one step (`maskers.BlendingBlurMasker`);
inpainting depends on each mask, so those maskers stay per row.
"""

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import shap

from fmnist_shap.explain.base import Attributions, Method, draw_seed
from fmnist_shap.explain.masker_ids import shap_masker
from fmnist_shap.explain.maskers import (
    BlendingBlurMasker,
    BlendingModel,
    CountingModel,
    RememberingImageMasker,
    forget_image,
)


def explain_with_shap(
    predict: Callable[[np.ndarray], np.ndarray],
    images_NHW: np.ndarray,
    explainer_id: str,
    masker_id: str,
    params: Any,  # fmnist_shap.variants.ExplainParams
    classes_NK: np.ndarray,
    test_index_N: np.ndarray,
    blend_in_model: bool = True,
) -> Attributions:
    """Logits `classes_NK` of each image, explained with shap's `explainer_id` and masker.

    One image per call: each gets its own output classes and its own seed, keyed by its test
    index (shap's base Explainer also spends extra main-effect evaluations from the second row
    of a multi-row call).
    """
    (attributions,) = explain_models_with_shap(
        (predict,),
        images_NHW,
        explainer_id,
        masker_id,
        params,
        (classes_NK,),
        test_index_N,
        blend_in_model,
    )
    return attributions


def explain_models_with_shap(
    predicts: Sequence[Callable[[np.ndarray], np.ndarray]],
    images_NHW: np.ndarray,
    explainer_id: str,
    masker_id: str,
    params: Any,  # fmnist_shap.variants.ExplainParams
    classes: Sequence[np.ndarray],  # each model's classes_NK
    test_index_N: np.ndarray,
    blend_in_model: bool = True,
) -> list[Attributions]:
    """`explain_with_shap` of several models on the same images, image by image: every model
    explains an image (with that image's seed) before the next image, through one masker, so
    an inpainted coalition is computed once for all of them (Partition's tree walks of the
    trained and the re-initialised model share about half their coalitions)."""
    n, height, width = images_NHW.shape
    image_shape = (height, width, 1)
    blending = blend_in_model and masker_id == "blur"
    masker = _masker(masker_id, image_shape, blending)
    models = [CountingModel(predict) for predict in predicts]
    shap_models = [BlendingModel(model, image_shape) if blending else model for model in models]
    explainers = [_explainer(explainer_id, shap_model, masker) for shap_model in shap_models]
    per_model: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in models]
    seconds = [0.0] * len(models)
    for n_image, (image_HW, index) in enumerate(zip(images_NHW, test_index_N, strict=True)):
        pixels = image_HW[None, :, :, None].astype(np.float32)
        forget_image(masker)
        filled = masker.fill(pixels[0]) if blending else None
        seed = draw_seed(params.seed, index, explainer_id)
        for m, explainer in enumerate(explainers):
            start = time.perf_counter()
            if blending:
                shap_models[m].set_image(pixels[0], filled)
            classes_K = classes[m][n_image]
            per_model[m].append(_explain_image(explainer, pixels, classes_K, params, seed))
            seconds[m] += time.perf_counter() - start
    results = []
    for m, model in enumerate(models):
        values, base_values = zip(*per_model[m], strict=True)
        results.append(
            Attributions(
                values_NHWK=np.stack(values).astype(np.float32),
                base_values_NK=np.stack(base_values).astype(np.float32),
                classes_NK=classes[m],
                evals_per_image=model.rows / n,
                seconds_per_image=seconds[m] / n,
            )
        )
    return results


def _masker(masker_id: str, image_shape: tuple[int, int, int], blending: bool):
    """One variant's image masker: the blur built in the model call (`blending`), or shap's
    masker with its inpainted coalitions kept for the image being explained."""
    mask_value = shap_masker(masker_id, image_shape[:2])
    if blending:
        return BlendingBlurMasker(mask_value, image_shape)
    return RememberingImageMasker(mask_value, image_shape)


def _explainer(explainer_id: str, shap_model: Callable, masker) -> shap.Explainer:
    if explainer_id == "partition":
        return shap.PartitionExplainer(shap_model, masker)
    return shap.PermutationExplainer(shap_model, masker)


def _explain_image(
    explainer: shap.Explainer,
    pixels: np.ndarray,
    classes_K: np.ndarray,
    params: Any,  # fmnist_shap.variants.ExplainParams
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One image's values (H, W, K) and base values (K,) for the classes `classes_K`."""
    # shap draws from numpy's global RNG: Permutation for its orderings and the image masker's
    # partition-tree shuffle, Partition to break ties between equally promising nodes of its
    # tree walk (which then changes which nodes it expands). Seed it per image.
    np.random.seed(seed)
    if isinstance(explainer, shap.PartitionExplainer):
        result = explainer(
            pixels,
            max_evals=params.budget["partition"],
            batch_size=params.batch_size,
            outputs=classes_K,
            silent=True,
        )
        return result.values[0, :, :, 0, :], np.asarray(result.base_values[0])
    result = explainer(
        pixels, max_evals=params.budget["permutation"], batch_size=params.batch_size, silent=True
    )
    # Permutation returns every class (it ignores `outputs=`): keep the image's classes ourselves.
    values_HWC, base_C = result.values[0, :, :, 0, :], np.asarray(result.base_values[0])
    return values_HWC[..., classes_K], base_C[classes_K]


class ShapImageMethod(Method):
    """A shap explainer with an image masker, on the context's numpy predictor."""

    def attribute(self, context, images_NHW, classes_NK, test_index_N) -> Attributions:
        return explain_with_shap(
            context.predict,
            images_NHW,
            self.explainer,
            self.masker,
            context.params,
            classes_NK,
            test_index_N,
        )


class Partition(ShapImageMethod):
    """shap's PartitionExplainer (Owen values over the masker's partition tree).

    Its tree walk orders nodes by the output differences of the explained classes together,
    so an image's map for a class depends on which other classes are explained with it."""

    explainer = "partition"

    def attribute_pair(self, trained, randomized, images_NHW, classes_NK, test_index_N):
        """Both models image by image through one masker: the two tree walks share about
        half their coalitions, each inpainted once (values as with two separate runs)."""
        first, second = explain_models_with_shap(
            (trained.predict, randomized.predict),
            images_NHW,
            self.explainer,
            self.masker,
            trained.params,
            (classes_NK, classes_NK[:, :1]),
            test_index_N,
        )
        return first, second


class Permutation(ShapImageMethod):
    """shap's PermutationExplainer (forward and backward passes over random orderings)."""

    explainer = "permutation"

    def attribute_pair(self, trained, randomized, images_NHW, classes_NK, test_index_N):
        """Both models in one pass over the very same coalitions.

        Permutation's coalitions depend only on its seeded orderings, not on the model's
        outputs, so one pass over a model that returns both models' logits gives both
        explanations exactly as two passes would, for half the masking (inpainting is most of
        Permutation's time)."""
        num_classes = trained.model.num_classes

        def both(pixels: np.ndarray) -> np.ndarray:
            return np.concatenate([trained.predict(pixels), randomized.predict(pixels)], axis=1)

        joint = explain_with_shap(
            both,
            images_NHW,
            self.explainer,
            self.masker,
            trained.params,
            np.concatenate([classes_NK, num_classes + classes_NK[:, :1]], axis=1),
            test_index_N,
        )
        k = classes_NK.shape[1]
        return joint.columns(slice(0, k), classes_NK), joint.columns(
            slice(k, k + 1), classes_NK[:, :1]
        )
