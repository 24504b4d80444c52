"""One target-changing step per volume at a time, across threads and processes.

An admit racing the last detach's unexport would lose its ACL, and two hosts
attaching rw at once would each see no other writer at the guard: each such
step runs holding its volume's lock.

POSIX record locks (lockf) between processes, because a forked child does not
inherit them (an inherited flock would outlive its holder in the child); an
RLock per lock file between the threads of one process, which also lets a step
re-enter its own volume's lock.
"""
import contextlib
import fcntl
import os
import threading
from pathlib import Path

_guard = threading.Lock()
_threads: dict[str, threading.RLock] = {}
_depth: dict[str, int] = {}
_fds: dict[str, int] = {}


def _after_fork_in_child() -> None:
    """The child holds none of its parent's locks: start clean."""
    global _guard
    _guard = threading.Lock()
    for fd in _fds.values():
        os.close(fd)
    _threads.clear()
    _depth.clear()
    _fds.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


class VolumeLocks:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    @contextlib.contextmanager
    def hold(self, volume_id: str):
        path = str(self.folder / f"{volume_id}.lock")
        with _guard:
            rlock = _threads.setdefault(path, threading.RLock())
        with rlock:
            if not _depth.get(path):
                self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                _fds[path] = fd
            _depth[path] = _depth.get(path, 0) + 1
            try:
                yield
            finally:
                _depth[path] -= 1
                if not _depth[path]:
                    os.close(_fds.pop(path))  # closing drops the record lock
