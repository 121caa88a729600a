"""`python -m fmnist_shap.report --base main`: a pull-request report of what a change did.

Writes `reports/pr-report.md` with the params diff, the metrics diff, the training curves of
base and head in one figure, and the confusion matrix and every SHAP image plot of base and head
side by side. Base images are read from the base revision with `git show`, so they really are
the base's (not the head's twice); head images are the workspace's.
"""

import argparse
import csv
import io
import subprocess
import sys
from pathlib import Path

import numpy as np

from fmnist_shap.artifacts import write_bytes, write_text
from fmnist_shap.errors import UserError, run_cli

CURVES = ("train_loss", "val_loss", "val_accuracy")
CURVE_DIR = "reports/train/plots/metrics"
CONFUSION = "reports/eval/confusion.csv"
SHAP_PLOTS = "reports/explain/plots"
FAITHFULNESS = "reports/faithfulness/bars.csv"


def _run(cmd: list[str], repo: Path) -> str:
    done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UserError(f"`{' '.join(cmd)}` failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


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
            rows = list(csv.DictReader(io.StringIO(data.decode()), delimiter="\t"))
            ax.plot(
                [int(r["step"]) for r in rows], [float(r[name]) for r in rows], style, label=label
            )
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.legend()
    return _png(figure)


def confusion_png(data: bytes, title: str) -> bytes:
    """A confusion matrix heat map from the `actual,predicted` rows of confusion.csv."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(io.StringIO(data.decode())))
    names = sorted({r["actual"] for r in rows} | {r["predicted"] for r in rows})
    index = {name: i for i, name in enumerate(names)}
    counts = np.zeros((len(names), len(names)), int)
    for r in rows:
        counts[index[r["actual"]], index[r["predicted"]]] += 1
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


def faithfulness_table(base_csv: bytes | None, head_csv: bytes | None) -> list[str]:
    """Deletion / insertion AUC per variant, base → head, and the change of insertion − deletion
    (positive: the explanation got more faithful)."""

    def rows(data: bytes | None) -> dict[str, tuple[float, float]]:
        if data is None:
            return {}
        reader = csv.DictReader(io.StringIO(data.decode()))
        return {r["variant"]: (float(r["deletion_auc"]), float(r["insertion_auc"])) for r in reader}

    base, head = rows(base_csv), rows(head_csv)
    lines = [
        "| variant | deletion AUC ↓ base → head | insertion AUC ↑ base → head | "
        "change of insertion − deletion |",
        "|---|---|---|---:|",
    ]
    for variant in list(head) + [v for v in base if v not in head]:
        b, h = base.get(variant), head.get(variant)
        cells = [
            f"{b[i]:.3f} → {h[i]:.3f}"
            if b and h
            else f"{(h or b)[i]:.3f} ({'head' if h else 'base'} only)"
            for i in (0, 1)
        ]
        change = f"{(h[1] - h[0]) - (b[1] - b[0]):+.3f}" if b and h else ""
        lines.append(f"| {variant} | {cells[0]} | {cells[1]} | {change} |")
    return lines


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


def build_report(repo: Path, base: str, report: Path) -> str:
    """Write the report (and its images beside it); return the markdown."""
    _run(["git", "rev-parse", "--verify", f"{base}^{{commit}}"], repo)
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

    lines += ["## Confusion matrix (test)", "", "| | base | head |", "|---|---|---|"]
    base_csv, head_csv = _git_show(repo, base, CONFUSION), _read(repo, None, CONFUSION)
    lines.append(
        _pair_row(
            images,
            report_dir,
            "confusion",
            confusion_png(base_csv, f"base ({base})") if base_csv else None,
            confusion_png(head_csv, "head") if head_csv else None,
        )
    )

    lines += ["", "## Explanation faithfulness (reports/faithfulness)", ""]
    lines += faithfulness_table(
        _git_show(repo, base, FAITHFULNESS), _read(repo, None, FAITHFULNESS)
    )

    lines += ["", "## SHAP explanations", "", "| plot | base | head |", "|---|---|---|"]
    for png in sorted((repo / SHAP_PLOTS).glob("*.png")):
        rel = png.relative_to(repo).as_posix()
        name = png.stem
        lines.append(
            _pair_row(images, report_dir, name, _git_show(repo, base, rel), png.read_bytes())
        )
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
