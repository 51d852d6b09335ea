"""Ctrl-C deferred around updates that must happen whole (all parameters, or none).

:func:`deferred` holds back SIGINT for the duration of a ``with`` block: a Ctrl-C that arrives
inside is recorded and raised as KeyboardInterrupt (by the handler that was in force) as soon
as the block ends, so the code inside is never cut in half. Blocks nest (an inner block
passes a deferred Ctrl-C on to the outer one). Signal handlers can only be changed from the
main thread; in other threads (where Python never delivers SIGINT anyway) and when SIGINT is
ignored or handled outside Python, the block runs as it is. The cost is two ``signal.signal``
calls per block (microseconds).
"""

import contextlib
import signal
import threading

__all__ = ["deferred"]

@contextlib.contextmanager
def deferred():
    """Defer SIGINT (Ctrl-C) until the end of the block; see the module docstring."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield  # another thread, SIG_IGN, SIG_DFL, or a handler installed outside Python
        return
    pending = []
    signal.signal(signal.SIGINT, lambda signum, frame: pending.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:  # an outer block's handler records it; default_int_handler raises
            previous(signal.SIGINT, pending[0])
