"""`python -m fmnist_shap.report --base main`: a pull-request report of what a change did.

Writes `reports/pr-report.md` with the params diff, the metrics diff, the training curves of
base and head in one figure, and the confusion matrix and every SHAP image plot of base and head
side by side. Base images are read from the base revision with `git show`, so they really are
the base's (not the head's twice); head images are the workspace's.
"""

import argparse
import io
import subprocess
import sys
from pathlib import Path

import pandas as pd
from sklearn.metrics import confusion_matrix

from fmnist_shap.artifacts import write_bytes, write_text
from fmnist_shap.errors import UserError, run_cli

CURVES = ("train_loss", "val_loss", "val_accuracy")
CURVE_DIR = "reports/train/plots/metrics"
CONFUSION = "reports/eval/plots/sklearn/confusion.json"
SHAP_PLOTS = "reports/explain/plots"
FAITHFULNESS = "reports/faithfulness/bars.csv"


def _run(cmd: list[str], repo: Path) -> str:
    done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UserError(f"`{' '.join(cmd)}` failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def check_revision(repo: Path, base: str) -> None:
    """Refuse a base that is not a commit of this repository, before anything is written."""
    done = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"],
        cwd=repo,
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise UserError(
            f"--base {base}: no such commit in {repo}; name a branch, tag or commit, "
            "e.g. --base main (for a remote branch, `git fetch` first)"
        )


def _git_show(repo: Path, rev: str, path: str) -> bytes | None:
    """A file's bytes at `rev`, or None where it did not exist."""
    done = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True, check=False
    )
    return done.stdout if done.returncode == 0 else None


def _read(repo: Path, rev: str | None, path: str) -> bytes | None:
    """`rev` None means the workspace."""
    if rev is None:
        file = repo / path
        return file.read_bytes() if file.is_file() else None
    return _git_show(repo, rev, path)


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=70, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def curves_png(repo: Path, base: str) -> bytes:
    """Base (dashed) and head (solid) per-epoch curves in one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3))
    for ax, name in zip(axes, CURVES, strict=True):
        for rev, style, label in ((base, "--", f"base ({base})"), (None, "-", "head")):
            data = _read(repo, rev, f"{CURVE_DIR}/{name}.tsv")
            if data is None:
                continue
            table = pd.read_csv(io.BytesIO(data), sep="\t")
            ax.plot(table["step"], table[name], style, label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.legend()
    return _png(figure)


def confusion_png(data: bytes, title: str) -> bytes:
    """A confusion matrix heat map from the actual/predicted entries of confusion.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = pd.read_json(io.BytesIO(data))
    names = sorted(set(entries["actual"]) | set(entries["predicted"]))
    counts = confusion_matrix(entries["actual"], entries["predicted"], labels=names)
    figure, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(counts, cmap="Blues")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, counts[i, j], ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    return _png(figure)


def faithfulness_table(base_csv: bytes | None, head_csv: bytes | None) -> str:
    """Deletion / insertion AUC per variant, base → head, and the change of insertion − deletion
    (positive: the explanation got more faithful), as a markdown table."""

    def read(data: bytes | None) -> pd.DataFrame:
        columns = ["deletion_auc", "insertion_auc"]
        if data is None:
            return pd.DataFrame(columns=columns, dtype=float)
        return pd.read_csv(io.BytesIO(data), index_col="variant")[columns]

    base, head = read(base_csv), read(head_csv)
    both = head.merge(
        base, how="outer", left_index=True, right_index=True, suffixes=("_head", "_base")
    )
    both = both.reindex(list(head.index) + [v for v in base.index if v not in head.index])

    def cell(row: pd.Series, metric: str) -> str:
        b, h = row[f"{metric}_base"], row[f"{metric}_head"]
        if pd.notna(b) and pd.notna(h):
            return f"{b:.3f} → {h:.3f}"
        return f"{h:.3f} (head only)" if pd.notna(h) else f"{b:.3f} (base only)"

    change = (both["insertion_auc_head"] - both["deletion_auc_head"]) - (
        both["insertion_auc_base"] - both["deletion_auc_base"]
    )
    table = pd.DataFrame(
        {
            "variant": both.index,
            "deletion AUC ↓ base → head": [cell(r, "deletion_auc") for _, r in both.iterrows()],
            "insertion AUC ↑ base → head": [cell(r, "insertion_auc") for _, r in both.iterrows()],
            "change of insertion − deletion": [f"{c:+.3f}" if pd.notna(c) else "" for c in change],
        }
    )
    return table.to_markdown(
        index=False, colalign=("left", "left", "left", "right"), disable_numparse=True
    )


def _pair_row(
    out_dir: Path, report_dir: Path, name: str, base_png: bytes | None, head_png: bytes | None
) -> str:
    cells = []
    for side, png in (("base", base_png), ("head", head_png)):
        if png is None:
            cells.append("(none)")
            continue
        path = out_dir / side / f"{name}.png"
        write_bytes(path, png)
        cells.append(f"![{side} {name}]({path.relative_to(report_dir).as_posix()})")
    changed = "" if base_png == head_png else " (changed)"
    return f"| {name}{changed} | {cells[0]} | {cells[1]} |"


def _confusion_section(repo: Path, base: str, images: Path, report_dir: Path) -> list[str]:
    base_json, head_json = _git_show(repo, base, CONFUSION), _read(repo, None, CONFUSION)
    row = _pair_row(
        images,
        report_dir,
        "confusion",
        confusion_png(base_json, f"base ({base})") if base_json else None,
        confusion_png(head_json, "head") if head_json else None,
    )
    return ["## Confusion matrix (test)", "", "| | base | head |", "|---|---|---|", row]


def _shap_section(repo: Path, base: str, images: Path, report_dir: Path) -> list[str]:
    lines = ["", "## SHAP explanations", "", "| plot | base | head |", "|---|---|---|"]
    for png in sorted((repo / SHAP_PLOTS).glob("*.png")):
        base_png = _git_show(repo, base, png.relative_to(repo).as_posix())
        lines.append(_pair_row(images, report_dir, png.stem, base_png, png.read_bytes()))
    return lines


def build_report(repo: Path, base: str, report: Path) -> str:
    """Write the report (and its images beside it); return the markdown."""
    check_revision(repo, base)
    params = _run(["dvc", "params", "diff", base, "--md"], repo).strip()
    metrics = _run(["dvc", "metrics", "diff", base, "--md", "--precision", "4"], repo).strip()
    report_dir = report.parent
    images = report_dir / "pr"

    lines = [
        f"# Pipeline report: workspace vs `{base}`",
        "",
        "## Params",
        params or "No param changes.",
        "",
        "## Metrics",
        metrics or "No metric changes.",
        "",
        "## Training curves (dashed: base, solid: head)",
        "",
    ]
    write_bytes(images / "curves.png", curves_png(repo, base))
    lines += [
        f"![training curves]({(images / 'curves.png').relative_to(report_dir).as_posix()})",
        "",
    ]

    lines += _confusion_section(repo, base, images, report_dir)
    lines += ["", "## Explanation faithfulness (reports/faithfulness)", ""]
    lines.append(
        faithfulness_table(_git_show(repo, base, FAITHFULNESS), _read(repo, None, FAITHFULNESS))
    )
    lines += _shap_section(repo, base, images, report_dir)
    markdown = "\n".join(lines) + "\n"
    write_text(report, markdown)
    return markdown


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", default="main", help="git revision to compare against")
    parser.add_argument("--out", default="reports/pr-report.md")
    parser.add_argument("--repo", default=".")
    args = parser.parse_args(argv)
    repo = Path(args.repo).resolve()
    build_report(repo, args.base, repo / args.out)
    print(f"report: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
