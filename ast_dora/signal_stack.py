"""Keep this thread's alternate signal stack across native calls that replace it.

OpenVINO's CPU plugin (2026.4) installs an alternate signal stack of its own (11.5 KB) on the thread that compiles
a model, and does not put the previous one back. Python runs every signal handler it installs (SIGINT, torch's
DataLoader SIGCHLD handler, pytest-timeout's SIGALRM) and faulthandler's on the alternate stack (SA_ONSTACK); once
the plugin's stack is gone, or too small for the CPU's register state (AVX-512 and AMX tiles make a signal frame
of about 11 KB), the kernel cannot deliver the next signal and kills the process with SIGSEGV (si_code SI_KERNEL)
before faulthandler can print a frame: its handler needs the same stack. That was the test suite's crash (a core
dump: the main thread in `subprocess.run`'s wait when the child's SIGCHLD came, torch's SIGCHLD handler set by an
earlier DataLoader test, the alternate stack the plugin's).

`preserved_signal_stack()` wraps each place the project compiles an OpenVINO model.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def current_signal_stack() -> tuple[int, int, int] | None:
    """(address, flags, size) of this thread's alternate signal stack; None where it cannot be read."""
    if _LIBC is None:
        return None
    stack = _StackT()
    if _LIBC.sigaltstack(None, ctypes.byref(stack)) != 0:
        return None
    return stack.ss_sp or 0, stack.ss_flags, stack.ss_size


@contextlib.contextmanager
def preserved_signal_stack():
    """Within the block a native call may replace this thread's alternate signal stack; it is put back after."""
    if _LIBC is None:
        yield
        return
    saved = _StackT()
    readable = _LIBC.sigaltstack(None, ctypes.byref(saved)) == 0
    try:
        yield
    finally:
        if readable:
            saved.ss_flags &= 2  # SS_DISABLE survives; SS_ONSTACK is a read-only state flag
            _LIBC.sigaltstack(ctypes.byref(saved), None)


__all__ = ["current_signal_stack", "preserved_signal_stack"]
