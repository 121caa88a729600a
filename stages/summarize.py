"""DVC stage `summarize`: rank every explain variant by faithfulness; table, bars and curves."""

import argparse
from pathlib import Path

from fmnist_shap.artifacts import csv_bytes, write_bytes, write_text
from fmnist_shap.errors import run_cli
from fmnist_shap.params import load_params
from fmnist_shap.summary import bars_table, curves_table, load_results, ranked, summary_markdown
from fmnist_shap.variants import ExplainParams


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("explain_dir", help="reports/explain: metrics.json, variants/")
    parser.add_argument("out_dir", help="summary.md, bars.csv, curves.csv")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)

    params = load_params(args.params, "explain", ExplainParams)
    results = load_results(args.explain_dir, params)

    out = Path(args.out_dir)
    write_text(out / "summary.md", summary_markdown(results, params))
    write_bytes(out / "bars.csv", csv_bytes(bars_table(results), "%.4f"))
    write_bytes(out / "curves.csv", csv_bytes(curves_table(results), "%.6f"))
    best = ranked(results)[0]
    print(f"summarize: {len(results)} variants; most faithful {best.name} ({best.score:.3f})")


if __name__ == "__main__":
    run_cli(main, stage="summarize")
