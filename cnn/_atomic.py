"""One atomic file writer for everything cnn writes (models, checkpoints, IDX files, reports).

:func:`atomic_write` never destroys what is at the target path: the new content goes to a
temporary file in the target's folder, is flushed and fsync'ed, then ``os.replace``'d over the
target, and the folder is fsync'ed so the rename survives a crash. The target is always either
the old file, whole, or the new one, whole.

Semantics of the target path:

- A symlink is followed to its final target, and that file is replaced (atomically, in *its*
  folder), as editors do: the link stays a link and its target gets the new content. A dangling
  symlink creates its target.
- A target that exists but is not a regular file (a directory, a FIFO, a character or block
  device such as ``/dev/null``, a socket) is refused before anything is written:
  ``IsADirectoryError`` for a directory, ``ValueError`` naming the kind for the others.
- An existing file keeps its permission bits; a new file gets ``0o666`` minus the umask.
  Hard links to the old file keep the old content (the name gets a new inode).

The temporary file is ``.<name>.<pid>.<random>.tmp`` beside the (resolved) target. A failed or
interrupted write (an exception, Ctrl-C) removes its own temporary file; a process killed
mid-write cannot, so every write first removes the temporary files of its target whose writer
process no longer exists (never one of a live process, which may be mid-write). Pids are checked
on this machine only: do not write one target from several machines sharing a folder.
"""

import os
import re
import stat
import tempfile

from . import _validation as V

__all__ = ["atomic_write"]

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _umask():
    try:  # Linux: read it without changing it (os.umask would race with other threads)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def resolve_target(path, verb="write"):
    """``(target, mode)``: the regular file that a write to ``path`` replaces (symlinks
    followed) and the permission bits the new file gets. Raises before anything is written
    when the target is not a regular file or its folder does not exist."""
    target = os.path.realpath(path)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:  # e.g. a symlink loop (ELOOP), a path through a file (ENOTDIR)
        raise type(exc)(exc.errno, f"cannot {verb} {path}: {exc.strerror}", path) from None
    shown = path if target == os.path.abspath(path) else f"{path} (-> {target})"
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"cannot {verb} {shown}: it is a directory; wanted a file path")
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = next((what for test, what in _KINDS if test(st.st_mode)), "not a regular file")
        raise ValueError(f"cannot {verb} {shown}: it is {kind}, not a regular file; cnn only "
                         f"replaces regular files (atomically), so give a file path")
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot {verb} {shown}: the folder {folder} does not exist")
    mode = stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask()
    return target, mode


def _pid_alive(pid):
    """Whether process ``pid`` exists on this machine. Anything uncertain counts as alive
    (so its file is kept): no way to probe (not POSIX), or a process of another user."""
    if os.name != "posix" or pid <= 0:
        return True  # on Windows os.kill(pid, 0) would terminate the process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, OSError):  # e.g. PermissionError: another user's process
        return True
    return True


def remove_stale_temp_files(folder, name):
    """Delete ``.<name>.<pid>.<random>.tmp`` files in ``folder`` whose writer ``pid`` no longer
    exists (writes to ``name`` killed midway). Files of live processes and anything else are
    left alone; failures are ignored (cleaning never fails a write)."""
    pattern = re.compile(r"\." + re.escape(name) + r"\.(\d{1,10})\.[^.]+\.tmp")
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
        except OSError:
            pass  # already removed by another process, or not ours to remove


def atomic_write(path, write_fn, verb="write"):
    """Write a file at ``path`` atomically (see the module docstring for the semantics).

    Parameters
    ----------
    path : str, bytes or os.PathLike
        The file to create or replace; a symlink is followed to the file it names.
    write_fn : callable
        ``write_fn(f)`` writes the whole content to ``f``, a binary file open for writing
        (it need not flush or close it).
    verb : str, default "write"
        How error messages name the operation ("cannot save ...").

    Returns
    -------
    str
        The file actually written (``path`` with symlinks resolved).

    Raises
    ------
    IsADirectoryError, ValueError
        The target is a directory / a FIFO, device or socket (nothing is written).
    FileNotFoundError
        The target's folder does not exist.
    OSError
        The OS refused the write (disk full, permissions, ...); the old file is untouched.
    """
    path = V.path(path)
    target, mode = resolve_target(path, verb)
    folder, name = os.path.split(target)
    remove_stale_temp_files(folder, name)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable (POSIX; not possible on Windows)
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return target
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return target
