"""Per-host views of a volume as device-mapper devices (for nvmet).

nvmet has no per-host read-only, so each NVMe host reaches the volume through
its own dm device: `linear` when it may write, `flakey ... error_writes` when it
may only read. Writes through a read-only view fail in the target kernel while
reads see exactly what the writers wrote. Switching modes reloads the table and
resumes: in-flight I/O drains, the namespace and the host's controller stay.

The views are made with device-mapper's ioctls on /dev/mapper/control (the
interface of <linux/dm-ioctl.h> that dmsetup and libdevmapper drive), not with
dmsetup processes: a dmsetup run also waits for udev to settle its event, which
made an NVMe admit cost seconds. nvmet opens a view by the node made here, in a
folder of our own: udev keeps /dev/mapper's symlinks in step with the kernel
only later (a view removed and made again under the same name can find its
link missing for a moment), and never touches NODES.
"""
import errno
import fcntl
import os
import stat
import struct
import time
from pathlib import Path

from shareblock.targets import names
from shareblock.targets.base import TargetError

CONTROL = "/dev/mapper/control"
NODES = "/dev/shareblock"  # our block nodes for the views (not managed by udev)
DOWN_FOREVER = 2 ** 31 - 1  # flakey's down interval, seconds: "down" for 68 years

# <linux/dm-ioctl.h>: struct dm_ioctl and struct dm_target_spec
_DM_IOCTL = struct.Struct("=3I I I I i I I I Q 128s 129s 7x")  # 312 bytes
_TARGET_SPEC = struct.Struct("=Q Q i I 16s")  # 40 bytes, parameters follow
_VERSION = (4, 0, 0)
_DEV_CREATE, _DEV_REMOVE, _DEV_SUSPEND, _TABLE_LOAD, _TABLE_STATUS = 3, 4, 6, 9, 12
_STATUS_TABLE_FLAG = 1 << 4
_BUFFER_FULL_FLAG = 1 << 8
_STATUS_BUFFER = 16384


def _request(cmd: int) -> int:
    """_IOWR(0xfd, cmd, struct dm_ioctl)"""
    return (3 << 30) | (_DM_IOCTL.size << 16) | (0xFD << 8) | cmd


def _align8(n: int) -> int:
    return (n + 7) & ~7


def pack(name: str, uuid: str = "", flags: int = 0, targets: list[tuple] = (),
         size: int | None = None) -> bytearray:
    """One ioctl buffer: the header, then (start, length, type, params) specs."""
    body = b""
    for start, length, ttype, params in targets:
        raw = params.encode() + b"\0"
        step = _align8(_TARGET_SPEC.size + len(raw))
        spec = _TARGET_SPEC.pack(start, length, 0, step, ttype.encode())
        body += (spec + raw).ljust(step, b"\0")
    total = max(size or 0, _DM_IOCTL.size + len(body))
    buf = bytearray(total)
    buf[:_DM_IOCTL.size] = _DM_IOCTL.pack(*_VERSION, total, _DM_IOCTL.size, len(targets), 0,
                                          flags, 0, 0, 0, name.encode(), uuid.encode())
    buf[_DM_IOCTL.size:_DM_IOCTL.size + len(body)] = body
    return buf


def header(buf: bytes) -> dict:
    f = _DM_IOCTL.unpack_from(buf)
    return {"data_size": f[3], "data_start": f[4], "target_count": f[5], "open_count": f[6],
            "flags": f[7], "dev": f[10]}


def unpack_targets(buf: bytes) -> list[tuple]:
    """The (start, length, type, params) specs a TABLE_STATUS call returned; the
    kernel's `next` is counted from the start of the data area."""
    h = header(buf)
    out, at = [], h["data_start"]
    for _ in range(h["target_count"]):
        start, length, _status, nxt, ttype = _TARGET_SPEC.unpack_from(buf, at)
        raw = bytes(buf[at + _TARGET_SPEC.size:]).split(b"\0", 1)[0]
        out.append((start, length, ttype.rstrip(b"\0").decode(), raw.decode()))
        at = h["data_start"] + nxt
    return out


def _ioctl(cmd: int, buf: bytearray, name: str) -> bytearray:
    try:
        fd = os.open(CONTROL, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise TargetError(f"device-mapper: cannot open {CONTROL}: {e.strerror}") from e
    try:
        fcntl.ioctl(fd, _request(cmd), buf, True)
    except OSError as e:
        if e.errno == errno.ENXIO:
            raise _NoDevice(name) from e
        raise TargetError(f"device-mapper {name}: {e.strerror}") from e
    finally:
        os.close(fd)
    return buf


def _errno(e: TargetError) -> int | None:
    return e.__cause__.errno if isinstance(e.__cause__, OSError) else None


class _NoDevice(TargetError):
    def __init__(self, name):
        super().__init__(f"device-mapper: no device {name}")


def sectors(device: str) -> int:
    """Size of a block device in 512-byte sectors, from sysfs (no process spawned)."""
    try:
        rdev = os.stat(device).st_rdev
        return int(Path(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}/size").read_text())
    except OSError as e:
        raise TargetError(f"{device} is not a block device here") from e


def table(device: str, mode: str, size: int | None = None) -> str:
    size = sectors(device) if size is None else size
    if mode == "rw":
        return f"0 {size} linear {device} 0"
    # up 0 s, down forever: every write fails, every read passes through.
    return f"0 {size} flakey {device} 0 0 {DOWN_FOREVER} 1 error_writes"


def _spec(line: str) -> tuple:
    start, length, ttype, params = line.split(" ", 3)
    return int(start), int(length), ttype, params


def view_name(volume_id: str, host: str) -> str:
    return f"sb-{names.token('volume id', volume_id)}-{names.short_hash(host)}"


def path(name: str) -> str:
    return f"{NODES}/{name}"


def _status(name: str) -> tuple[int, str] | None:
    """(device number, live table as `dmsetup table` prints it), or None when
    there is no such device. The table is "" when none is loaded."""
    try:
        buf = _ioctl(_TABLE_STATUS, pack(name, flags=_STATUS_TABLE_FLAG, size=_STATUS_BUFFER),
                     name)
    except _NoDevice:
        return None
    h = header(buf)
    if h["flags"] & _BUFFER_FULL_FLAG:
        raise TargetError(f"device-mapper {name}: table larger than {_STATUS_BUFFER} bytes")
    return h["dev"], "\n".join(f"{s} {n} {t} {p}" for s, n, t, p in unpack_targets(buf))


def current_table(name: str) -> str | None:
    """The live table (devices as major:minor), None without a device or a table."""
    found = _status(name)
    return (found[1] or None) if found else None


def mode_of(table_line: str | None) -> str | None:
    if not table_line:
        return None
    return "ro" if " flakey " in f" {table_line} " else "rw"


def _load_and_resume(name: str, line: str) -> None:
    _ioctl(_TABLE_LOAD, pack(name, targets=[_spec(line)]), name)
    _ioctl(_DEV_SUSPEND, pack(name), name)  # no SUSPEND flag: resume, swapping tables


def _make_node(name: str, dev: int) -> None:
    node = path(name)
    try:
        have = os.lstat(node)
        if stat.S_ISBLK(have.st_mode) and have.st_rdev == dev:
            return
        os.unlink(node)  # the node of an earlier device of this name
    except FileNotFoundError:
        pass
    os.makedirs(NODES, mode=0o700, exist_ok=True)
    os.mknod(node, 0o600 | stat.S_IFBLK, dev)


def _same_device(table_line: str, device: str) -> bool:
    """Whether a live table maps `device` (the kernel shows it as major:minor)."""
    rdev = os.stat(device).st_rdev
    return table_line.split()[3] == f"{os.major(rdev)}:{os.minor(rdev)}"


def ensure(name: str, device: str, mode: str) -> str:
    """Create the view, or bring an existing one to this device and mode; either
    way its node exists (a crash may have come between the two)."""
    want = table(device, mode)
    found = _status(name)
    if found is None:
        dev = header(_ioctl(_DEV_CREATE, pack(name, uuid=f"SHAREBLOCK-{name}"), name))["dev"]
        have = ""
    else:
        dev, have = found
    if not have:  # new, or left without a table by a crash between create and load
        try:
            _load_and_resume(name, want)
        except TargetError:
            _remove(name)  # no table: leave nothing half made
            raise
    elif (mode_of(have) != mode or have.split()[1] != want.split()[1]
          or not _same_device(have, device)):
        _load_and_resume(name, want)
    _make_node(name, dev)
    return path(name)


def views(volume_id: str) -> list[str]:
    """Every view of a volume the kernel has, found by name in sysfs: also those a
    crash left without a subsystem pointing at them."""
    head = f"sb-{names.token('volume id', volume_id)}-"
    found = []
    for entry in os.listdir("/sys/block"):
        if entry.startswith("dm-"):
            try:
                with open(f"/sys/block/{entry}/dm/name") as f:
                    name = f.read().strip()
            except OSError:
                continue
            rest = name[len(head):]
            if name.startswith(head) and len(rest) == names.SHORT_HASH and "-" not in rest:
                found.append(name)
    return found


def stats(name: str) -> dict | None:
    """Per-view I/O counters from the block layer: as each NVMe host has its own
    view, these are that host's counters (nvmet itself keeps none)."""
    try:
        rdev = os.stat(path(name)).st_rdev
        raw = Path(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}/stat").read_text()
        fields = [int(x) for x in raw.split()]
    except (OSError, ValueError):
        return None
    return {"num_cmds": fields[0] + fields[4], "read_mbytes": fields[2] * 512 >> 20,
            "write_mbytes": fields[6] * 512 >> 20}


def _remove(name: str, tries: int = 25) -> None:
    # EBUSY while something (udev's blkid, a closing namespace) still holds it open
    # for a moment: retried, as `dmsetup remove --retry` does.
    for attempt in range(tries):
        try:
            _ioctl(_DEV_REMOVE, pack(name), name)
            return
        except _NoDevice:
            return
        except TargetError as e:
            if _errno(e) != errno.EBUSY or attempt == tries - 1:
                raise
            time.sleep(0.2)


def remove(name: str) -> None:
    _remove(name)
    try:
        os.unlink(path(name))
    except FileNotFoundError:
        pass
