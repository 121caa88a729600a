"""docs/development.md's recipe for adding an attribution method, followed word for word on a
copy of the project: its file and its registry line are the page's two code blocks, its id goes
into params.yaml, and then the method shows up in explain's metrics, the summary, the plots page
and the PR report — with nothing else edited."""

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, SMALL_PARAMS, run, small_project

pytestmark = pytest.mark.slow

RECIPE = (REPO / "docs" / "development.md").read_text(encoding="utf-8")
# One shap variant, Integrated Gradients and nothing that needs TensorFlow: quick, and enough
# to show the new method beside the others.
PARAMS = SMALL_PARAMS | {
    "explain": SMALL_PARAMS["explain"]
    | {
        "explainers": ["partition"],
        "maskers": ["blur"],
        "gradient_explainers": ["integrated_gradients"],
        "keras_explainers": [],
    }
}


def recipe_blocks() -> tuple[str, str, str]:
    """(the method file's path, its code, the registry entry) as the page gives them."""
    section = RECIPE[RECIPE.index("**Adding an attribution method**") :]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    code = blocks[0]
    path = re.match(r"# (src/\S+\.py)\n", code)
    assert path is not None, "the recipe's file block names its path on its first line"
    entry = "\n".join(line for line in blocks[1].splitlines() if not line.startswith("#"))
    assert entry.startswith("MethodSpec(")
    return path[1], code, entry


def test_the_recipe_adds_a_method_everywhere(raw_dir: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    env, _ = small_project(project, raw_dir, PARAMS)
    params = yaml.safe_load((project / "params.yaml").read_text())

    # The recipe: the file, the registry line, the id in params.yaml.
    path, code, entry = recipe_blocks()
    (project / path).write_text(code)
    registry = project / "src/fmnist_shap/explain/registry.py"
    text = registry.read_text()
    end = text.index("\n)\n", text.index("METHODS = ("))
    indented = "\n".join(f"    {line}" for line in entry.splitlines())
    registry.write_text(f"{text[:end]}\n{indented},{text[end:]}")
    params["explain"]["gradient_explainers"].append("brightness")
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    out = run(["dvc", "repro"], project, env)
    assert "Running stage 'explain'" in out and "Running stage 'summarize'" in out
    metrics = json.loads((project / "reports/explain/metrics.json").read_text())
    assert set(metrics) == {"partition-blur", "integrated_gradients", "brightness"}
    assert metrics["brightness"]["additivity_max_error"] < 1e-3  # exactly additive, in float32
    summary = (project / "reports/faithfulness/summary.md").read_text()
    assert re.search(r"\| brightness +\| black image +\|", summary), summary
    curves = (project / "reports/faithfulness/curves.csv").read_text()
    assert {row.split(",")[0] for row in curves.splitlines()[1:]} == {
        "partition-blur",
        "integrated_gradients",
        "brightness",
        "random",
    }
    assert (project / "reports/explain/plots/brightness-review.png").is_file()

    # The plots page: the new method's curves and bars are in the page's data.
    page_dir = tmp_path / "page"
    cmd = [sys.executable, "-m", "fmnist_shap.plots_page", "show", "-o", str(page_dir)]
    run(cmd, project, env)
    html = (page_dir / "index.html").read_text()
    assert html.count('"variant": "brightness"') >= 3, "deletion, insertion and bars"

    # The PR report against the commit before the method existed.
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-qm", "brightness"], project, env)
    run([sys.executable, "-m", "fmnist_shap.review.report", "--base", "main~1"], project, env)
    report = (project / "reports/pr-report.md").read_text()
    faithfulness = report[report.index("Faithfulness per variant") :]
    assert re.search(r"\| brightness +\| [\d.]+ \(head only\)", faithfulness), faithfulness
    assert "pr/head/brightness-review.png" in report
    edited = run(
        ["git", "diff", "--name-only", "main~1", "--", "src", "stages", "dvc.yaml"], project, env
    )
    assert set(edited.split()) == {path, "src/fmnist_shap/explain/registry.py"}
