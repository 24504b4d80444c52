"""Loop devices made with ioctls: hundreds of backing devices without a process each."""
import fcntl
import os
from pathlib import Path

LOOP_CTL_GET_FREE = 0x4C82
LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01


def sparse_file(path: Path, size_mb: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size_mb << 20)
    return path


def attach(backing: Path) -> str:
    """A free loop device over `backing` (several loops may share one file)."""
    ctl = os.open("/dev/loop-control", os.O_RDWR)
    try:
        index = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
    finally:
        os.close(ctl)
    dev = f"/dev/loop{index}"
    if not os.path.exists(dev):  # devtmpfs normally makes it; udev may lag
        os.mknod(dev, 0o660 | 0o060000, os.makedev(7, index))
    fd = os.open(backing, os.O_RDWR)
    try:
        loop = os.open(dev, os.O_RDWR)
        try:
            fcntl.ioctl(loop, LOOP_SET_FD, fd)
        finally:
            os.close(loop)
    finally:
        os.close(fd)
    return dev


def detach(dev: str) -> None:
    try:
        loop = os.open(dev, os.O_RDWR)
    except OSError:
        return
    try:
        fcntl.ioctl(loop, LOOP_CLR_FD)
    except OSError:
        pass
    finally:
        os.close(loop)
