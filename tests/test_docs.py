"""The docs stay true: every `make` target, `python -m` module, params key and relative link that
README.md and docs/*.md name exists, so a renamed command breaks CI instead of the docs."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, subprocess_env

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TEXT = {page: page.read_text(encoding="utf-8") for page in PAGES}
ALL_TEXT = "\n".join(TEXT.values())

MAKE_TARGETS = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
SECTIONS = tuple(PARAMS)


def named_targets() -> set[str]:
    """`make repro` in backticks, or `make plots-diff BASE=main` opening a line of a code block
    (not prose such as "make and git")."""
    return set(re.findall(r"(?:`|^\s*)make ([a-z][\w-]*)", ALL_TEXT, re.M))


def named_modules() -> set[str]:
    return set(re.findall(r"python -m (fmnist_shap(?:\.\w+)+)", ALL_TEXT))


def named_params() -> set[str]:
    """`explain.budget.partition`-style keys in backticks (with an optional `=value`)."""
    pattern = rf"`((?:{'|'.join(SECTIONS)})\.[a-z_][\w.]*)(?:=[^`]*)?`"
    return set(re.findall(pattern, ALL_TEXT))


def test_the_docs_name_targets_modules_and_keys() -> None:
    """The extraction itself finds what it should (else the tests below would pass empty)."""
    assert {"repro", "test", "verify", "plots", "bench"} <= named_targets()
    assert {"fmnist_shap.review.report", "fmnist_shap.remote"} <= named_modules()
    assert {"explain.seed", "explain.budget.permutation", "global.per_class"} <= named_params()


@pytest.mark.parametrize("target", sorted(named_targets()))
def test_every_make_target_exists(target: str) -> None:
    assert target in MAKE_TARGETS, f"docs name `make {target}`; the Makefile has no such target"


@pytest.mark.parametrize("module", sorted(named_modules()))
def test_every_module_runs_with_help(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=REPO,
        env=subprocess_env(REPO / "src"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "usage:" in done.stdout, (module, done.stderr[-500:])


@pytest.mark.parametrize("key", sorted(named_params()))
def test_every_params_key_exists(key: str) -> None:
    node = PARAMS
    for part in key.rstrip(".").split("."):
        assert isinstance(node, dict) and part in node, f"docs name `{key}`; params.yaml has not"
        node = node[part]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_and_image_exists(page: Path) -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", TEXT[page]):
        if re.match(r"https?://", target):
            continue
        assert (page.parent / target).exists(), f"{page.name} links to {target}, which is missing"


def test_every_rendered_block_matches_the_committed_outputs() -> None:
    """`make docs` on this checkout would change nothing: no figure lags behind `reports/`."""
    from fmnist_shap.docs import stale_blocks

    assert stale_blocks(REPO) == [], "run `make docs` and commit what it rewrites"


def test_a_moved_number_makes_its_block_stale_and_make_docs_mends_it(tmp_path: Path) -> None:
    from fmnist_shap.docs import main, stale_blocks

    (tmp_path / "reports/eval").mkdir(parents=True)
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 3\n")
    metrics = {"accuracy": 0.9, "macro_f1": 0.89}
    (tmp_path / "reports/eval/metrics.json").write_text(json.dumps(metrics))
    page = tmp_path / "README.md"
    page.write_text("Results:\n<!-- rendered: headline -->\nold\n<!-- end rendered -->\nend\n")
    assert stale_blocks(tmp_path) == ["README.md: headline"]
    main(["--repo", str(tmp_path)])
    assert page.read_text() == (
        "Results:\n<!-- rendered: headline -->\n"
        "test accuracy **0.9000**, macro F1 0.8900 (3 epochs).\n<!-- end rendered -->\nend\n"
    )
    assert stale_blocks(tmp_path) == []
    (tmp_path / "reports/eval/metrics.json").write_text(json.dumps(metrics | {"accuracy": 0.91}))
    assert stale_blocks(tmp_path) == ["README.md: headline"]
    check = subprocess.run(
        [sys.executable, "-m", "fmnist_shap.docs", "--check", "--repo", str(tmp_path)],
        capture_output=True,
        text=True,
        env=subprocess_env(REPO / "src"),
    )
    assert check.returncode == 1
    assert check.stderr.strip() == (
        "docs: out of date with the outputs: README.md: headline; run `make docs`"
    )


def leaf_keys(section: dict, prefix: str) -> list[str]:
    keys = []
    for key, value in section.items():
        name = f"{prefix}.{key}"
        keys += leaf_keys(value, name) if isinstance(value, dict) else [name]
    return keys


def test_configuration_page_covers_every_params_key() -> None:
    page = TEXT[REPO / "docs" / "configuration.md"]
    keys = [k for section in SECTIONS for k in leaf_keys(PARAMS[section], section)]
    missing = [key for key in keys if f"`{key}`" not in page]
    assert not missing, f"docs/configuration.md does not describe {missing}"


def test_params_dataclasses_hold_no_defaults() -> None:
    """A default lives in params.yaml only (docs/configuration.md says so)."""
    import dataclasses

    from fmnist_shap.global_explain import GlobalParams
    from fmnist_shap.raw import PrepareParams
    from fmnist_shap.train import TrainParams
    from fmnist_shap.variants import ExplainParams

    for cls in (PrepareParams, TrainParams, ExplainParams, GlobalParams):
        defaults = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        ]
        assert not defaults, f"{cls.__name__} has defaults for {defaults}"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.M)}


def test_every_section_link_names_a_heading_that_exists() -> None:
    """A link to `page.md#section` (or `#section` on the same page) lands on a heading."""
    for page, text in TEXT.items():
        for target, anchor in re.findall(r"\]\(([\w./-]*\.md|)#([\w-]+)\)", text):
            linked = (page.parent / target).resolve() if target else page
            assert anchor in anchors(linked), f"{page.name}: no section #{anchor} in {linked.name}"


def test_sections_are_linked_not_quoted() -> None:
    """Cross-page references are links, not a heading's name in quotes that a reader must find."""
    headings = {h for page in PAGES for h in re.findall(r"^#+ (.+)$", TEXT[page], re.M)}
    for page, text in TEXT.items():
        quoted = [h for h in headings if len(h) > 6 and f'see "{h}"' in text]
        assert not quoted, f"{page.name} refers to {quoted} without a link"
