"""`python -m fmnist_shap.review.report --base main`: a pull-request report of what a change did.

Writes `reports/pr-report.md`, read top-down: a verdict (accuracy and macro F1 with paired
bootstrap intervals and McNemar's test, the images the change broke and fixed, per-class recall
and faithfulness changes beyond noise, how far each variant's explanations of the fixed review
set drifted); then the review set's SHAP plots of base and head side by side (the same images in
the same rows, the true class in the first column); then the details in collapsible blocks.
Base files are read from the base revision with `git show`, head files from the workspace.
"""

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from fmnist_shap.artifacts import write_bytes, write_text
from fmnist_shap.errors import UserError, run_cli
from fmnist_shap.remote import DVC, PullRecord
from fmnist_shap.review.changes import (
    Drift,
    Side,
    drift,
    faithfulness_change,
    predictions_change,
)
from fmnist_shap.review.provenance import provenance
from fmnist_shap.review.significance import Change, Comparison, Predictions

CURVES = ("train_loss", "val_loss", "val_accuracy")
CURVE_DIR = "reports/train/plots/metrics"
SHAP_PLOTS = "reports/explain/plots"
FAITHFULNESS = "reports/faithfulness/bars.csv"
EXPLAIN_METRICS = "reports/explain/metrics.json"
MAX_FLIPS_SHOWN = 8


def _run(cmd: list[str], repo: Path) -> str:
    done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"`{' '.join(cmd[1:])}` failed: {last}")
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


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=70, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def curves_png(base: Side, head: Side) -> bytes:
    """Base (dashed) and head (solid) per-epoch curves in one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3))
    for ax, name in zip(axes, CURVES, strict=True):
        for side, style, label in ((base, "--", f"base ({base.name})"), (head, "-", "head")):
            data = side.read(f"{CURVE_DIR}/{name}.tsv")
            if data is None:
                continue
            table = pd.read_csv(io.BytesIO(data), sep="\t")
            ax.plot(table["step"], table[name], style, label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.legend()
    return _png(figure)


def confusion_png(predictions: Predictions, title: str) -> bytes:
    """A confusion matrix heat map of one side's per-image predictions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = predictions.class_names
    counts = confusion_matrix(
        predictions.actual_N, predictions.predicted_N, labels=list(range(len(names)))
    )
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


def faithfulness_table(
    base_csv: bytes | None, head_csv: bytes | None, changes: dict[str, Change | None] | None = None
) -> str:
    """Deletion / insertion AUC per variant, base → head, and the change of insertion − deletion
    (positive: the explanation got more faithful), with its paired 95% interval where `changes`
    has one (`review.faithfulness_change`), as a markdown table."""

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

    def interval(variant: str) -> str:
        paired = (changes or {}).get(variant)
        if paired is None:
            return ""
        return f"[{paired.low:+.3f}, {paired.high:+.3f}]{' beyond noise' * paired.beyond_noise}"

    table = pd.DataFrame(
        {
            "variant": both.index,
            "deletion AUC ↓ base → head": [cell(r, "deletion_auc") for _, r in both.iterrows()],
            "insertion AUC ↑ base → head": [cell(r, "insertion_auc") for _, r in both.iterrows()],
            "change of insertion − deletion": [f"{c:+.3f}" if pd.notna(c) else "" for c in change],
            "95% CI (paired)": [interval(v) for v in both.index],
        }
    )
    return table.to_markdown(
        index=False, colalign=("left", "left", "left", "right", "left"), disable_numparse=True
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


def param_change(key: str, old: object, new: object) -> str:
    """'train.seed 0 → 1'; a key only one side has is said so."""
    if old is None:
        return f"{key} = {new} (new)"
    if new is None:
        return f"{key} removed (was {old})"
    return f"{key} {old} → {new}"


def verdict(
    comparison: Comparison | None,
    faithfulness: dict[str, Change | None],
    drifts: dict[str, Drift | None],
    params_changed: list[str],
    provenance_lines: list[str] | None = None,
) -> list[str]:
    """At most ~15 lines: what changed, and whether it is beyond noise; `provenance_lines` say
    how each stage got its outputs (`provenance.provenance`) and what the remote gave."""
    lines = ["## Verdict", ""]
    lines.append(f"- **Params changed**: {', '.join(params_changed) or 'none'}")
    lines += provenance_lines or []
    if comparison is None:
        lines.append(
            "- **Predictions**: not compared — one side has no per-image test predictions "
            "(a revision from before they were committed) or predicted another test subset"
        )
    else:
        noise = "beyond noise" if comparison.accuracy.beyond_noise else "within noise"
        lines += [
            f"- **Accuracy** {comparison.accuracy.text()} — {noise}; McNemar exact "
            f"p = {comparison.mcnemar_p:.3g}",
            f"- **Macro F1** {comparison.macro_f1.text()}",
            f"- **Flips**: {len(comparison.right_to_wrong)} right → wrong, "
            f"{len(comparison.wrong_to_right)} wrong → right "
            f"(of {comparison.images} test images)",
        ]
        real = comparison.recall[comparison.recall["beyond_noise"]]
        changes = [
            f"{r['class']} {r['change']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]"
            for _, r in real.iterrows()
        ]
        lines.append(f"- **Per-class recall beyond noise**: {'; '.join(changes) or 'none'}")
    lines.append(_faithfulness_verdict(faithfulness))
    lines.append(_drift_verdict(drifts))
    return [*lines, ""]


def _faithfulness_verdict(faithfulness: dict[str, Change | None]) -> str:
    compared = {v: c for v, c in faithfulness.items() if c is not None}
    if not compared:
        return "- **Faithfulness**: not compared — a side has no per-image scores (older revision)"
    real = [
        f"{v} {c.change:+.3f} [{c.low:+.3f}, {c.high:+.3f}]"
        for v, c in compared.items()
        if c.beyond_noise
    ]
    return (
        "- **Faithfulness changes beyond noise** (insertion − deletion AUC, paired over the "
        f"images both explained): {'; '.join(real) or 'none'} (of {len(compared)} variants)"
    )


def _drift_verdict(drifts: dict[str, Drift | None]) -> str:
    compared = {v: d for v, d in drifts.items() if d is not None}
    if not compared:
        return (
            "- **Explanation drift**: not compared — a side has no review set (a revision from "
            "before it existed) or another one (explain.review_per_class changed)"
        )
    cells = [f"{v} {d.spearman_N.mean():.2f}" for v, d in compared.items()]
    return (
        "- **Explanation drift** (review set, mean Spearman ρ of the true-class maps; 1.00 = "
        f"unchanged): {', '.join(cells)}"
    )


def _details(summary: str, body: list[str]) -> list[str]:
    return ["<details>", f"<summary>{summary}</summary>", "", *body, "", "</details>", ""]


def _drift_table(drifts: dict[str, Drift | None]) -> list[str]:
    rows = [
        {"variant": v, "base → head": d.text() if d else "not compared"} for v, d in drifts.items()
    ]
    return [pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)]


def _recall_table(comparison: Comparison) -> list[str]:
    table = comparison.recall.copy()
    for column in ("base", "head", "change", "low", "high"):
        table[column] = table[column].map(lambda value: f"{value:+.3f}".lstrip("+"))
    table["beyond_noise"] = table["beyond_noise"].map({True: "yes", False: ""})
    return [table.to_markdown(index=False, disable_numparse=True)]


def _flips_section(repo: Path, comparison: Comparison, images: Path, report_dir: Path) -> list[str]:
    """Up to MAX_FLIPS_SHOWN right → wrong test images, explained with the head model by
    Integrated Gradients (fast): the true class beside the head's wrong prediction."""
    shown = comparison.right_to_wrong[:MAX_FLIPS_SHOWN]
    if len(shown) == 0:
        return ["No test image went from right to wrong."]
    try:
        png = flips_png(repo, shown)
    except UserError as error:
        return [f"Indices {shown.tolist()}; not explained: {error}"]
    path = images / "head" / "right-to-wrong.png"
    write_bytes(path, png)
    return [
        f"Test images {', '.join(map(str, shown))} (first {len(shown)} of "
        f"{len(comparison.right_to_wrong)}); first column: the true class, second: the head's "
        "prediction.",
        "",
        f"![right to wrong]({path.relative_to(report_dir).as_posix()})",
    ]


def flips_png(repo: Path, test_index_N: np.ndarray) -> bytes:
    """Integrated Gradients of the head model for the true and the predicted class."""
    from fmnist_shap.data import load_classes, load_split
    from fmnist_shap.explain.base import Context
    from fmnist_shap.explain.plots import image_plot_png
    from fmnist_shap.explain.registry import build
    from fmnist_shap.explain.selection import SelectedImages
    from fmnist_shap.model import load_model, make_predict_fn
    from fmnist_shap.params import load_params
    from fmnist_shap.variants import ExplainParams

    params = load_params(repo / "params.yaml", "explain", ExplainParams)
    test = load_split(repo / "data/prepared/test.npz")
    model = load_model(repo / "models/model.npz")
    images, labels = test.images_NHW[test_index_N], test.labels_N[test_index_N]
    context = Context(model, make_predict_fn(model, params.batch_size), params)
    logits = context.predict(images)
    classes = np.stack([labels, logits.argmax(-1)], axis=1)
    method = build("integrated_gradients")
    attributions = method.attribute(context, images, classes, test_index_N)
    selected = SelectedImages(test_index_N, np.full(len(images), "flip"), labels, logits)
    names = load_classes(repo / "data/prepared/classes.json")
    title = "head · integrated_gradients · right → wrong"
    rows = np.arange(len(images))
    return image_plot_png(attributions, selected, images, names, rows, title, method.scale_label)


def _plots_rows(
    base: Side, head: Side, names: list[str], images: Path, report_dir: Path
) -> list[str]:
    lines = ["| plot | base | head |", "|---|---|---|"]
    for name in names:
        path = f"{SHAP_PLOTS}/{name}.png"
        lines.append(_pair_row(images, report_dir, name, base.read(path), head.read(path)))
    return lines


def build_report(repo: Path, base_rev: str, report: Path) -> str:
    """Write the report (and its images beside it); return the markdown."""
    check_revision(repo, base_rev)
    base, head = Side(repo, base_rev), Side(repo, None)
    params = _run([*DVC, "params", "diff", base_rev, "--md"], repo).strip()
    metrics = _run([*DVC, "metrics", "diff", base_rev, "--md", "--precision", "4"], repo).strip()
    report_dir, images = report.parent, report.parent / "pr"
    variants = sorted(json.loads(head.read(EXPLAIN_METRICS) or b"{}"))
    comparison = predictions_change(base, head)
    faithfulness = {v: faithfulness_change(base, head, v) for v in variants}
    drifts = {v: drift(base, head, v) for v in variants}
    plots = sorted(p.stem for p in (repo / SHAP_PLOTS).glob("*.png"))

    lines = [f"# Pipeline report: workspace vs `{base_rev}`", ""]
    lines += verdict(
        comparison,
        faithfulness,
        drifts,
        params_changed(repo, base_rev),
        provenance_lines(repo, base_rev),
    )
    lines += ["## Review set: the same images, base and head", ""]
    review = [p for p in plots if p.endswith("-review")]
    lines += _plots_rows(base, head, review, images, report_dir) if review else ["(none)"]
    lines.append("")
    lines += _details("Explanation drift per variant (review set)", _drift_table(drifts))
    if comparison is not None:
        lines += _details("Per-class recall, base → head (95% CI)", _recall_table(comparison))
        lines += _details(
            "Right → wrong images, explained with the head model",
            _flips_section(repo, comparison, images, report_dir),
        )
    faithfulness_rows = faithfulness_table(
        base.read(FAITHFULNESS), head.read(FAITHFULNESS), faithfulness
    )
    lines += _details("Faithfulness per variant (reports/faithfulness)", [faithfulness_rows])
    lines += _details("Params diff", [params or "No param changes."])
    lines += _details("Metrics diff (dvc metrics diff)", [metrics or "No metric changes."])
    write_bytes(images / "curves.png", curves_png(base, head))
    lines += _details("Training curves (dashed: base, solid: head)", ["![curves](pr/curves.png)"])
    lines += _details("Confusion matrices", _confusion_rows(base, head, images, report_dir))
    tutorial = [p for p in plots if not p.endswith("-review")]
    lines += _details(
        "The tutorial's plots: first correct and first wrong predictions (other images when the "
        "model changed)",
        _plots_rows(base, head, tutorial, images, report_dir),
    )
    markdown = "\n".join(lines) + "\n"
    write_text(report, markdown)
    return markdown


def params_changed(repo: Path, base_rev: str) -> list[str]:
    """'train.lr 0.002 → 0.004' for every param that differs from `base_rev`."""
    changed = json.loads(_run([*DVC, "params", "diff", base_rev, "--json"], repo) or "{}")
    return [
        param_change(key, v["old"], v["new"])
        for file in changed.values()
        for key, v in sorted(file.items())
    ]


def provenance_lines(repo: Path, base_rev: str) -> list[str]:
    """The verdict's lines on how every stage got its outputs, and what the remote gave."""
    return [provenance(repo, base_rev), f"- **Remote**: {PullRecord.read(repo).text()}."]


def _confusion_rows(base: Side, head: Side, images: Path, report_dir: Path) -> list[str]:
    pngs = [
        confusion_png(p, title) if (p := side.predictions()) else None
        for side, title in ((base, f"base ({base.name})"), (head, "head"))
    ]
    row = _pair_row(images, report_dir, "confusion", *pngs)
    return ["| | base | head |", "|---|---|---|", row]


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
