"""Progress display for training: a bar per epoch, or one line per epoch, or nothing.

``verbose=0``: silent. ``verbose=1``: a live bar (steps, loss, accuracy, images/s) when the
stream is a terminal, drawn by tqdm when it is installed and by a small built-in bar
otherwise; when the stream is not a terminal (a log file, a pipe, CI) the bar is replaced by
one line per epoch, so logs do not fill with bar redraws. ``verbose=2``: one line per epoch.
"""

import io
import os
import sys
import time

__all__ = ["EpochProgress", "format_logs"]

_LABELS = {"loss": "loss", "accuracy": "acc", "val_loss": "val_loss", "val_accuracy": "val_acc",
           "lr": "lr", "images_per_second": "img/s"}


def _fmt(key, value):
    if key == "images_per_second":
        return f"{value:,.0f}"
    if key == "lr":
        return f"{value:.3g}"
    return f"{value:.4f}"


def format_logs(logs):
    """``{"loss": 0.1, "accuracy": 0.9, ...}`` -> ``"loss 0.1000 - acc 0.9000 - ..."``."""
    return " - ".join(f"{_LABELS[k]} {_fmt(k, logs[k])}" for k in _LABELS if k in logs
                      and logs[k] is not None)


def _isatty(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _terminal_size(stream):
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return 0, 0
    return size.columns, size.lines


def _tqdm():
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


class _PlainBar:
    """A minimal carriage-return bar for terminals without tqdm."""

    def __init__(self, total, desc, stream, width=24, min_interval=0.1):
        self.total, self.desc, self.stream = total, desc, stream
        self.width, self.min_interval = width, min_interval
        self.n, self.postfix, self._last = 0, "", 0.0
        self._start = time.perf_counter()

    def update(self, n=1):
        self.n += n
        now = time.perf_counter()
        if now - self._last >= self.min_interval or self.n >= self.total:
            self._last = now
            self._draw()

    def set_postfix_str(self, text, refresh=True):
        self.postfix = text
        if refresh:
            self._draw()

    def _draw(self):
        done = int(self.width * self.n / self.total) if self.total else self.width
        bar = "#" * done + "." * (self.width - done)
        elapsed = time.perf_counter() - self._start
        self.stream.write(f"\r{self.desc} [{bar}] {self.n}/{self.total} {elapsed:.1f}s {self.postfix}\x1b[K")
        self.stream.flush()

    def close(self):
        self._draw()
        self.stream.write("\n")
        self.stream.flush()


class EpochProgress:
    """Progress of one epoch.

    Parameters
    ----------
    total : int
        Steps in the epoch.
    epoch, epochs : int
        This epoch's index (from 0) and the number of epochs (for the "epoch 3/10" label).
    verbose : {0, 1, 2}
    stream : file-like, optional
        Default ``sys.stdout`` (looked up at construction).
    """

    def __init__(self, total, epoch, epochs, verbose=1, stream=None):
        self.stream = sys.stdout if stream is None else stream
        self.desc = f"epoch {epoch + 1}/{epochs}"
        self.total = total
        self._bar = None
        if verbose == 1 and _isatty(self.stream):
            tqdm = _tqdm()
            if tqdm is not None:
                # tqdm hides its bar on a terminal that reports a size of 0 (some pseudo-terminals).
                cols, rows = _terminal_size(self.stream)
                size = {"dynamic_ncols": True} if cols > 0 else {"ncols": 100}
                if rows <= 0:
                    size["nrows"] = 24
                self._bar = tqdm(total=total, desc=self.desc, unit="step", file=self.stream,
                                 leave=True, mininterval=0.1, **size)
            else:
                self._bar = _PlainBar(total, self.desc, self.stream)
            self.mode = "bar"
        elif verbose in (1, 2):
            self.mode = "line"
        else:
            self.mode = "off"

    def update(self, step, logs):
        """Step ``step`` (from 0) is done; ``logs`` are the running epoch metrics."""
        if self._bar is not None:
            self._bar.set_postfix_str(format_logs(logs), refresh=False)
            self._bar.update(1)

    def close(self, logs, seconds):
        """The epoch is over: show its final metrics (with validation, if any)."""
        text = f"{format_logs(logs)} - {seconds:.1f}s"
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)
            self._bar.close()
        elif self.mode == "line":
            print(f"{self.desc} - {text}", file=self.stream, flush=True)

    def abort(self):
        """Close a live bar without a summary (on errors / Ctrl-C)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
