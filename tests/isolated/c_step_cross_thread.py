"""A run whose step is a C builtin, stopped from outside the main thread.

Run in a subprocess by ``tests/test_signals_threads.py`` (signals sent to the test process
itself would abort pytest if anything went wrong). Usage::

    python c_step_cross_thread.py BACKEND ACTION

ACTION is one of

- ``sigint-thread``:  a thread calls ``signal.pthread_kill(main thread, SIGINT)``;
- ``sigint-process``: a child process calls ``os.kill(this process, SIGINT)``;
- ``terminate-thread``: a thread calls ``engine.terminate()``.

The step is ``operator.is_`` over ``range(10**9)``, so no Python bytecode runs inside the loop
once it is going. Prints one JSON line: ``outcome`` (``KeyboardInterrupt``, ``terminated``,
``starved`` when the watchdog fired first, ``completed``), ``delay`` (seconds from the
stop request to the moment the main thread saw its effect, on CLOCK_MONOTONIC) and
``iteration``.
"""

from __future__ import annotations

import json
import operator
import os
import signal
import subprocess
import sys
import threading
import time

from ember.engine import Engine, Events

WATCHDOG_SECONDS = float(os.environ.get("EMBER_WATCHDOG_SECONDS", "4"))
SETTLE_SECONDS = 0.1  # let the loop reach its steady state before stopping it

KILLER = (
    "import os, signal, sys, time\n"
    "time.sleep(float(sys.argv[2]))\n"
    "sent = time.monotonic()\n"
    "os.kill(int(sys.argv[1]), signal.SIGINT)\n"
    "print(repr(sent), flush=True)\n"
)


class Starved(BaseException):
    """The watchdog (SIGALRM) fired before the stop request took effect."""


def on_alarm(signum: int, frame: object) -> None:
    raise Starved


def main(backend: str, action: str) -> dict[str, object]:
    engine = Engine(operator.is_, backend=backend)
    started = threading.Event()
    engine.add_event_handler(Events.STARTED, started.set)
    lock = threading.Lock()
    finished = False
    sent: list[float] = []
    child: subprocess.Popen[str] | None = None

    def from_thread() -> None:
        started.wait()
        time.sleep(SETTLE_SECONDS)
        with lock:  # never stop a run that has already ended
            if finished:
                return
            sent.append(time.monotonic())
            if action == "sigint-thread":
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            else:
                engine.terminate()

    if action == "sigint-process":
        pid = str(os.getpid())

        def spawn() -> None:
            nonlocal child
            child = subprocess.Popen(
                [sys.executable, "-c", KILLER, pid, str(SETTLE_SECONDS)],
                stdout=subprocess.PIPE,
                text=True,
            )

        engine.add_event_handler(Events.STARTED, spawn)
    else:
        threading.Thread(target=from_thread, daemon=True).start()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, WATCHDOG_SECONDS)
    outcome, seen = "completed", None
    try:
        try:
            engine.run(range(10**9), max_epochs=1)
            seen = time.monotonic()
            if engine.state.iteration < 10**9:
                outcome = "terminated"
        except KeyboardInterrupt:
            seen = time.monotonic()
            outcome = "KeyboardInterrupt"
        except Starved:
            outcome = "starved"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            with lock:
                finished = True
    except KeyboardInterrupt:  # a SIGINT that arrived after the watchdog
        pass
    if child is not None:
        out, _ = child.communicate(timeout=30)
        if out.strip():
            sent.append(float(out))
    delay = seen - sent[0] if (seen is not None and sent) else None
    return {"outcome": outcome, "delay": delay, "iteration": engine.state.iteration}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])), flush=True)
