"""Shared fixtures: the real Fashion-MNIST files, and small real subsets of them."""

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fmnist_shap.caches import enable_compilation_cache
from fmnist_shap.data import CLASS_NAMES, Split
from fmnist_shap.model import init_model, make_predict_fn
from fmnist_shap.params import load_params
from fmnist_shap.raw import DEFAULT_MIRROR, fetch_raw, load_raw
from fmnist_shap.train import TrainParams, fit

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES, IMAGE_HW = len(CLASS_NAMES), (28, 28)  # Fashion-MNIST's


def repo_params[T](section: str, cls: type[T], **changes: Any) -> T:
    """The repository's params.yaml section, with `changes` (validated like the file).

    The workspace's params.yaml changes with every `dvc exp run -S …`: a test pins every value
    its assertions depend on, and takes only the rest (the section's shape) from the file."""
    return dataclasses.replace(load_params(REPO / "params.yaml", section, cls), **changes)


@pytest.fixture(scope="session", autouse=True)
def compilation_cache() -> None:
    """The pipeline's on-disk XLA cache: a rerun of the suite loads what the last one compiled
    (the same executables, so no test sees other numbers)."""
    enable_compilation_cache()


@pytest.fixture(scope="session")
def raw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four verified IDX files: the repository's data/raw, else fetched from the mirror."""
    repo_raw = REPO / "data" / "raw"
    if all(
        (repo_raw / name).is_file()
        for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
    ):
        return repo_raw
    out = tmp_path_factory.mktemp("raw")
    fetch_raw(out, os.environ.get("FMNIST_MIRROR", DEFAULT_MIRROR), use_dvc_remote=False)
    return out


@pytest.fixture(scope="session")
def raw_splits(raw_dir: Path) -> tuple[Split, Split]:
    return load_raw(raw_dir)


@pytest.fixture(scope="session")
def small_train(raw_splits: tuple[Split, Split]) -> Split:
    """The first 1024 real training images."""
    train, _ = raw_splits
    return Split(train.images_NHW[:1024], train.labels_N[:1024])


@pytest.fixture(scope="session")
def small_val(raw_splits: tuple[Split, Split]) -> Split:
    """256 real training images not in `small_train`."""
    train, _ = raw_splits
    return Split(train.images_NHW[-256:], train.labels_N[-256:])


@pytest.fixture(scope="session")
def trained_model(small_train: Split, small_val: Split):
    """A CNN trained for one epoch on 1024 real images: confident enough to have structure."""
    model = init_model(0, NUM_CLASSES, IMAGE_HW)
    fit(
        model,
        small_train,
        small_val,
        repo_params(
            "train", TrainParams, lr=3e-3, lr_schedule="cosine", epochs=1, batch_size=64, seed=0
        ),
    )
    return model


SMALL_PARAMS = {
    "prepare": {"val_size": 500, "train_subset": 2000, "test_subset": 1000},
    "train": {"epochs": 1, "batch_size": 100},
    # Four of the ten variants keep the test short; the default builds all of them.
    "explain": {
        "explainers": ["partition", "permutation"],
        "maskers": ["telea"],
        "gradient_explainers": ["integrated_gradients"],
        "keras_explainers": ["deep"],
        "keras_background": 20,
        "samples_per_set": 1,
        "review_per_class": 1,
        "top_k": 3,
        "budget": {
            "partition": 100,
            "permutation": 1569,
            "integrated_gradients": 32,
            "expected_gradients": 32,
            "gradient": 32,
        },
        "faithfulness_steps": 16,
    },
    # Class-level maps of one image a class, on the stage's own LocalCluster.
    "global": {"variants": ["integrated_gradients"], "per_class": 1, "chunk_size": 4, "workers": 2},
}
VARIANTS = ("partition-telea", "permutation-telea", "integrated_gradients", "deep")


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def copy_repository(dest: Path, raw_dir: Path) -> None:
    """The repository's tracked and unignored files as they are now, plus the raw data."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    shutil.copytree(raw_dir, dest / "data" / "raw")


def small_project(path: Path, raw_dir: Path, params: dict = SMALL_PARAMS) -> tuple[dict, str]:
    """A copy of the repository at `path` with `params` merged into params.yaml, reproduced and
    committed as `main` (raw data in DVC's cache); returns its subprocess environment and what
    `dvc repro` printed."""
    path.mkdir(parents=True, exist_ok=True)
    copy_repository(path, raw_dir)
    document = yaml.safe_load((path / "params.yaml").read_text())
    for section, values in params.items():
        document[section].update(values)
    (path / "params.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    env = subprocess_env(path / "src")  # the copy's library, not the installed one
    run(["git", "init", "-q", "-b", "main"], path, env)
    run(["git", "add", "-A"], path, env)
    run(["git", "commit", "-q", "-m", "copy"], path, env)  # dvclive wants a commit to log against
    run(["dvc", "commit", "--force", "--quiet", "data/raw.dvc"], path, env)  # raw data into cache
    output = run(["dvc", "repro"], path, env)
    run(["git", "add", "-A"], path, env)
    run(["git", "commit", "-q", "-m", "baseline"], path, env)
    return env, output


def subprocess_env(library: Path) -> dict[str, str]:
    """The environment for git, dvc and stage subprocesses of a copied repository.

    This interpreter's bin first on PATH, the copy's library on PYTHONPATH, a git identity,
    and none of the variables by which an outer git or DVC run would leak in.
    """
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(library)
    for key in ("DVC_EXP_NAME", "DVC_ROOT", "GIT_DIR", "GIT_WORK_TREE"):
        env.pop(key, None)
    identity = {"NAME": "test", "EMAIL": "test@example.invalid"}
    env.update(
        {
            f"GIT_{who}_{key}": value
            for who in ("AUTHOR", "COMMITTER")
            for key, value in identity.items()
        }
    )
    return env


def pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28)).astype(np.uint8)


@pytest.fixture(scope="session")
def predict(trained_model):
    """`trained_model`'s numpy predictor."""
    return make_predict_fn(trained_model, 256)


@dataclasses.dataclass(frozen=True)
class S3Server:
    """A real S3-API server (moto's) on 127.0.0.1, with a bucket, a writer and a reader."""

    endpoint: str
    bucket: str
    writer: dict[str, str]  # AWS_* variables of a user who may read and write the bucket
    reader: dict[str, str]  # AWS_* variables of a user who may only read it


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto_server in its own process; after setup it checks every request's signature and the
    user's IAM policy, so wrong or read-only credentials are refused as S3 would."""
    import boto3
    import requests

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                requests.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        admin = {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", **admin)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **admin)
        s3.create_bucket(Bucket="team-dvc")
        users = {}
        for user, actions in (
            ("writer", ["s3:*"]),
            # Read-only as on AWS; moto authorises a HEAD of the bucket as s3:HeadBucket (AWS
            # as s3:ListBucket).
            ("reader", ["s3:GetObject", "s3:ListBucket", "s3:HeadBucket"]),
        ):
            iam.create_user(UserName=user)
            policy = {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
            }
            iam.put_user_policy(
                UserName=user, PolicyName=f"{user}-dvc", PolicyDocument=json.dumps(policy)
            )
            key = iam.create_access_key(UserName=user)["AccessKey"]
            users[user] = {
                "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            }
        # From now on every request is authenticated and authorised.
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=5).raise_for_status()
        yield S3Server(endpoint, "team-dvc", users["writer"], users["reader"])
    finally:
        server.terminate()
        server.wait(timeout=10)
