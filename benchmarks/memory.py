"""Peak memory of the explain and global stages, beside this machine's memory.

    python benchmarks/memory.py        # (or: make bench-memory; part of make bench) ~6 min

Each stage runs as DVC runs it (`python stages/<stage>.py …`) on the workspace's prepared data
and model, into a temporary folder; its process tree's memory (the stage, its pool or Dask
workers) is sampled every 0.1 s: resident sets summed (an upper bound: shared pages counted
once per process) and proportional set sizes summed (shared pages divided among them). Rows:

- explain and global at params.yaml's values;
- global with integrated_gradients only and a budget of 16 path intervals, on the first 10 test
  images of every class (100) and on all 10k: the difference is what memory grows by with the
  number of images (the maps of 10k images: 10k × 784 float32 = 31 MB; a chunk's work does
  not grow). A budget of 16 keeps the 10k run near two minutes; a chunk's memory at the real
  budget is the row above.

Nothing is asserted: the numbers are printed.
"""

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
INPUTS = ("data/prepared/test.npz", "data/prepared/train.npz", "data/prepared/classes.json")
MODEL = "models/model.npz"
MIB = 1 << 20
ALL_IMAGES = {"per_class": None}


def tree_memory(process: psutil.Process) -> tuple[int, int]:
    """The process tree's resident sets summed (shared pages counted once per process that
    maps them: an upper bound), and its proportional set sizes summed (shared pages divided
    among those processes; Linux, else the resident sets again)."""
    rss = pss = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            info = member.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss, pss


def peak_of(cmd: list[str]) -> tuple[int, int, float]:
    """Run `cmd` in the repository; its process tree's peak RSS and PSS in bytes (each its own
    peak), and its seconds."""
    start = time.monotonic()
    child = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    process = psutil.Process(child.pid)
    peaks = [0, 0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                now = tree_memory(process)
            except psutil.NoSuchProcess:
                return
            peaks[:] = [max(p, n) for p, n in zip(peaks, now, strict=True)]
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, err = child.communicate()
    done.set()
    sampler.join()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[1:3])} failed:\n{err.decode()[-2000:]}")
    return peaks[0], peaks[1], time.monotonic() - start


def params_file(folder: Path, changes: dict[str, dict]) -> Path:
    document = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in changes.items():
        for key, value in values.items():
            if isinstance(value, dict):
                document[section][key].update(value)
            else:
                document[section][key] = value
    path = folder / f"params-{len(list(folder.glob('params-*')))}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    missing = [p for p in (*INPUTS, MODEL) if not (REPO / p).is_file()]
    if missing:
        raise SystemExit(f"error: {missing[0]} is missing; run `make repro` first")
    memory = psutil.virtual_memory().total
    print(f"machine: {psutil.cpu_count()} cores, {memory / MIB / 1024:.1f} GiB of memory")
    ig_16 = {"explain": {"budget": {"integrated_gradients": 16}}}
    ig_only = {"variants": ["integrated_gradients"]}
    rows = [
        ("explain", "params.yaml", {}),
        ("global", "params.yaml", {}),
        ("global", "IG, budget 16, 100 images", ig_16 | {"global": ig_only}),
        ("global", "IG, budget 16, all 10k images", ig_16 | {"global": ig_only | ALL_IMAGES}),
    ]
    print(
        f"{'stage':8} {'settings':32} {'peak RSS':>10} {'peak PSS':>10} {'PSS of memory':>14} "
        f"{'seconds':>8}"
    )
    peaks = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for stage, label, changes in rows:
            params = params_file(folder, changes)
            out = folder / f"out-{len(peaks)}"
            cmd = [sys.executable, f"stages/{stage}.py", *INPUTS, MODEL, str(out)]
            rss, pss, seconds = peak_of([*cmd, "--params", str(params)])
            peaks[label] = (rss, pss)
            print(
                f"{stage:8} {label:32} {rss / MIB:>6.0f} MiB {pss / MIB:>6.0f} MiB "
                f"{pss / memory:>14.1%} {seconds:>8.1f}",
                flush=True,
            )
    small, large = peaks["IG, budget 16, 100 images"], peaks["IG, budget 16, all 10k images"]
    print(
        f"global, 100 → 10k images: peak grows by {(large[0] - small[0]) / MIB:.0f} MiB (RSS), "
        f"{(large[1] - small[1]) / MIB:.0f} MiB (PSS)"
    )


if __name__ == "__main__":
    main()
