"""Helpers for tests that start subprocesses and signal them."""

from __future__ import annotations

import signal


def default_sigint() -> None:
    """``preexec_fn``: SIGINT back to its default in the child.

    A shell that starts a job in the background (a CI script, ``nohup ... &``) leaves SIGINT ignored,
    children inherit that, and Python then never raises KeyboardInterrupt on Ctrl-C.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
