"""Per-host views of a volume as device-mapper devices (for nvmet).

nvmet has no per-host read-only, so each NVMe host reaches the volume through
its own dm device: `linear` when it may write, `flakey ... error_writes` when it
may only read. Writes through a read-only view fail in the target kernel while
reads see exactly what the writers wrote. Switching modes reloads the table and
resumes: in-flight I/O drains, the namespace and the host's controller stay.
"""
import subprocess
from pathlib import Path

from shareblock.targets import names
from shareblock.targets.base import TargetError

DMSETUP = "dmsetup"
DOWN_FOREVER = 2 ** 31 - 1  # flakey's down interval, seconds: "down" for 68 years


def sectors(device: str) -> int:
    """Size of a block device in 512-byte sectors, from sysfs (no process spawned)."""
    real = Path(device).resolve()
    try:
        return int((Path("/sys/class/block") / real.name / "size").read_text())
    except OSError as e:
        raise TargetError(f"{device} is not a block device here") from e


def table(device: str, mode: str, size: int | None = None) -> str:
    size = sectors(device) if size is None else size
    if mode == "rw":
        return f"0 {size} linear {device} 0"
    # up 0 s, down forever: every write fails, every read passes through.
    return f"0 {size} flakey {device} 0 0 {DOWN_FOREVER} 1 error_writes"


def _dmsetup(*args: str, stdin: str | None = None) -> str:
    res = subprocess.run([DMSETUP, *args], input=stdin, capture_output=True, text=True)
    if res.returncode != 0:
        raise TargetError(f"dmsetup {args[0]} {args[1] if len(args) > 1 else ''}: "
                          f"{res.stderr.strip()}")
    return res.stdout


def view_name(volume_id: str, host: str) -> str:
    return f"sb-{names.token('volume id', volume_id)}-{names.short_hash(host)}"


def path(name: str) -> str:
    return f"/dev/mapper/{name}"


def current_table(name: str) -> str | None:
    res = subprocess.run([DMSETUP, "table", name], capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else None


def mode_of(table_line: str | None) -> str | None:
    if not table_line:
        return None
    return "ro" if " flakey " in f" {table_line} " else "rw"


def ensure(name: str, device: str, mode: str) -> str:
    """Create the view, or bring an existing one to this device and mode."""
    want = table(device, mode)
    have = current_table(name)
    if have is None:
        _dmsetup("create", name, "--uuid", f"SHAREBLOCK-{name}", stdin=want + "\n")
        _dmsetup("mknodes", name)
    elif mode_of(have) != mode or have.split()[1] != want.split()[1]:
        _dmsetup("load", name, stdin=want + "\n")
        _dmsetup("resume", name)
    return path(name)


def stats(name: str) -> dict | None:
    """Per-view I/O counters from the block layer: as each NVMe host has its own
    view, these are that host's counters (nvmet itself keeps none)."""
    try:
        real = Path(path(name)).resolve()
        fields = [int(x) for x in (Path("/sys/block") / real.name / "stat").read_text().split()]
    except (OSError, ValueError):
        return None
    return {"num_cmds": fields[0] + fields[4], "read_mbytes": fields[2] * 512 >> 20,
            "write_mbytes": fields[6] * 512 >> 20}


def remove(name: str) -> None:
    if current_table(name) is not None:
        _dmsetup("remove", "--retry", name)
