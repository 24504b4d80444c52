"""Loop devices by the ioctls losetup uses (<linux/loop.h>), without a process.

A file pool attaches a loop device per volume; under load a `losetup` process
cost more than the rest of a volume create.
"""
import errno
import fcntl
import os
import stat
import struct

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A  # fd and flags in one step (Linux 5.8)
LOOP_CLR_FD = 0x4C01
LO_FLAGS_DIRECT_IO = 16
LOOP_MAJOR = 7
# struct loop_config: fd, block_size, struct loop_info64, 8 reserved u64
_INFO64 = "QQQQQIIII64s64s32s2Q"


def _config(fd: int, name: str, flags: int) -> bytes:
    info = struct.pack(_INFO64, 0, 0, 0, 0, 0, 0, 0, 0, flags,
                       os.fsencode(name)[:63], b"", b"", 0, 0)
    return struct.pack("II", fd, 0) + info + bytes(64)


def _free_device() -> str:
    ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        index = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
    finally:
        os.close(ctl)
    dev = f"/dev/loop{index}"
    if not os.path.exists(dev):  # devtmpfs makes it; a bare /dev may not have it yet
        os.mknod(dev, 0o660 | stat.S_IFBLK, os.makedev(LOOP_MAJOR, index))
    return dev


def attach(path: str, direct_io: bool = False, tries: int = 16) -> str:
    """A free loop device over `path`, as `losetup -f --show [--direct-io=on]`.
    (Direct I/O falls back to buffered where the file's filesystem has none.)"""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        config = _config(fd, os.path.abspath(path), LO_FLAGS_DIRECT_IO if direct_io else 0)
        for _ in range(tries):
            dev = _free_device()
            loop = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(loop, LOOP_CONFIGURE, config)
                return dev
            except OSError as e:
                if e.errno != errno.EBUSY:  # EBUSY: another process took it first
                    raise
            finally:
                os.close(loop)
        raise OSError(errno.EBUSY, f"no free loop device after {tries} tries")
    finally:
        os.close(fd)


def detach(dev: str) -> None:
    """As `losetup -d`; a device already detached is not an error."""
    loop = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(loop, LOOP_CLR_FD)
    except OSError as e:
        if e.errno != errno.ENXIO:  # ENXIO: nothing attached
            raise
    finally:
        os.close(loop)


def backing_file(loop: str) -> str | None:
    """The file behind loop device `loopN`, from sysfs; None when nothing is attached."""
    try:
        with open(f"/sys/block/{loop}/loop/backing_file") as f:
            return f.read().rstrip("\n")
    except OSError:
        return None


def same_file(backing: str | None, want: str) -> bool:
    if backing is None:
        return False
    try:  # the path the loop device was given may name the file another way
        return backing == want or os.path.samefile(backing, want)
    except OSError:
        return False  # " (deleted)" or gone


def attached() -> dict[str, str]:
    """Every attached loop device: backing file -> loopN (what `losetup -l` lists)."""
    found = {}
    for name in os.listdir("/sys/block"):
        if name.startswith("loop") and (backing := backing_file(name)) is not None:
            found[backing] = name
    return found


def find(path: str, known: dict[str, str] | None = None) -> str | None:
    """The loop device over `path` (/dev/loopN), or None. `known`: attached(), read
    once by a caller that looks up many files."""
    known = attached() if known is None else known
    want = os.path.realpath(path)
    if want in known:
        return f"/dev/{known[want]}"
    for backing, name in known.items():
        if same_file(backing, want):
            return f"/dev/{name}"
    return None
