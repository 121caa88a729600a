"""Atomic, byte-stable writers for everything a stage outputs (no pickle anywhere)."""

import glob
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fmnist_shap.errors import DISK_FULL

if TYPE_CHECKING:
    import pandas as pd  # only tables call for it: a stage that writes none does not import it


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# A fixed timestamp for zip members, so that the same arrays give the same file bytes.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _temporaries(target: Path) -> list[Path]:
    """The temporaries of `target` beside it: `.NAME.XXXXXXXX.tmp` (tempfile's 8 characters),
    left only by a writer killed mid-write."""
    pattern = f".{glob.escape(target.name)}.{'?' * 8}.tmp"
    return sorted(target.parent.glob(pattern))


def _sweep_leftovers(target: Path) -> None:
    """Remove what a killed writer of `target` left beside it: a SIGKILL runs no cleanup, so
    the next write of the same output does it. One writer per output is assumed (a DVC stage;
    experiments run in workspaces of their own)."""
    for leftover in _temporaries(target):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


@contextmanager
def _naming(target: Path) -> Iterator[None]:
    """A write that fails for want of space names the output it was writing, not its temporary
    (a write to an open file raises ENOSPC without any file name)."""
    try:
        yield
    except OSError as error:
        if error.errno in DISK_FULL:
            raise OSError(error.errno, os.strerror(error.errno), str(target)) from error
        raise


def _prefix(target: Path) -> str:
    return f".{target.name}."


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_leftovers(target)
    with _naming(target):
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=_prefix(target), suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _naming(target):
            yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; outputs are not
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it replaces `path` only if the block succeeds.
    The old folder is renamed aside first, so a kill leaves either folder whole, never one
    half deleted (the aside copy is a temporary the next write removes)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_leftovers(target)
    with _naming(target):
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=_prefix(target), suffix=".tmp"))
    try:
        with _naming(target):
            yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if target.exists():
            aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=_prefix(target), suffix=".tmp"))
            os.replace(target, aside)  # onto the empty folder mkdtemp made
            os.replace(tmp, target)
            shutil.rmtree(aside)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: object) -> None:
    """Write JSON atomically, with sorted keys so reruns give identical bytes."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def csv_bytes(table: "pd.DataFrame", float_format: str | None = None) -> bytes:
    """A table as CSV: a header row, no index, '\\n' line ends, floats as `float_format`."""
    text = table.to_csv(index=False, float_format=float_format, lineterminator="\n")
    return text.encode("utf-8")


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Serialise arrays as an uncompressed .npz whose bytes depend only on the arrays.

    `np.savez` stamps each zip member with the current time; this writes the same format
    (readable by `np.load(..., allow_pickle=False)`) with a fixed timestamp.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            array = np.asarray(arrays[name])
            if array.dtype == object:
                raise TypeError(f"{name}: object arrays would need pickle")
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write arrays to a byte-stable .npz atomically."""
    write_bytes(path, npz_bytes(arrays))


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every array of an .npz written by `save_npz`, refusing pickled content."""
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}
