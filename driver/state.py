"""The driver's own small state: per-host credentials and what each volume exports.

Kept as one JSON document, mode 0600, saved crash-safe (write, fsync, rename),
so after a reboot `ensure_export` can bring back every export and ACL with the
same secrets the hosts already hold.
"""
import contextlib
import fcntl
import json
import os
import tempfile
import threading
from pathlib import Path

from shareblock.driver import crashpoints


def write_private_json(path: Path, data) -> None:
    """Save a JSON document crash-safe (write, fsync, rename, fsync the folder), 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # a new file of our own (O_EXCL, 0600): a leftover or concurrent writer's .tmp
    # can neither lend it its mode nor mix its bytes in
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            # one line: json's C encoder (indent makes it the pure-Python one, which
            # cost more than the fsync with hundreds of volumes in the document)
            f.write(json.dumps(data, sort_keys=True))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


class DriverState:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def load(self) -> dict:
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            data = {}
        data.setdefault("hosts", {})
        data.setdefault("exports", {})
        return data

    def save(self, data: dict) -> None:
        write_private_json(self.path, data)

    @contextlib.contextmanager
    def _locked(self):
        """One writer at a time, across threads and processes."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._lock:
            fd = os.open(self.path.with_suffix(".lock"), os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def update(self, change) -> dict:
        """Apply change(data) and save, as one step."""
        with self._locked():
            data = self.load()
            change(data)
            self.save(data)
        crashpoints.reached("state")
        return data
