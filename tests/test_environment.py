"""The installed environment is the locked one: the versions that produced dvc.lock."""

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

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
