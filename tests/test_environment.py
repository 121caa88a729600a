"""The installed environment is the locked one: the versions that produced dvc.lock."""

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name

from fmnist_shap.environment import XLA_SETTINGS, apply_xla_settings, record_environment
from tests.conftest import REPO

PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def locked_versions(lock: Path) -> dict[str, str]:
    """name → version of every requirements.lock entry whose marker applies here."""
    pins = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match is None:
            continue
        name, version, marker = match.groups()
        if marker is None or Marker(marker).evaluate():
            pins[canonicalize_name(name)] = version
    return pins


def installed_versions() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}


def test_lock_parser_reads_pins_and_markers(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text(
        "jax==0.12.0.1 \\\n    --hash=sha256:00\n"
        "pywin32==312 ; sys_platform == 'win32' \\\n    --hash=sha256:11\n"
        "Flax==0.12.12 \\\n"
        "    # via foo\n"
    )
    expected = {"jax": "0.12.0.1", "flax": "0.12.12"}
    if sys.platform == "win32":
        expected["pywin32"] = "312"
    assert locked_versions(lock) == expected


def test_core_packages_match_the_lock() -> None:
    locked, installed = locked_versions(REPO / "requirements.lock"), installed_versions()
    for name in ("jax", "jaxlib", "flax", "optax", "shap", "numpy", "scipy", "dvc", "dvclive"):
        assert installed.get(name) == locked[name], (
            f"{name} {installed.get(name)} is installed but requirements.lock pins {locked[name]}; "
            "run `make setup`"
        )


def test_every_locked_package_is_installed_at_its_version() -> None:
    installed = installed_versions()
    wrong = {
        name: (version, installed.get(name))
        for name, version in locked_versions(REPO / "requirements.lock").items()
        if installed.get(name) != version
    }
    assert not wrong, f"locked vs installed: {wrong}; run `make setup`"


def test_python_is_a_reference_version() -> None:
    assert sys.version_info[:2] in ((3, 12), (3, 13))


def test_xla_settings_are_added_once_and_a_users_own_value_wins() -> None:
    environ: dict[str, str] = {}
    assert apply_xla_settings(environ) == " ".join(XLA_SETTINGS)
    assert apply_xla_settings(environ) == " ".join(XLA_SETTINGS)  # not twice
    mine = "--xla_cpu_enable_platform_dependent_math=true --xla_dump_to=/tmp/hlo"
    environ = {"XLA_FLAGS": mine}
    assert apply_xla_settings(environ) == mine
    environ = {"XLA_FLAGS": "--xla_dump_to=/tmp/hlo"}
    assert apply_xla_settings(environ) == "--xla_dump_to=/tmp/hlo " + " ".join(XLA_SETTINGS)


def test_every_process_that_imports_the_package_gets_the_settings() -> None:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    script = "import os, fmnist_shap.data; print(os.environ['XLA_FLAGS'])"
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == list(XLA_SETTINGS)


def test_a_late_import_after_jax_ran_warns() -> None:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    script = "import jax.numpy as jnp; jnp.ones(2).sum().block_until_ready(); import fmnist_shap"
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script], env=env, capture_output=True, text=True
    )
    assert done.returncode != 0 and "import fmnist_shap first" in done.stderr


def test_environment_record_is_byte_stable(tmp_path: Path) -> None:
    record_environment(tmp_path / "a.json", training_fingerprint="f00")
    record_environment(tmp_path / "b.json", training_fingerprint="f00")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    recorded = json.loads((tmp_path / "a.json").read_text())
    assert recorded["packages"]["jax"] == metadata.version("jax")
    assert recorded["xla_flags"].split()[-1] == XLA_SETTINGS[-1]
    assert recorded["training_fingerprint"] == "f00" and recorded["platform"].startswith(
        sys.platform
    )


def other_interpreters() -> list[str]:
    """Interpreters on this machine that cannot run the project: too old, or without its
    packages (a Python 3.12 outside the venv)."""
    found = [p for p in ("/usr/bin/python3", shutil.which("python3.11") or "") if p]
    base = Path(sys.base_prefix) / "bin" / "python3"  # the venv's own base: no jax there
    return [p for p in dict.fromkeys([*found, str(base)]) if Path(p).is_file()]


@pytest.mark.parametrize("interpreter", other_interpreters())
def test_a_stage_under_another_interpreter_stops_with_one_line(interpreter: str) -> None:
    """What `dvc repro` does when PATH's `python` is not the venv's: the stage stops before
    any import fails (no SyntaxError, no ModuleNotFoundError), naming the interpreter and the fix."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = "src"
    done = subprocess.run(
        [interpreter, "stages/explain.py", "a", "b", "c", "d", "e"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert re.match(r"error: /\S+ \(Python 3\.\d+\.\d+\) cannot run this project", lines[0])
    assert ". .venv/bin/activate" in lines[0] and "make repro" in lines[0]
