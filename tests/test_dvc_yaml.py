"""dvc.yaml's deps are precise: each stage depends on exactly the library modules it imports."""

import ast
import re
from pathlib import Path

import pytest
import yaml

from fmnist_shap.explain.registry import METHODS
from tests.conftest import REPO

LIBRARY = REPO / "src" / "fmnist_shap"


def module_file(module: str, library: Path = LIBRARY) -> Path | None:
    """The file of a dotted `fmnist_shap…` module: a .py file or a package's __init__.py."""
    parts = module.split(".")[1:]
    base = library.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if parts and candidate.is_file():
            return candidate
    return library / "__init__.py" if not parts else None


def imported_modules(path: Path, library: Path = LIBRARY) -> set[Path]:
    """The library files a file imports directly (absolute or relative imports, modules or
    packages, at any depth), with the __init__.py of every package they live in: Python runs
    those first."""
    package = path.parent if path.is_relative_to(library) else None
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("fmnist_shap")}
        elif isinstance(node, ast.ImportFrom):
            if node.level and package is not None:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.parent
                prefix = ".".join(("fmnist_shap", *anchor.relative_to(library).parts))
                base = f"{prefix}.{node.module}" if node.module else prefix
            elif (node.module or "").startswith("fmnist_shap"):
                base = node.module
            else:
                continue
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
            if base == "fmnist_shap.explain.registry" and "build" in {a.name for a in node.names}:
                # `build` imports every listed method's module by name
                names |= {f"fmnist_shap.explain.methods.{spec.module}" for spec in METHODS}
    files = set()
    for name in names:
        file = module_file(name, library)
        if file is None:
            continue
        files.add(file)
        folder = file.parent
        while folder.is_relative_to(library):
            files.add(folder / "__init__.py")
            folder = folder.parent
    return files


def import_closure(script: Path) -> set[str]:
    """Every library file a script runs: its imports, theirs, and so on."""
    seen: set[Path] = set()
    todo = imported_modules(script) | {LIBRARY / "__init__.py"}  # the package runs first
    while todo:
        file = todo.pop()
        if file not in seen:
            seen.add(file)
            todo |= imported_modules(file)
    return {str(file.relative_to(REPO)) for file in seen}


STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def test_closure_follows_imports_of_imports(tmp_path: Path) -> None:
    script = tmp_path / "stage.py"
    script.write_text("from fmnist_shap.train import fit\n")
    closure = import_closure(script)
    assert {"src/fmnist_shap/train.py", "src/fmnist_shap/model.py"} <= closure
    assert "src/fmnist_shap/errors.py" in closure  # imported by model.py, not by train.py
    assert not any(path.startswith("src/fmnist_shap/explain/") for path in closure)


def test_closure_knows_packages_and_relative_imports(tmp_path: Path) -> None:
    script = tmp_path / "stage.py"
    script.write_text("from fmnist_shap.explain.worker import explain_one\n")
    closure = import_closure(script)
    assert {
        "src/fmnist_shap/__init__.py",
        "src/fmnist_shap/explain/__init__.py",  # a package runs its __init__ first
        "src/fmnist_shap/explain/worker.py",
        "src/fmnist_shap/explain/registry.py",
        "src/fmnist_shap/explain/methods/keras.py",  # imported by name by registry.build
    } <= closure
    library = tmp_path / "fmnist_shap"
    for rel in ("__init__.py", "model.py", "explain/__init__.py", "explain/base.py"):
        (library / rel).parent.mkdir(parents=True, exist_ok=True)
        (library / rel).write_text("")
    inside = library / "explain" / "example.py"
    inside.write_text("from .base import Method\nfrom ..model import CNN\nfrom . import base\n")
    assert imported_modules(inside, library) == {
        library / "explain/base.py",
        library / "model.py",
        library / "explain/__init__.py",
        library / "__init__.py",
    }


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_are_the_modules_it_imports(name: str) -> None:
    stage = STAGES[name]
    (script,) = re.findall(r"stages/\w+\.py", stage["cmd"])
    listed = set()
    for dep in (dep for dep in stage["deps"] if dep.startswith("src/")):
        folder = REPO / dep  # a folder dep (explain/methods) stands for every module in it
        files = sorted(folder.glob("*.py")) if folder.is_dir() else [folder]
        listed |= {str(file.relative_to(REPO)) for file in files}
    assert script in stage["deps"]
    assert listed == import_closure(REPO / script), (
        f"{name}: listed but not imported {sorted(listed - import_closure(REPO / script))}, "
        f"imported but not listed {sorted(import_closure(REPO / script) - listed)}"
    )


def test_model_stages_do_not_depend_on_explain_code_or_params() -> None:
    for name in ("prepare", "train", "evaluate"):
        deps = set(STAGES[name]["deps"])
        assert "src/fmnist_shap/variants.py" not in deps, name
        assert not any(dep.startswith("src/fmnist_shap/explain/") for dep in deps), name
        assert all(not str(p).startswith("explain") for p in STAGES[name].get("params", [])), name
