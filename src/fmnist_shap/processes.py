"""Worker processes that do not outlive the stage that started them.

A stage killed by SIGKILL (an out-of-memory kill, a cancelled CI job) runs no cleanup of its
own, so its pool's workers would live on with parent PID 1, holding their memory and a core.
Linux delivers a signal to a process whose parent dies when the process asks for it
(prctl PR_SET_PDEATHSIG); elsewhere the workers end when the parent exits normally only.
"""

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys

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


def kill_children() -> None:
    """SIGKILL every live child process of this one (a pool's workers on an interrupt: the
    pool's own shutdown would wait for their running tasks)."""
    for child in multiprocessing.active_children():
        child.kill()
    for child in multiprocessing.active_children():  # reaps them
        child.join(timeout=5)
