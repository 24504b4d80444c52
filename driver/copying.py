"""Copies of a file pool's volume files: a reflink where the filesystem shares
extents (xfs, btrfs), else a sparse-aware copy of the data extents only.

A reflink (the FICLONE ioctl) shares the source's extents at one instant, so a
reflink of a live volume is crash-consistent. A plain copy reads the source
while it may change: it is consistent only for a volume no host writes.
Copies are written to a `.partial` file, fsync'd and renamed into place, so a
crash never leaves a half copy under the final name.
"""
import errno
import fcntl
import logging
import os
import time
from pathlib import Path

# a long copy's progress: a line every PROGRESS_EVERY seconds for a service's log,
# and a tick per chunk (`done`, `total`, `what`) that only a terminal's progress
# line listens to (the CLI's, cli/main.py): never propagated to a log
LOG = logging.getLogger("shareblock.progress")
TICKS = logging.getLogger("shareblock.progress.ticks")
TICKS.propagate = False
TICKS.setLevel(logging.INFO)
FICLONE = 0x40049409  # _IOW(0x94, 9, int), linux/fs.h
CHUNK = 8 << 20
PROGRESS_EVERY = 5.0  # seconds between progress lines of a long copy
NO_REFLINK = (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS)


def _reflink(src_fd: int, dst_fd: int) -> bool:
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
        return True
    except OSError as e:
        if e.errno in NO_REFLINK:
            return False
        raise


def _extents(fd: int, size: int):
    """(offset, length) of each data extent, holes skipped (SEEK_DATA / SEEK_HOLE)."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole is left
                return
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, min(end, size) - start
        pos = end


def _copy_data(src_fd: int, dst_fd: int, size: int, what: str) -> None:
    done, last = 0, time.monotonic()
    data = sum(length for _, length in _extents(src_fd, size))
    for start, length in _extents(src_fd, size):
        end = start + length
        while start < end:
            n = min(CHUNK, end - start)
            buf = os.pread(src_fd, n, start)
            if not buf:  # the source shrank under the copy: never a short copy
                raise OSError(f"{what}: the source ended at {start} of {end} bytes")
            # an all-zero chunk stays a hole: the copy is as sparse as its source
            if buf.count(0) != len(buf):
                os.pwrite(dst_fd, buf, start)
            start += len(buf)
            done += len(buf)
            if TICKS.handlers:
                TICKS.info("%s", what, extra={"what": what, "done": done, "total": data})
            if time.monotonic() - last >= PROGRESS_EVERY:
                last = time.monotonic()
                LOG.info("%s: %d of %d MiB copied (%d%%)", what, done >> 20, data >> 20,
                         100 * done // max(data, 1))


def copy_file(src: Path, dst: Path, size: int | None = None, what: str = "copy") -> str:
    """Copy src to dst (0600), then make dst `size` bytes long (at least the
    source's). Returns how: `reflink`, `copy`, or `done` when dst was already
    there (a retry after the copy finished: only grown to `size` if need be)."""
    if dst.exists():
        if size and dst.stat().st_size < size:
            os.truncate(dst, size)
        return "done"
    partial = dst.with_name(dst.name + ".partial")
    src_fd = os.open(src, os.O_RDONLY)
    try:
        length = os.fstat(src_fd).st_size
        dst_fd = os.open(partial, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        try:
            os.fchmod(dst_fd, 0o600)  # a leftover .partial of another mode
            how = "reflink" if _reflink(src_fd, dst_fd) else "copy"
            if how == "copy":
                os.ftruncate(dst_fd, length)
                _copy_data(src_fd, dst_fd, length, what)
            os.ftruncate(dst_fd, max(length, size or 0))
            os.fsync(dst_fd)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
    os.replace(partial, dst)
    sync_dir(dst.parent)
    LOG.info("%s: %s of %d MiB done", what, how, length >> 20)
    return how


def sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
