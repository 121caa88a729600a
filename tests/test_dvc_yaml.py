"""dvc.yaml's deps are precise: each stage depends on exactly the library modules it imports."""

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

LIBRARY = REPO / "src" / "fmnist_shap"


def imported_modules(path: Path) -> set[str]:
    """The fmnist_shap modules a file imports directly."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fmnist_shap."):
            modules.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            modules |= {
                a.name.split(".")[1] for a in node.names if a.name.startswith("fmnist_shap.")
            }
    return modules


def import_closure(script: Path) -> set[str]:
    """Every library file a script runs: its imports, theirs, and so on."""
    seen: set[str] = set()
    todo = imported_modules(script) | {"__init__"}  # the package runs first, whatever is imported
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo |= imported_modules(LIBRARY / f"{module}.py")
    return {f"src/fmnist_shap/{module}.py" for module in seen}


STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def test_closure_follows_imports_of_imports(tmp_path: Path) -> None:
    script = tmp_path / "stage.py"
    script.write_text("from fmnist_shap.train import fit\n")
    closure = import_closure(script)
    assert {"src/fmnist_shap/train.py", "src/fmnist_shap/model.py"} <= closure
    assert "src/fmnist_shap/errors.py" in closure  # imported by model.py, not by train.py
    assert "src/fmnist_shap/explain.py" not in closure


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_are_the_modules_it_imports(name: str) -> None:
    stage = STAGES[name]
    (script,) = re.findall(r"stages/\w+\.py", stage["cmd"])
    listed = {dep for dep in stage["deps"] if dep.startswith("src/")}
    assert script in stage["deps"]
    assert listed == import_closure(REPO / script), (
        f"{name}: listed but not imported {sorted(listed - import_closure(REPO / script))}, "
        f"imported but not listed {sorted(import_closure(REPO / script) - listed)}"
    )


def test_model_stages_do_not_depend_on_explain_code_or_params() -> None:
    for name in ("prepare", "train", "evaluate"):
        deps = set(STAGES[name]["deps"])
        assert not deps & {"src/fmnist_shap/variants.py", "src/fmnist_shap/explain.py"}, name
        assert all(not str(p).startswith("explain") for p in STAGES[name].get("params", [])), name
