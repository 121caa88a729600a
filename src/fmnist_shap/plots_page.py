"""`make plots` / `make plots-diff`: DVC's plots page that works offline.

`dvc plots show` writes an HTML page that loads vega, vega-lite and vega-embed from a CDN: with
no internet every vega plot (training curves, confusion matrix, deletion/insertion curves, AUC
bars) stays blank. This writes the same page from an HTML template (`--html-template`) with the
three libraries inlined from `vendor/vega/` (the versions DVC's page asks for, from the npm
registry, each checked against its SHA-256 first):

    python -m fmnist_shap.plots_page show [-o dvc_plots]
    python -m fmnist_shap.plots_page diff REV [REV …] [-o dvc_plots]

Then open `dvc_plots/index.html` in a browser (a file:// URL is fine).
"""

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

from fmnist_shap.errors import UserError, run_cli
from fmnist_shap.remote import DVC

VENDOR = Path(__file__).resolve().parents[2] / "vendor" / "vega"
# npm packages vega@5.20.2, vega-lite@5.2.0, vega-embed@6.18.2 (dvc-render's CDN versions):
# their build/*.min.js, in load order.
LIBRARIES = {
    "vega.min.js": "4794d0169cb1f3ebad8117fe98ba5bd652dd725905ec0384e832391dbccb03be",
    "vega-lite.min.js": "d73157451b3978015ab31dacd55ff90d986ab8663fc0abed50f97b3cd90002cb",
    "vega-embed.min.js": "1ba9826431ddc9805e815ad92acc811c819f2bfd32bda2a128b8c4b5070fab5e",
}
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC plots (offline)</title>
    <!-- vega, vega-lite, vega-embed inlined: the page needs no network. -->
    INLINE_SCRIPTS
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>"""


def offline_template(vendor: Path = VENDOR) -> str:
    """DVC's page template with the three libraries inlined, each checked first."""
    scripts = []
    for name, digest in LIBRARIES.items():
        path = vendor / name
        if not path.is_file():
            raise UserError(f"{path}: missing; restore it with `git checkout -- {path.parent}`")
        code = path.read_bytes()
        if hashlib.sha256(code).hexdigest() != digest:
            raise UserError(
                f"{path}: SHA-256 differs from the pinned one; restore it with "
                f"`git checkout -- {path}`"
            )
        text = code.decode("utf-8").replace("</script", "<\\/script")
        scripts.append(f"<script>{text}</script>")
    return PAGE.replace("INLINE_SCRIPTS", "\n".join(scripts))


def write_page(command: list[str], out: Path, repo: Path) -> Path:
    """Run `dvc plots show|diff …` with the offline template; returns the page's path."""
    template_text = offline_template()
    with tempfile.TemporaryDirectory() as folder:
        template = Path(folder) / "offline.html"
        template.write_text(template_text, encoding="utf-8")
        done = subprocess.run(
            [*DVC, "plots", *command, "--html-template", str(template), "-o", str(out)],
            cwd=repo,
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"dvc plots {' '.join(command)}: {last}")
    return out / "index.html"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("show", "diff"))
    parser.add_argument("revisions", nargs="*", help="diff: the revisions to compare")
    parser.add_argument("-o", "--out", default="dvc_plots")
    parser.add_argument("--repo", default=".")
    args = parser.parse_args(argv)
    if args.action == "show" and args.revisions:
        parser.error("show takes no revisions (use diff)")
    repo = Path(args.repo).resolve()
    page = write_page([args.action, *args.revisions], Path(args.out), repo)
    print(f"plots: {page} (works offline; open it in a browser)", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
