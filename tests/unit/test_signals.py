"""The CLI's signal handlers: scoped to the call, and never obeyed by a forked copy.

A CI run once lost half its tests this way: an in-process ``main()`` left its
SIGTERM handler installed in the test session; pyroute2 later forked a helper
child and, when that child was slow (a loaded host), sent it SIGTERM. The child
raised :class:`Terminated` instead of dying, went on as a second copy of the
test session, tore down the session's shared machines and namespaces and
removed its temporary directory.
"""

from __future__ import annotations

import os
import signal
import time

from vmanager import _signals
from vmanager.cli.main import main


def test_main_gives_back_the_callers_handlers(capsys: object) -> None:
    before = {s: signal.getsignal(s) for s in _signals.SIGNALS}
    assert main(["--json", "list"]) == 0
    assert {s: signal.getsignal(s) for s in _signals.SIGNALS} == before


def test_a_forked_child_dies_of_the_signal_instead_of_raising() -> None:
    with _signals.installed() as active:
        assert active and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        pid = os.fork()
        if pid == 0:  # the child: what a library's helper child would be doing
            try:
                time.sleep(30)
            except BaseException:
                os._exit(99)  # the handler raised: the copy would go on running
            os._exit(0)
        time.sleep(0.3)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, status


def test_the_installing_process_still_gets_terminated() -> None:
    with _signals.installed():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except _signals.Terminated as exc:
            assert exc.signum == signal.SIGTERM
        else:
            raise AssertionError("SIGTERM did not raise Terminated")
