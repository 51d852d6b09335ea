"""What the bench's modules share with the torch memory probe, which must not import cnn:
:class:`Skip` and :func:`peak_rss_bytes`. Standard library only."""

import sys

__all__ = ["Skip", "peak_rss_bytes"]


class Skip(Exception):
    """A backend cannot run a case; the message says why."""


def peak_rss_bytes():
    """This process's peak resident set size in bytes.

    Linux: ``VmHWM`` of ``/proc/self/status``, the high-water mark of this address space. Not
    ``getrusage().ru_maxrss``: Linux carries that across ``execve`` from the address space the
    child was forked from, so a child of a big parent reports the parent's peak. Elsewhere:
    ``ru_maxrss`` (bytes on macOS, KiB on the other Unixes).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024
