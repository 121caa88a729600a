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


def _path_integral(graphdef: nnx.GraphDef) -> Callable:
    """(weights, image, baselines, alphas, point weights, classes) → attributions (H, W, K)
    of one image: the weighted sum over its M path points of (x − x'_m) · ∇ f_c at each."""

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
def _path_attributions(graphdef: nnx.GraphDef) -> Callable:
    """The jitted path integral of one image for one model architecture, compiled once per
    shape and shared by every model of that architecture (its weights are an argument): the
    trained and the re-initialised model, every chunk of `global`, every call."""
    return jax.jit(_path_integral(graphdef))


@functools.cache
def _batched_path_attributions(graphdef: nnx.GraphDef) -> Callable:
    """`_path_attributions` of several images in one compiled call: every argument but the
    weights gains a leading image axis (vmap over images)."""
    return jax.jit(jax.vmap(_path_integral(graphdef), in_axes=(None, 0, 0, 0, None, 0)))


def images_per_call(platform: str | None = None) -> int:
    """Images per compiled call of the path methods on `platform` (default: jax's backend).

    On a CPU one image's path (257 points × the explained classes) already fills the cores,
    and an image's bits stay those of dvc.lock: one image a call. A GPU or TPU runs one
    image's path far below its capacity (measured on an H200: 667 images/s for IG, one image
    a call, where whole-batch training ran 387k images/s), so it takes a chunk of images a
    call, vmapped."""
    platform = platform or jax.default_backend()
    return 1 if platform == "cpu" else ACCELERATOR_IMAGES_PER_CALL


ACCELERATOR_IMAGES_PER_CALL = 32


def path_values(
    state: nnx.State,
    graphdef: nnx.GraphDef,
    images_NHW: np.ndarray,
    baselines: Callable[[int], np.ndarray],
    alphas: Callable[[int], np.ndarray],
    weights_M: np.ndarray,
    classes_NK: np.ndarray,
    per_call: int,
) -> np.ndarray:
    """Attributions (N, H, W, K) of every image, `per_call` images per compiled call;
    `baselines(n)` and `alphas(n)` give image n's path. A short last chunk is padded with
    copies of its last image (one compiled shape), whose results are dropped."""
    images = images_NHW.astype(np.float32)
    if per_call == 1:
        path = _path_attributions(graphdef)
        return np.stack(
            [
                np.asarray(
                    path(state, images[n], baselines(n), alphas(n), weights_M, classes_NK[n])
                )
                for n in range(len(images))
            ]
        )
    path = _batched_path_attributions(graphdef)
    values = []
    for start in range(0, len(images), per_call):
        rows = np.arange(start, min(start + per_call, len(images)))
        padded = np.concatenate([rows, np.full(per_call - len(rows), rows[-1])])
        chunk = path(
            state,
            images[padded],
            np.stack([baselines(n) for n in padded]),
            np.stack([alphas(n) for n in padded]),
            weights_M,
            classes_NK[padded],
        )
        values.append(np.asarray(chunk)[: len(rows)])
    return np.concatenate(values)


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
    model: CNN,
    images_NHW: np.ndarray,
    classes_NK: np.ndarray,
    steps: int,
    per_call: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """IG from the black image over `steps` path intervals: values (N, H, W, K) and base
    values f_c(black) (N, K); `per_call` images per compiled call (default: the platform's,
    `images_per_call`).

    The black image's logits are computed once for all images (not once per path point)."""
    graphdef, state = nnx.split(model)
    alphas = np.linspace(0.0, 1.0, steps + 1, dtype=np.float32)
    weights = np.full(steps + 1, 1.0 / steps, np.float32)
    weights[[0, -1]] /= 2  # trapezoid rule
    baselines = np.zeros((steps + 1, *images_NHW.shape[1:]), np.float32)
    black_C = np.asarray(
        _mean_logits(graphdef)(
            state, baselines[:1], np.ones(1, np.float32), jnp.arange(model.num_classes)
        )
    )
    values = path_values(
        state,
        graphdef,
        images_NHW,
        lambda n: baselines,
        lambda n: alphas,
        weights,
        classes_NK,
        per_call or images_per_call(),
    )
    return values, black_C[classes_NK]


def expected_gradients(
    model: CNN,
    images_NHW: np.ndarray,
    classes_NK: np.ndarray,
    background_BHW: np.ndarray,
    samples: int,
    seed: int,
    test_index_N: np.ndarray,
    per_call: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """EG with baselines drawn from `background_BHW`: values (N, H, W, K), base values (N, K);
    `per_call` images per compiled call (default: the platform's, `images_per_call`).

    Each image draws its baselines and α from its own generator, keyed by (seed, its test
    index, the method), so its explanation does not depend on which others are explained with
    it, nor on the batch, stage or worker.
    """
    graphdef, state = nnx.split(model)
    mean_logits = _mean_logits(graphdef)
    weights = np.full(samples, 1.0 / samples, np.float32)
    draws = []
    for index in test_index_N:
        rng = np.random.default_rng(draw_seed(seed, index, "expected_gradients"))
        baselines = background_BHW[rng.integers(0, len(background_BHW), samples)]
        draws.append((baselines.astype(np.float32), rng.random(samples, dtype=np.float32)))
    values = path_values(
        state,
        graphdef,
        images_NHW,
        lambda n: draws[n][0],
        lambda n: draws[n][1],
        weights,
        classes_NK,
        per_call or images_per_call(),
    )
    base_values = [
        np.asarray(mean_logits(state, baselines, weights, classes))
        for (baselines, _), classes in zip(draws, classes_NK, strict=True)
    ]
    return values, np.stack(base_values)


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
