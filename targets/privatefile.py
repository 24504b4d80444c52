"""Private files saved crash-safe: a reader sees the old document or the new one.

Documents that hold secrets (the node's desired state, a host's connection
records) are mode 0600 from their first byte, in 0700 folders.
"""
import contextlib
import json
import os
import tempfile
from pathlib import Path


def write_private_json(path: Path, data) -> None:
    """Save a JSON document crash-safe (write, fsync, rename, fsync the folder), 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # a new file of our own (O_EXCL, 0600): a leftover or concurrent writer's .tmp
    # can neither lend it its mode nor mix its bytes in
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            # one line: indent would make json use its pure-Python encoder
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
