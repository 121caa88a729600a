"""Integrated Gradients and Expected Gradients for the JAX CNN, with jax.grad, vmap and jit.

shap's GradientExplainer and DeepExplainer accept only TensorFlow and PyTorch models; these
two compute the same kind of attribution for our model directly. Attributions are of logits and
in pixel units (0-255 input), like the SHAP variants, so plots and metrics treat them alike:

- Integrated Gradients (Sundararajan et al. 2017), baseline the black image:
  a_i = (x_i − x0_i) · ∫₀¹ ∂f_c(x0 + α(x − x0))/∂x_i dα, by the trapezoid rule on `steps`
  intervals. Completeness: Σ a_i ≈ f_c(x) − f_c(x0); base value f_c(x0).
- Expected Gradients (Erion et al. 2021; shap's GradientExplainer idea): the same integrand,
  averaged over baselines x' drawn from the training images and α ~ U(0, 1), `samples` draws
  per image. Completeness holds in expectation; the base value is the mean of f_c(x') over
  the drawn baselines, so the remaining error is the α-sampling noise.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fmnist_shap.errors import UserError
from fmnist_shap.explain.base import Attributions, Context, Method, draw_seed, timed
from fmnist_shap.model import CNN


@functools.cache
def _path_attributions(graphdef: nnx.GraphDef) -> Callable:
    """The jitted path integral for one model architecture, compiled once per shape and shared by
    every model of that architecture (its weights are an argument): the trained and the
    re-initialised model, every chunk of `global`, every call."""

    @jax.jit
    def attribute(
        state: nnx.State,
        image_HW: jax.Array,
        baselines_MHW: jax.Array,
        alphas_M: jax.Array,
        weights_M: jax.Array,
        classes_K: jax.Array,
    ) -> jax.Array:
        model = nnx.merge(graphdef, state)
        delta_MHW = image_HW[None] - baselines_MHW
        points_MHW = baselines_MHW + alphas_M[:, None, None] * delta_MHW
        _, vjp = jax.vjp(model, points_MHW)
        # One backward pass per explained class, batched over the M path points: (K, M, H, W).
        cotangents_KMC = jax.nn.one_hot(classes_K, model.num_classes)[:, None, :] * jnp.ones(
            (1, len(alphas_M), 1)
        )
        (grads_KMHW,) = jax.vmap(vjp)(cotangents_KMC)
        weighted_KMHW = weights_M[None, :, None, None] * grads_KMHW * delta_MHW[None]
        attributions_KHW = weighted_KMHW.sum(axis=1)
        return attributions_KHW.transpose(1, 2, 0)

    return attribute


@functools.cache
def _mean_logits(graphdef: nnx.GraphDef) -> Callable:
    """Jitted (weights, baselines (M, H, W), point weights (M,), classes (K,)) → the weighted
    mean of the baselines' logits of those classes (K,): a path method's base values."""

    @jax.jit
    def mean_logits(state, baselines_MHW, weights_M, classes_K) -> jax.Array:
        return nnx.merge(graphdef, state)(baselines_MHW)[:, classes_K].T @ weights_M

    return mean_logits


def make_path_attributions(
    model: CNN,
) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """(image, baselines, alphas, weights, classes) → (attributions, base values) for one
    image: the mean over M path points of (x − x'_m) · ∇ f_c(x'_m + α_m (x − x'_m)), and the
    baselines' logits f_c(x'_m) averaged with the same weights.

    image (H, W); baselines (M, H, W); alphas (M,); weights of the M points (M,) summing to 1;
    classes (K,). Returns attributions (H, W, K) and base values (K,).
    """
    graphdef, state = nnx.split(model)
    path, mean_logits = _path_attributions(graphdef), _mean_logits(graphdef)

    def attribute(image_HW, baselines_MHW, alphas_M, weights_M, classes_K):
        attributions = path(state, image_HW, baselines_MHW, alphas_M, weights_M, classes_K)
        return attributions, mean_logits(state, baselines_MHW, weights_M, classes_K)

    return attribute


def integrated_gradients(
    model: CNN, images_NHW: np.ndarray, classes_NK: np.ndarray, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """IG from the black image over `steps` path intervals: values (N, H, W, K) and base
    values f_c(black) (N, K).

    The black image's logits are computed once for all images (not once per path point)."""
    graphdef, state = nnx.split(model)
    path = _path_attributions(graphdef)
    alphas = np.linspace(0.0, 1.0, steps + 1, dtype=np.float32)
    weights = np.full(steps + 1, 1.0 / steps, np.float32)
    weights[[0, -1]] /= 2  # trapezoid rule
    baselines = np.zeros((steps + 1, *images_NHW.shape[1:]), np.float32)
    black_C = np.asarray(
        _mean_logits(graphdef)(
            state, baselines[:1], np.ones(1, np.float32), jnp.arange(model.num_classes)
        )
    )
    values = [
        np.asarray(path(state, image, baselines, alphas, weights, classes))
        for image, classes in zip(images_NHW.astype(np.float32), classes_NK, strict=True)
    ]
    return np.stack(values), black_C[classes_NK]


def expected_gradients(
    model: CNN,
    images_NHW: np.ndarray,
    classes_NK: np.ndarray,
    background_BHW: np.ndarray,
    samples: int,
    seed: int,
    test_index_N: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """EG with baselines drawn from `background_BHW`: values (N, H, W, K), base values (N, K).

    Each image draws its baselines and α from its own generator, keyed by (seed, its test
    index, the method), so its explanation does not depend on which others are explained with
    it, nor on the batch, stage or worker.
    """
    attribute = make_path_attributions(model)
    weights = np.full(samples, 1.0 / samples, np.float32)
    values, base_values = [], []
    for image, classes, index in zip(
        images_NHW.astype(np.float32), classes_NK, test_index_N, strict=True
    ):
        rng = np.random.default_rng(draw_seed(seed, index, "expected_gradients"))
        baselines = background_BHW[rng.integers(0, len(background_BHW), samples)]
        alphas = rng.random(samples, dtype=np.float32)
        attributions, base = attribute(
            image, baselines.astype(np.float32), alphas, weights, classes
        )
        values.append(np.asarray(attributions))
        base_values.append(np.asarray(base))
    return np.stack(values), np.stack(base_values)


class IntegratedGradients(Method):
    """Integrated Gradients from the black image (no randomness)."""

    explainer = "integrated_gradients"
    scale_label = "Integrated Gradients attribution (logit)"

    def attribute(self, context: Context, images_NHW, classes_NK, test_index_N) -> Attributions:
        steps = context.params.budget[self.explainer]
        return timed(
            lambda: integrated_gradients(context.model, images_NHW, classes_NK, steps),
            classes_NK,
            float(steps + 1),
        )


class ExpectedGradients(Method):
    """Expected Gradients with baselines drawn from the training images."""

    explainer = "expected_gradients"
    scale_label = "Expected Gradients attribution (logit)"

    def attribute(self, context: Context, images_NHW, classes_NK, test_index_N) -> Attributions:
        background = context.background_BHW
        if background is None or len(background) == 0:
            raise UserError("expected_gradients needs background images: pass the training set")
        params = context.params
        samples = params.budget[self.explainer]
        return timed(
            lambda: expected_gradients(
                context.model,
                images_NHW,
                classes_NK,
                background,
                samples,
                params.seed,
                test_index_N,
            ),
            classes_NK,
            float(samples),
        )
