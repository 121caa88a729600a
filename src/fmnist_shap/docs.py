"""`make docs` (`python -m fmnist_shap.docs [--check]`): the figures README.md and docs/ quote
from committed outputs, rendered into marked blocks instead of copied by hand.

A block is the text between

    <!-- rendered: NAME -->
    <!-- end rendered -->

and NAME is one of RENDERERS, each a function of the repository's committed outputs
(`reports/`, `params.yaml`). `make docs` rewrites every block; `--check` (a fast test runs it)
exits 1 with one line naming the blocks that differ from what the outputs say now, so a `dvc
repro` that moves a number cannot leave the docs behind. Figures measured elsewhere (a GPU, other
CPUs) are not rendered: their pages say where and when, and name the script that measured them.
"""

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yaml

from fmnist_shap.artifacts import write_text
from fmnist_shap.errors import UserError, run_cli

BLOCK = re.compile(
    r"(?P<open><!-- rendered: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(?P<close><!-- end rendered -->)",
    re.S,
)
PAGES = ("README.md", "docs/*.md")
README_ROWS = 4  # the README's table: the first variants, then a pointer to the rest


def _json(repo: Path, path: str) -> dict:
    try:
        return json.loads((repo / path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: unreadable ({error}); run `dvc repro` (or `dvc pull`)") from None


def _summary(repo: Path) -> pd.DataFrame:
    """The ranked table of reports/faithfulness/summary.md, one row per variant."""
    path = repo / "reports/faithfulness/summary.md"
    try:
        lines = [
            row for row in path.read_text(encoding="utf-8").splitlines() if row.startswith("|")
        ]
    except OSError as error:
        raise UserError(f"{path}: unreadable ({error}); run `dvc repro`") from None
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in lines]
    return pd.DataFrame(cells[2:], columns=cells[0])


def _markdown(table: pd.DataFrame, align: str) -> str:
    sides = {"l": "left", "r": "right"}
    return table.to_markdown(
        index=False, colalign=tuple(sides[a] for a in align), disable_numparse=True
    )


def headline(repo: Path) -> str:
    """Test accuracy and macro F1 of the committed model, with its epochs."""
    metrics = _json(repo, "reports/eval/metrics.json")
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    return (
        f"test accuracy **{metrics['accuracy']:.4f}**, macro F1 {metrics['macro_f1']:.4f} "
        f"({params['train']['epochs']} epochs)."
    )


def _with_random_row(table: pd.DataFrame, summary: pd.DataFrame, deletion: str, insertion: str):
    """`table` and a last row: the random order's deletion and insertion AUC."""
    row = dict.fromkeys(table.columns, "") | {
        table.columns[1]: "*random order*",
        deletion: summary["random order's deletion AUC"].iloc[0],
        insertion: summary["random order's insertion AUC"].iloc[0],
    }
    return pd.concat([table, pd.DataFrame([row])])


def faithfulness_top(repo: Path) -> str:
    """The README's table: the first variants of the ranking and the random order."""
    summary = _summary(repo)
    table = pd.DataFrame(
        {
            "rank": summary["rank"],
            "variant": summary["variant"],
            "deletion AUC ↓": summary["deletion AUC ↓ [95% CI]"].str.split(" ").str[0],
            "insertion AUC ↑": summary["insertion AUC ↑ [95% CI]"].str.split(" ").str[0],
            "insertion − deletion [95% CI]": summary["insertion − deletion [95% CI]"],
            "randomization ρ": summary["randomization ρ"],
        }
    )
    shown = table.head(README_ROWS)
    rest = dict.fromkeys(table.columns, "") | {
        "rank": "…",
        "variant": f"{len(table) - len(shown)} more",
    }
    shown = pd.concat([shown, pd.DataFrame([rest])])
    return _markdown(
        _with_random_row(shown, summary, "deletion AUC ↓", "insertion AUC ↑"), "llrrrr"
    )


def faithfulness_table(repo: Path) -> str:
    """Every variant of reports/faithfulness/summary.md, and the random order."""
    summary = _summary(repo)
    columns = [
        "rank",
        "variant",
        "masker / baseline",
        "deletion AUC ↓ [95% CI]",
        "insertion AUC ↑ [95% CI]",
        "insertion − deletion [95% CI]",
        "randomization ρ",
        "additivity error",
    ]
    table = _with_random_row(summary[columns], summary, columns[3], columns[4])
    return _markdown(table, "lllrrrrr")


def export_parity(repo: Path) -> str:
    """Each exported file against the Flax model on the test images."""
    metrics = _json(repo, "reports/export/metrics.json")
    what = {
        "saved_model": (
            "`saved_model/`",
            "SavedModel of the Keras twin, signature `serving_default`: `pixels` uint8 "
            "[None, 28, 28] → `logits` float32 [None, 10]",
        ),
        "tflite": (
            "`model.tflite`",
            "the same signature converted for TensorFlow Lite (weights frozen in)",
        ),
        "jax_export": (
            "`model.jax_export`",
            "`jax.export` of the Flax model (StableHLO, symbolic batch size)",
        ),
    }
    rows = [
        {
            "file": name,
            "what": text,
            "max \\|logit − Flax\\|": f"{metrics[key]['max_logit_diff']:.1e}",
            "predicted class agrees": f"{metrics[key]['class_agreement']:.2%}",
            "size": f"{metrics[key]['size_bytes'] / 1e6:.2f} MB",
        }
        for key, (name, text) in what.items()
    ]
    table = _markdown(pd.DataFrame(rows), "llrrr")
    return (
        f"{table}\n\nOn {metrics['images']} test images (`reports/export/metrics.json`); the "
        f"Keras twin itself is within {metrics['twin_max_logit_diff']:.1e} of Flax."
    )


def explain_seconds(repo: Path) -> str:
    """Each explain variant's seconds in the committed run (reports/explain/timing.json)."""
    timing = _json(repo, "reports/explain/timing.json")
    rows = [
        {"variant": name, "seconds": f"{entry['seconds']:.1f}"}
        for name, entry in sorted(timing.items(), key=lambda item: -item[1]["seconds"])
        if isinstance(entry, dict) and "seconds" in entry
    ]
    return _markdown(pd.DataFrame(rows), "lr")


RENDERERS: dict[str, Callable[[Path], str]] = {
    "headline": headline,
    "faithfulness-top": faithfulness_top,
    "faithfulness-table": faithfulness_table,
    "export-parity": export_parity,
    "explain-seconds": explain_seconds,
}


def render(text: str, repo: Path, page: str) -> str:
    """`text` with every block rendered anew."""

    def fill(match: re.Match) -> str:
        name = match["name"]
        if name not in RENDERERS:
            raise UserError(
                f"{page}: unknown rendered block {name!r}; known: {', '.join(RENDERERS)}"
            )
        return f"{match['open']}{RENDERERS[name](repo).rstrip()}\n{match['close']}"

    return BLOCK.sub(fill, text)


def pages(repo: Path) -> list[Path]:
    return sorted({p for pattern in PAGES for p in repo.glob(pattern)})


def stale_blocks(repo: Path) -> list[str]:
    """'page: block' for every block whose text differs from what the outputs say now."""
    stale = []
    for page in pages(repo):
        text = page.read_text(encoding="utf-8")
        rendered = render(text, repo, page.name)
        now = {m["name"]: m["body"] for m in BLOCK.finditer(text)}
        for match in BLOCK.finditer(rendered):
            if now.get(match["name"]) != match["body"]:
                stale.append(f"{page.relative_to(repo)}: {match['name']}")
    return stale


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a block is out of date")
    parser.add_argument("--repo", default=".")
    args = parser.parse_args(argv)
    repo = Path(args.repo).resolve()
    if args.check:
        stale = stale_blocks(repo)
        if stale:
            print(
                f"docs: out of date with the outputs: {'; '.join(stale)}; run `make docs`",
                file=sys.stderr,
            )
            raise SystemExit(1)
        print("docs: every rendered block matches the outputs", file=sys.stderr)
        return
    for page in pages(repo):
        text = page.read_text(encoding="utf-8")
        rendered = render(text, repo, page.name)
        if rendered != text:
            write_text(page, rendered)
            print(f"docs: {page.relative_to(repo)} rewritten", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
