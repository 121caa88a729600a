import gzip
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from fmnist_shap.artifacts import save_npz
from fmnist_shap.data import Split, load_split, save_split
from fmnist_shap.errors import UserError
from fmnist_shap.raw import (
    RAW_SHA256,
    PrepareParams,
    fetch_raw,
    keras_cache,
    load_raw,
    split_train_val,
    subset_test,
)
from tests.conftest import repo_params


def test_raw_shapes_dtypes_and_labels(raw_splits: tuple[Split, Split]) -> None:
    train, test = raw_splits
    assert train.images_NHW.shape == (60000, 28, 28) and test.images_NHW.shape == (10000, 28, 28)
    assert train.images_NHW.dtype == np.uint8 and train.labels_N.dtype == np.uint8
    assert set(np.unique(train.labels_N)) == set(range(10))
    assert np.bincount(train.labels_N).tolist() == [6000] * 10  # Fashion-MNIST is balanced
    assert np.bincount(test.labels_N).tolist() == [1000] * 10
    assert 0 < train.images_NHW.mean() < 255


@pytest.fixture(autouse=True)
def no_keras_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's real ~/.keras cache must not stand in for the sources a test checks."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("empty_keras_home")))


@pytest.fixture(scope="module")
def gz_mirror(raw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mirror directory holding gzip copies of the real files."""
    dest = tmp_path_factory.mktemp("mirror")
    for name in RAW_SHA256:
        data = gzip.compress((raw_dir / name).read_bytes(), compresslevel=1, mtime=0)
        (dest / f"{name}.gz").write_bytes(data)
    return dest


def _gz_mirror(gz_mirror: Path, dest: Path) -> Path:
    """A private copy of the mirror, safe to corrupt."""
    return Path(shutil.copytree(gz_mirror, dest))


def test_fetch_from_mirror_verifies_and_writes(
    raw_dir: Path, gz_mirror: Path, tmp_path: Path
) -> None:
    mirror = _gz_mirror(gz_mirror, tmp_path / "mirror")
    origins = fetch_raw(tmp_path / "raw", mirror, urls=(), use_dvc_remote=False)
    assert set(origins) == set(RAW_SHA256)
    assert all(str(mirror) in origin for origin in origins.values())
    for name in RAW_SHA256:
        assert (tmp_path / "raw" / name).read_bytes() == (raw_dir / name).read_bytes()
    # A second call finds everything in place and touches nothing.
    assert set(fetch_raw(tmp_path / "raw", mirror, urls=(), use_dvc_remote=False).values()) == {
        "already present"
    }


def test_fetch_takes_keras_download_cache_and_verifies_it(
    raw_dir: Path, gz_mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files `keras.datasets.fashion_mnist.load_data()` left in $KERAS_HOME are a source, checked
    against the same pinned SHA-256 (Keras checks none)."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    cache = _gz_mirror(gz_mirror, tmp_path / "keras" / "datasets" / "fashion-mnist")
    assert keras_cache() == cache
    origins = fetch_raw(tmp_path / "raw", tmp_path / "no-mirror", urls=(), use_dvc_remote=False)
    assert set(origins.values()) == {str(cache / f"{name}.gz") for name in RAW_SHA256}
    for name in RAW_SHA256:
        assert (tmp_path / "raw" / name).read_bytes() == (raw_dir / name).read_bytes()
    name = "t10k-labels-idx1-ubyte"
    payload = bytearray((raw_dir / name).read_bytes())
    payload[-1] ^= 0xFF
    (cache / f"{name}.gz").write_bytes(gzip.compress(bytes(payload)))
    with pytest.raises(UserError, match=rf"{cache}/{name}.gz: SHA-256 .* does not match"):
        fetch_raw(tmp_path / "raw2", None, urls=(), use_dvc_remote=False)
    assert not (tmp_path / "raw2" / name).exists()


def test_keras_cache_defaults_to_the_home_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KERAS_HOME")
    assert keras_cache() == Path.home() / ".keras" / "datasets" / "fashion-mnist"


def test_fetch_rejects_wrong_checksum_and_writes_nothing(
    raw_dir: Path, gz_mirror: Path, tmp_path: Path
) -> None:
    mirror = _gz_mirror(gz_mirror, tmp_path / "mirror")
    name = "train-labels-idx1-ubyte"
    payload = bytearray((raw_dir / name).read_bytes())
    payload[100] ^= 0xFF  # one flipped label byte: still a valid gzip, wrong content
    (mirror / f"{name}.gz").write_bytes(gzip.compress(bytes(payload)))
    out = tmp_path / "raw"
    with pytest.raises(UserError, match=r"SHA-256 .* does not match"):
        fetch_raw(out, mirror, urls=(), use_dvc_remote=False)
    assert not (out / name).exists()
    assert not out.exists() or not list(out.glob(".*.tmp"))


def test_fetch_rejects_truncated_gzip(raw_dir: Path, gz_mirror: Path, tmp_path: Path) -> None:
    mirror = _gz_mirror(gz_mirror, tmp_path / "mirror")
    name = "t10k-images-idx3-ubyte"
    data = (mirror / f"{name}.gz").read_bytes()
    (mirror / f"{name}.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a valid gzip file"):
        fetch_raw(tmp_path / "raw", mirror, urls=(), use_dvc_remote=False)
    assert not (tmp_path / "raw" / name).exists()


def test_fetch_without_any_source_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="dataset-fashion-mnist"):
        fetch_raw(tmp_path / "raw", tmp_path / "empty", urls=(), use_dvc_remote=False)


def test_load_raw_rejects_corrupted_copy(raw_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "raw"
    shutil.copytree(raw_dir, copy)
    target = copy / "t10k-labels-idx1-ubyte"
    data = bytearray(target.read_bytes())
    data[-1] = (data[-1] + 1) % 10
    target.write_bytes(bytes(data))
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte: SHA-256"):
        load_raw(copy)


def test_missing_data_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="data directory missing; run `make data`"):
        load_raw(tmp_path / "nowhere")


def test_split_is_seeded_disjoint_and_sized(raw_splits: tuple[Split, Split]) -> None:
    train, _ = raw_splits
    params = repo_params("prepare", PrepareParams, val_size=1000, seed=3, train_subset=2000)
    t1, v1 = split_train_val(train, params)
    t2, v2 = split_train_val(train, params)
    assert (len(t1), len(v1)) == (2000, 1000)
    assert np.array_equal(t1.images_NHW, t2.images_NHW) and np.array_equal(v1.labels_N, v2.labels_N)
    _, v3 = split_train_val(train, repo_params("prepare", PrepareParams, val_size=1000, seed=4))
    assert not np.array_equal(v1.images_NHW, v3.images_NHW)
    # No validation image is also a training image (compare by content).
    train_keys = {img.tobytes() for img in t1.images_NHW}
    assert not any(img.tobytes() in train_keys for img in v1.images_NHW)


def test_subsets_larger_than_data_are_refused(raw_splits: tuple[Split, Split]) -> None:
    train, test = raw_splits
    with pytest.raises(UserError, match="prepare.train_subset"):
        split_train_val(
            train, repo_params("prepare", PrepareParams, val_size=59000, train_subset=5000)
        )
    with pytest.raises(UserError, match="prepare.test_subset"):
        subset_test(test, repo_params("prepare", PrepareParams, test_subset=20000))


def test_prepared_split_round_trip_is_byte_stable(small_train: Split, tmp_path: Path) -> None:
    save_split(tmp_path / "a.npz", small_train)
    save_split(tmp_path / "b.npz", small_train)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded = load_split(tmp_path / "a.npz")
    assert loaded.images_NHW.dtype == np.uint8
    assert np.array_equal(loaded.images_NHW, small_train.images_NHW)
    assert np.array_equal(loaded.labels_N, small_train.labels_N)


@contextmanager
def http_server(directory: Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving `directory`; yields its base URL."""
    handler = partial(SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_over_http_verifies_and_writes(
    raw_dir: Path, gz_mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with http_server(gz_mirror) as url:
        origins = fetch_raw(tmp_path / "raw", None, urls=(url,), use_dvc_remote=False)
    assert set(origins.values()) == {f"{url}{name}.gz" for name in RAW_SHA256}
    for name in RAW_SHA256:
        assert (tmp_path / "raw" / name).read_bytes() == (raw_dir / name).read_bytes()


def test_fetch_over_http_refuses_a_corrupt_file_and_tries_the_next_url(
    raw_dir: Path, gz_mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    corrupt = _gz_mirror(gz_mirror, tmp_path / "corrupt")
    name = "t10k-labels-idx1-ubyte"
    payload = bytearray((raw_dir / name).read_bytes())
    payload[-1] = (payload[-1] + 1) % 10
    (corrupt / f"{name}.gz").write_bytes(gzip.compress(bytes(payload)))
    out = tmp_path / "raw"
    with http_server(corrupt) as url, pytest.raises(UserError, match=rf"{url}{name}.gz: SHA-256"):
        fetch_raw(out, None, urls=(url,), use_dvc_remote=False)
    assert not (out / name).exists() and not list(out.glob(".*.tmp"))
    # A URL that does not answer is reported, and the next one is tried.
    with http_server(gz_mirror) as good:
        dead = "http://127.0.0.1:9/"  # the discard port: nothing listens there
        origins = fetch_raw(out, None, urls=(dead, good), use_dvc_remote=False)
    assert origins[name] == f"{good}{name}.gz"
    with pytest.raises(UserError, match=r"not downloadable \(http://127.0.0.1:9/"):
        fetch_raw(tmp_path / "other", None, urls=(dead,), use_dvc_remote=False)


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [
        ({"images": np.zeros((4, 28, 28), np.float32), "labels": np.zeros(4, np.uint8)}, "dtype"),
        ({"images": np.zeros((4, 784), np.uint8), "labels": np.zeros(4, np.uint8)}, "ndim"),
        ({"images": np.zeros((4, 28, 28), np.uint8), "labels": np.zeros(3, np.uint8)}, "length"),
        ({"images": np.zeros((4, 28, 28), np.uint8)}, "no labels"),
    ],
)
def test_load_split_refuses_bad_arrays(tmp_path: Path, arrays: dict, problem: str) -> None:
    path = tmp_path / "split.npz"
    save_npz(path, arrays)
    with pytest.raises(UserError, match=r"split.npz: (unexpected arrays|unreadable).*prepare`"):
        load_split(path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match=r"junk.npz: unreadable"):
        load_split(tmp_path / "junk.npz")
    with pytest.raises(UserError, match=r"absent.npz: missing; run `dvc repro prepare`"):
        load_split(tmp_path / "absent.npz")


def test_a_killed_writers_temporaries_go_with_the_next_write(tmp_path: Path) -> None:
    """What SIGKILL leaves beside an output (`.NAME.XXXXXXXX.tmp`, a file or a folder) is
    removed by the next write of that output, and only of that one; a full disk names the
    output, not its temporary."""
    import errno

    from fmnist_shap.artifacts import atomic_dir, write_bytes

    (tmp_path / ".model.npz.k3j_x9q2.tmp").write_bytes(b"half")
    (tmp_path / ".plots.ab12cd34.tmp").mkdir()
    other = tmp_path / ".model.npz.json.ab12cd34.tmp"  # another output's temporary
    other.write_bytes(b"x")
    write_bytes(tmp_path / "model.npz", b"whole")
    with atomic_dir(tmp_path / "plots") as folder:
        (folder / "a.png").write_bytes(b"png")
    with atomic_dir(tmp_path / "plots") as folder:  # replaces the old folder whole
        (folder / "b.png").write_bytes(b"png")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [other.name, "model.npz", "plots"]
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["b.png"]
    with pytest.raises(OSError, match="model.npz") as full, atomic_dir(tmp_path / "model.npz"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert full.value.filename == str(tmp_path / "model.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == left
