"""Backing devices for the benchmark: sparse files behind loop devices made with
ioctls (blockdev/loopdev.py), hundreds of them without a process each."""
from pathlib import Path

from shareblock.blockdev import loopdev


def sparse_file(path: Path, size_mb: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size_mb << 20)
    return path


def attach(backing: Path) -> str:
    """A free loop device over `backing` (several loops may share one file)."""
    return loopdev.attach(str(backing))
