"""Worker processes that do not outlive the stage that started them, each on a core of its own.

A stage killed by SIGKILL (an out-of-memory kill, a cancelled CI job) runs no cleanup of its
own, so its pool's workers would live on with parent PID 1, holding their memory and a core.
Linux delivers a signal to a process whose parent dies when the process asks for it
(prctl PR_SET_PDEATHSIG); elsewhere the workers end when the parent exits normally only.
"""

import ctypes
import ctypes.util
import fcntl
import multiprocessing
import os
import signal
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent (`parent_pid`) dies; exit now if it
    already has. Call it first thing in a worker process; a no-op off Linux."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


@contextmanager
def children_killed_on_error() -> Iterator[None]:
    """On any exception in the block (Ctrl-C included), SIGKILL this process's children before
    it propagates: a pool's or a cluster's graceful shutdown would wait for them."""
    try:
        yield
    except BaseException:
        kill_children()
        raise


def kill_children() -> None:
    """SIGKILL every live child process of this one (a pool's workers on an interrupt: the
    pool's own shutdown would wait for their running tasks)."""
    for child in multiprocessing.active_children():
        child.kill()
    for child in multiprocessing.active_children():  # reaps them
        child.join(timeout=5)


# One lock file per core, shared by every pipeline this user runs on this machine with the same
# temporary folder.
CORE_LOCKS_ENV = "FMNIST_SHAP_CORE_LOCKS"  # another folder: workers that claim cores apart


def core_locks() -> Path:
    default = Path(tempfile.gettempdir()) / f"fmnist-shap-cores-{os.getuid()}"
    return Path(os.environ.get(CORE_LOCKS_ENV) or default)


_held: list[int] = []  # the claimed core's lock file, open: the claim lasts as long as the process


def claim_a_core() -> int | None:
    """Pin this process, and every thread it starts, to a core that no other worker of this
    user (same temporary folder) has claimed (an exclusive lock on that core's lock file, which the kernel releases
    when the process ends, however it ends); returns the core, or None when every core this
    process may use is claimed or the OS has no CPU affinity (macOS): it then runs unpinned.

    Two experiments run side by side (`dvc queue start -j 2`) thus never pin their workers to
    the same core; pinning changes no result (XLA's do not depend on its thread count)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    folder = core_locks()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    found = folder.lstat()
    if stat.S_ISLNK(found.st_mode) or found.st_uid != os.getuid():
        return None  # not this user's own folder: claim nothing through it
    for cpu in sorted(os.sched_getaffinity(0)):
        fd = os.open(folder / f"{cpu}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _held.append(fd)
        os.sched_setaffinity(0, {cpu})
        return cpu
    return None
