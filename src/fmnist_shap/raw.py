"""Fashion-MNIST's raw files: obtain the official IDX files, verify them, parse and split them."""

import dataclasses
import gzip
import hashlib
import os
import subprocess
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from fmnist_shap.artifacts import write_bytes
from fmnist_shap.data import Split
from fmnist_shap.errors import UserError
from fmnist_shap.params import require

# SHA-256 of each decompressed IDX file. The official .gz files and Debian's copies differ in
# their gzip header (Debian's omit the stored file name) but decompress to these same bytes,
# so the payload, not the wrapper, is what identifies the data set.
RAW_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
DEFAULT_MIRROR = Path("/usr/share/datasets/fashion-mnist")  # Debian: dataset-fashion-mnist
OFFICIAL_URLS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)


@dataclasses.dataclass(frozen=True)
class PrepareParams:
    """How the 60k training images are split; optional subsets for quick runs: params.yaml's
    `prepare` section, every key required (its values live there only)."""

    val_size: int
    seed: int
    train_subset: int | None  # None: all training images left after the validation split
    test_subset: int | None  # None: all 10k test images

    def __post_init__(self) -> None:
        require(self.val_size > 0, "prepare.val_size", "must be > 0")
        require(self.val_size < 60000, "prepare.val_size", "must be < 60000")
        require(self.seed >= 0, "prepare.seed", "must be >= 0")
        if self.train_subset is not None:
            require(self.train_subset > 0, "prepare.train_subset", "must be > 0 or null")
        if self.test_subset is not None:
            require(self.test_subset > 0, "prepare.test_subset", "must be > 0 or null")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decompress(gz_bytes: bytes, source: str) -> bytes:
    """Gunzip with a clear error for a truncated or corrupted file."""
    try:
        return gzip.decompress(gz_bytes)
    except (OSError, EOFError, zlib.error) as error:
        raise UserError(
            f"{source}: not a valid gzip file ({error}); delete it and fetch the data again"
        ) from None


def verify(name: str, payload: bytes, source: str) -> None:
    """Refuse a payload whose SHA-256 is not the pinned one."""
    digest = sha256_hex(payload)
    if digest != RAW_SHA256[name]:
        raise UserError(
            f"{source}: SHA-256 {digest[:16]}… does not match the pinned {RAW_SHA256[name][:16]}…; "
            "the file is corrupt or not Fashion-MNIST: delete it and fetch the data again"
        )


def _dvc_remote_configured(repo: Path) -> bool:
    try:
        listed = subprocess.run(
            ["dvc", "remote", "list"], cwd=repo, capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        return False
    return listed.returncode == 0 and bool(listed.stdout.strip())


def _pull_from_remote(out_dir: Path) -> bool:
    """`dvc pull` the tracked raw directory when a DVC remote is configured."""
    out = out_dir.resolve()
    dvc_file = out.with_name(out.name + ".dvc")
    repo = next((p for p in out.parents if (p / ".dvc").is_dir()), None)
    if repo is None or not dvc_file.is_file() or not _dvc_remote_configured(repo):
        return False
    pulled = subprocess.run(
        ["dvc", "pull", "--quiet", str(dvc_file)], cwd=repo, capture_output=True, check=False
    )
    return pulled.returncode == 0


def _payload_is_ok(path: Path, name: str) -> bool:
    return path.is_file() and sha256_hex(path.read_bytes()) == RAW_SHA256[name]


def fetch_raw(
    out_dir: str | os.PathLike,
    mirror: str | os.PathLike | None = DEFAULT_MIRROR,
    urls: tuple[str, ...] = OFFICIAL_URLS,
    use_dvc_remote: bool = True,
) -> dict[str, str]:
    """Put the four verified IDX files in `out_dir`; return where each came from.

    Sources in order: files already there, the DVC remote, the local mirror, Keras's download
    cache (`keras_cache`), the official URLs.
    Every file is checked against its pinned SHA-256 before it is written (atomically).
    """
    out = Path(out_dir)
    origins: dict[str, str] = {}
    missing = not all(_payload_is_ok(out / name, name) for name in RAW_SHA256)
    if missing and use_dvc_remote and _pull_from_remote(out):
        origins = dict.fromkeys(RAW_SHA256, "dvc remote")
    for name in RAW_SHA256:
        target = out / name
        if _payload_is_ok(target, name):
            origins.setdefault(name, "already present")
            continue
        payload, origin = _obtain(name, mirror, urls)
        verify(name, payload, origin)
        write_bytes(target, payload)
        origins[name] = origin
    return origins


def keras_cache() -> Path:
    """Where `keras.datasets.fashion_mnist.load_data()` keeps the four .gz files:
    $KERAS_HOME/datasets/fashion-mnist, by default ~/.keras/datasets/fashion-mnist."""
    home = os.environ.get("KERAS_HOME") or Path.home() / ".keras"
    return Path(home) / "datasets" / "fashion-mnist"


def _obtain(
    name: str, mirror: str | os.PathLike | None, urls: tuple[str, ...]
) -> tuple[bytes, str]:
    """The file from the mirror, else Keras's download cache, else the official URLs; the
    caller verifies it against the pinned SHA-256 whatever its origin (Keras checks none)."""
    for folder in (mirror, keras_cache()):
        local = Path(folder) / f"{name}.gz" if folder is not None else None
        if local is not None and local.is_file():
            return decompress(local.read_bytes(), str(local)), str(local)
    failures = []
    for base in urls:
        url = f"{base}{name}.gz"
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                return decompress(response.read(), url), url
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            failures.append(f"{url} ({getattr(error, 'reason', error)})")
    raise UserError(
        f"{name}.gz: not in the mirror {mirror} and not downloadable ({'; '.join(failures)}); "
        "install Debian's dataset-fashion-mnist, run keras.datasets.fashion_mnist.load_data() once, "
        "or pass --mirror DIR with the four .gz files"
    )


def read_idx(path: Path, name: str) -> np.ndarray:
    """Parse one verified IDX file (big-endian header: magic, dims) into a uint8 array."""
    if not path.is_file():
        raise UserError(f"{path}: missing; run `make data` (or `dvc pull`) to fetch the raw data")
    payload = path.read_bytes()
    verify(name, payload, str(path))
    ndim = payload[3]
    dims = np.frombuffer(payload, dtype=">u4", count=ndim, offset=4)
    return np.frombuffer(payload, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_raw(raw_dir: str | os.PathLike) -> tuple[Split, Split]:
    """The official (train, test) splits from a directory of verified IDX files."""
    raw = Path(raw_dir)
    if not raw.is_dir():
        raise UserError(f"{raw}: data directory missing; run `make data` to fetch it")
    splits = []
    for prefix in ("train", "t10k"):
        images = read_idx(raw / f"{prefix}-images-idx3-ubyte", f"{prefix}-images-idx3-ubyte")
        labels = read_idx(raw / f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels-idx1-ubyte")
        splits.append(Split(images, labels))
    return splits[0], splits[1]


def split_train_val(train: Split, params: PrepareParams) -> tuple[Split, Split]:
    """Hold out `val_size` images, chosen by a seeded permutation, from the training set."""
    order = np.random.default_rng(params.seed).permutation(len(train))
    val_idx, train_idx = order[: params.val_size], order[params.val_size :]
    if params.train_subset is not None:
        if params.train_subset > len(train_idx):
            raise UserError(
                f"params.yaml: prepare.train_subset={params.train_subset} exceeds the "
                f"{len(train_idx)} images left after the validation split; lower it or use null"
            )
        train_idx = train_idx[: params.train_subset]
    # Sorted indices keep the files in the official order: easier to inspect, same content.
    train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
    return (
        Split(train.images_NHW[train_idx], train.labels_N[train_idx]),
        Split(train.images_NHW[val_idx], train.labels_N[val_idx]),
    )


def subset_test(test: Split, params: PrepareParams) -> Split:
    """The first `test_subset` test images (all of them by default)."""
    if params.test_subset is None:
        return test
    if params.test_subset > len(test):
        raise UserError(
            f"params.yaml: prepare.test_subset={params.test_subset} exceeds the {len(test)} "
            "test images; lower it or use null"
        )
    n = params.test_subset
    return Split(test.images_NHW[:n], test.labels_N[:n])
