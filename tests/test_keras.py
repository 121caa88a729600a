"""The Keras twin, shap's DeepExplainer and GradientExplainer on it, and the exported files."""

import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import spearmanr

from fmnist_shap.artifacts import load_npz, save_npz
from fmnist_shap.data import Split
from fmnist_shap.errors import UserError
from fmnist_shap.explain.methods.gradients import expected_gradients, integrated_gradients
from fmnist_shap.explain.methods.keras import (
    background_images,
    class_head,
    deep_shap,
    gradient_shap,
)
from fmnist_shap.keras_twin import PARITY_TOLERANCE, build_twin, check_parity, twin_logits
from fmnist_shap.model import init_model, load_model, save_model
from tests.conftest import IMAGE_HW, NUM_CLASSES, subprocess_env


@pytest.fixture(scope="module")
def twin(trained_model):
    return build_twin(trained_model)


@pytest.fixture(scope="module")
def images(raw_splits: tuple[Split, Split]) -> np.ndarray:
    """Real test images."""
    return raw_splits[1].images_NHW[:6]


@pytest.fixture(scope="module")
def background(small_train: Split) -> np.ndarray:
    return background_images(small_train.images_NHW, 40, seed=0)


def test_twin_matches_flax_on_real_test_images(
    twin, predict, raw_splits: tuple[Split, Split]
) -> None:
    test_images = raw_splits[1].images_NHW[:2000]
    difference = check_parity(twin, predict, test_images)
    assert 0 <= difference <= PARITY_TOLERANCE
    assert np.array_equal(
        twin_logits(twin, test_images).argmax(-1), predict(test_images).argmax(-1)
    )


def test_parity_check_refuses_a_twin_that_drifts(trained_model, predict, images) -> None:
    other = build_twin(init_model(7, NUM_CLASSES, IMAGE_HW))  # right layers, other weights
    with pytest.raises(UserError, match=r"Keras twin: logits differ .* \(> 1e-04\)"):
        check_parity(other, predict, images)


def test_twin_of_a_model_file_with_a_wrong_shape_is_refused(trained_model, tmp_path) -> None:
    path = tmp_path / "model.npz"
    save_model(path, trained_model)
    arrays = load_npz(path)
    arrays["conv2/kernel"] = arrays["conv2/kernel"][:, :, :, :8]  # 8 filters, not 16
    save_npz(path, arrays)
    with pytest.raises(UserError, match=r"conv2/kernel has shape \(3, 3, 32, 8\); retrain"):
        build_twin(load_model(path))


def test_twin_refuses_weights_it_cannot_hold() -> None:
    narrower = init_model(0, 3, (28, 28))
    narrower.num_classes = NUM_CLASSES  # a dense layer of 3 outputs claimed as 10
    with pytest.raises(UserError, match=r"dense weights have shapes .* retrain the model"):
        build_twin(narrower)


def test_class_head_gives_the_chosen_logits(twin, images) -> None:
    head = class_head(twin, (7, 2))
    # Same weights; a narrower matrix product may round the last bit differently.
    np.testing.assert_allclose(
        twin_logits(head, images), twin_logits(twin, images)[:, [7, 2]], rtol=0, atol=1e-5
    )


def test_deep_shap_is_additive_and_independent_of_the_other_classes(
    twin, predict, images, background
) -> None:
    logits = predict(images)
    classes = np.argsort(-logits, axis=-1)[:, :3]
    values, base = deep_shap(twin, images, classes, background)
    assert values.shape == (6, 28, 28, 3) and base.shape == (6, 3)
    explained = np.take_along_axis(logits, classes, axis=-1)
    assert np.abs(values.sum(axis=(1, 2)) + base - explained).max() <= 1e-4
    # The base value is the background's mean logit of each class.
    mean_background = twin_logits(twin, background).mean(axis=0)
    np.testing.assert_allclose(base, mean_background[classes], atol=1e-5)
    # The top class explained alone gives the same values (the heads are independent).
    top_only, _ = deep_shap(twin, images, classes[:, :1], background)
    np.testing.assert_allclose(top_only[..., 0], values[..., 0], atol=1e-6)
    assert np.abs(values).max() > 1e-3


def test_gradient_explainer_agrees_with_integrated_and_expected_gradients(
    trained_model, twin, predict, images, background
) -> None:
    """GradientExplainer is expected gradients in TensorFlow: against our JAX Expected Gradients
    (same background, other random draws) the top-class maps rank pixels almost alike; against
    IG (baseline black) alike on the garment's pixels, where IG is not zero by construction."""
    top = np.argsort(-predict(images), axis=-1)[:, :1]
    index = np.arange(len(images))
    values, base = gradient_shap(twin, images, top, background, 200, 0, index)
    ig, _ = integrated_gradients(trained_model, images, top, steps=64)
    eg, _ = expected_gradients(trained_model, images, top, background, 200, 0, index)
    on_garment = [
        spearmanr(v[x > 0], g[x > 0]).statistic for v, g, x in zip(values, ig, images, strict=True)
    ]
    vs_eg = [spearmanr(v.ravel(), g.ravel()).statistic for v, g in zip(values, eg, strict=True)]
    print(f"GradientExplainer vs IG (garment pixels): rho {np.round(on_garment, 2)}")
    print(f"GradientExplainer vs JAX Expected Gradients: rho {np.round(vs_eg, 2)}")
    assert np.mean(on_garment) > 0.4 and min(on_garment) > 0.2
    assert np.mean(vs_eg) > 0.9 and min(vs_eg) > 0.8
    again, base_again = gradient_shap(twin, images, top, background, 200, 0, index)
    assert np.array_equal(values, again) and np.array_equal(base, base_again)
    other_seed, _ = gradient_shap(twin, images, top, background, 200, 1, index)
    assert not np.array_equal(values, other_seed)
    # Keyed by test index: image 3 alone gives its map of the batch; as another image, other draws
    alone, _ = gradient_shap(twin, images[3:4], top[3:4], background, 200, 0, index[3:4])
    assert np.array_equal(alone[0], values[3])
    renumbered, _ = gradient_shap(twin, images[3:4], top[3:4], background, 200, 0, np.array([9]))
    assert not np.array_equal(renumbered[0], values[3])


def test_background_is_a_seeded_draw_of_training_images(small_train: Split) -> None:
    first = background_images(small_train.images_NHW, 10, seed=0)
    assert first.dtype == np.float32 and first.shape == (10, 28, 28)
    assert np.array_equal(first, background_images(small_train.images_NHW, 10, seed=0))
    assert not np.array_equal(first, background_images(small_train.images_NHW, 10, seed=1))


@pytest.fixture(scope="module")
def exported(trained_model, raw_splits: tuple[Split, Split], tmp_path_factory):
    from fmnist_shap.export import export_model

    out = tmp_path_factory.mktemp("export") / "export"
    metrics = export_model(trained_model, raw_splits[1].images_NHW[:500], out)
    return out, metrics


def test_export_writes_three_checked_files(exported) -> None:
    out, metrics = exported
    assert sorted(p.name for p in out.iterdir()) == [
        "model.jax_export",
        "model.tflite",
        "saved_model",
    ]
    assert metrics["images"] == 500
    assert metrics["twin_max_logit_diff"] <= PARITY_TOLERANCE
    for kind in ("saved_model", "tflite", "jax_export"):
        assert metrics[kind]["max_logit_diff"] < 1e-3, kind
        assert metrics[kind]["class_agreement"] == 1.0, kind
        assert metrics[kind]["size_bytes"] > 100_000, kind  # the weights are in the file


def test_exported_files_load_without_jax_in_a_fresh_process(
    exported, predict, raw_splits: tuple[Split, Split], tmp_path
) -> None:
    """What a user's server does: no jax, no flax, only TensorFlow and numpy."""
    out, _ = exported
    images = raw_splits[1].images_NHW[500:600]
    np.save(tmp_path / "images.npy", images)
    script = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('jax', 'jaxlib', 'flax'):\n"
        "            raise ImportError(name + ' blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import numpy as np\n"
        "from fmnist_shap.serving import saved_model_logits, tflite_logits\n"
        f"images = np.load({str(tmp_path / 'images.npy')!r})\n"
        f"np.save({str(tmp_path / 'sm.npy')!r}, saved_model_logits({str(out / 'saved_model')!r}, images))\n"
        f"np.save({str(tmp_path / 'tfl.npy')!r}, tflite_logits({str(out / 'model.tflite')!r}, images))\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('jax', 'flax')]\n"
    )
    env = subprocess_env(tmp_path)
    env.pop("PYTHONPATH")  # the installed package, as a user has it
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    expected = predict(images)
    for name, tolerance in (("sm.npy", 1e-4), ("tfl.npy", 1e-3)):
        logits = np.load(tmp_path / name)
        assert logits.shape == (100, NUM_CLASSES)
        assert np.abs(logits - expected).max() < tolerance, name


def test_jax_export_reloads_for_any_batch_size(exported, trained_model, raw_splits) -> None:
    from fmnist_shap.serving import jax_export_logits

    out, _ = exported
    images = raw_splits[1].images_NHW[:37]  # the export's batch dimension is symbolic
    reloaded = jax_export_logits(out / "model.jax_export", images)
    # The same XLA program as the Flax model's; compiled for a symbolic batch, it may round
    # a last bit differently than the eager call.
    np.testing.assert_allclose(reloaded, np.asarray(trained_model(images)), rtol=0, atol=1e-5)
    assert np.array_equal(reloaded, jax_export_logits(out / "model.jax_export", images))
    # No source paths inside: the same model exported from another checkout is the same file.
    assert b".py" not in (out / "model.jax_export").read_bytes()


def test_export_refuses_an_unloadable_format_and_writes_nothing(
    trained_model, raw_splits, tmp_path, monkeypatch
) -> None:
    from fmnist_shap import export

    monkeypatch.setattr(export, "EXPORT_TOLERANCE", 0.0)  # no file can be that close
    with pytest.raises(UserError, match=r"export: saved_model gives logits .* nothing was written"):
        export.export_model(trained_model, raw_splits[1].images_NHW[:50], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))


def test_a_worker_builds_twins_for_the_inputs_it_loaded(
    trained_model, raw_splits: tuple[Split, Split], small_train: Split
) -> None:
    """A process that explains two models one after the other (a single-process run) gets
    each model's twins, not the first one's again."""
    from fmnist_shap.explain.worker import Loaded, context_of, contexts_for
    from fmnist_shap.variants import ExplainParams, Variant
    from tests.conftest import repo_params

    params = repo_params("explain", ExplainParams, keras_background=5, seed=0)
    images = raw_splits[1].images_NHW[:4]
    deep = Variant("deep", "deep", None)

    def loaded(model) -> Loaded:
        randomized = init_model(params.random_weights_seed, NUM_CLASSES, IMAGE_HW)
        background = small_train.images_NHW[:50]
        return Loaded(
            context_of(model, params, background),
            context_of(randomized, params, background),
            None,
            images,
            (),
            params,
        )

    first, second = loaded(trained_model), loaded(init_model(3, NUM_CLASSES, IMAGE_HW))
    twins = contexts_for(deep, first)
    assert contexts_for(deep, first) is twins  # built once per loaded inputs
    other = contexts_for(deep, second)
    assert other is not twins
    np.testing.assert_allclose(
        twin_logits(other[0].twin, images), second.trained.predict(images), atol=1e-4
    )
    assert (
        np.abs(twin_logits(other[0].twin, images) - twin_logits(twins[0].twin, images)).max() > 0.1
    )
