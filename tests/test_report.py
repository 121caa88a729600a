"""The PR report's refusals: a base revision that is not a commit stops it before any output."""

import subprocess
from pathlib import Path

import pytest

from fmnist_shap.errors import UserError
from fmnist_shap.review.report import build_report
from tests.conftest import subprocess_env


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A real git repository with one commit."""
    env = subprocess_env(tmp_path)
    (tmp_path / "README.md").write_text("x\n")
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "one"], cwd=tmp_path, env=env, check=True)
    return tmp_path


@pytest.mark.parametrize("base", ["no-such-branch", "0123456789abcdef", "main~5", "--all"])
def test_a_base_that_is_not_a_commit_is_refused_before_any_output(repo: Path, base: str) -> None:
    report = repo / "reports" / "pr-report.md"
    with pytest.raises(UserError) as caught:
        build_report(repo, base, report)
    message = str(caught.value)
    assert message.startswith(f"--base {base}: no such commit") and "e.g. --base main" in message
    assert "\n" not in message
    assert not (repo / "reports").exists()
