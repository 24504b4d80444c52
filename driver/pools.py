"""Where volumes live: an LVM thin pool (production) or a folder of sparse files.

Both give each volume a block device path that targets/ exports. Every method is
idempotent: creating an existing volume of the right size or deleting a missing
one is not an error.
"""
import json
import os
import subprocess
from pathlib import Path

from shareblock.blockdev import loopdev
from shareblock.driver import copying
from shareblock.targets import names

GiB = 1 << 30


class PoolError(RuntimeError):
    pass


def run(cmd: list[str]) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        last = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["failed"]
        raise PoolError(f"{cmd[0]} {cmd[1] if len(cmd) > 1 else ''}: {last[0]}")
    return res.stdout


class Pool:
    name = "pool"  # what the scheduler calls it (host@backend#name)

    def create(self, volume_id: str, size_gb: int) -> str:
        raise NotImplementedError

    def delete(self, volume_id: str) -> None:
        raise NotImplementedError

    def extend(self, volume_id: str, size_gb: int) -> None:
        raise NotImplementedError

    def clone(self, source_id: str, volume_id: str, size_gb: int) -> str:
        raise NotImplementedError

    # --- snapshots: a volume's data at one instant, kept apart from the volume ----------
    def snapshot(self, volume_id: str, snapshot_id: str) -> str:
        """Take the snapshot; returns how (`thin`, `reflink`, `copy`). Idempotent."""
        raise NotImplementedError

    def delete_snapshot(self, snapshot_id: str) -> None:
        raise NotImplementedError

    def from_snapshot(self, snapshot_id: str, volume_id: str, size_gb: int) -> str:
        """A new volume holding the snapshot's data, grown to size_gb; its device."""
        raise NotImplementedError

    def revert(self, volume_id: str, snapshot_id: str, size_gb: int) -> None:
        """The volume's data becomes the snapshot's (the volume is not exported);
        its size stays size_gb. The snapshot stays."""
        raise NotImplementedError

    def device(self, volume_id: str) -> str:
        raise NotImplementedError

    def backing(self, volume_id: str) -> str | None:
        """The file a loop device gives the volume's device from; None when the
        device comes back by itself after a reboot (an LVM volume)."""
        return None

    def capacity(self) -> dict:
        """total_capacity_gb, free_capacity_gb, provisioned_capacity_gb."""
        raise NotImplementedError


def parse(spec: str) -> Pool:
    """`file:/DIR` or `lvm:VG/THINPOOL`."""
    kind, _, rest = spec.partition(":")
    if kind == "file" and rest.startswith("/"):
        return FilePool(rest)
    if kind == "lvm" and rest.count("/") == 1:
        vg, pool = rest.split("/")
        return LvmThinPool(names.token("volume group", vg), names.token("thin pool", pool))
    raise names.InvalidName(f"shareblock_pool {spec!r} must be file:/DIR or lvm:VG/THINPOOL")


def _check_size(size_gb) -> int:
    if not isinstance(size_gb, int) or isinstance(size_gb, bool) or size_gb < 1:
        raise names.InvalidName(f"size {size_gb!r} must be a whole number of GiB, at least 1")
    return size_gb


class FilePool(Pool):
    """Sparse files in a folder, each attached as a loop device."""

    def __init__(self, directory: str):
        self.dir = Path(directory)
        self.name = self.dir.name or "files"
        self._loops: dict[str, str] = {}  # backing file -> loopN, checked on use
        self._real_dir: str | None = None

    def _file(self, volume_id: str) -> Path:
        return self.dir / f"{names.token('volume id', volume_id)}.img"

    def _snapshot_file(self, snapshot_id: str) -> Path:
        return self.dir / "snapshots" / f"{names.token('snapshot id', snapshot_id)}.img"

    def _real(self, path: Path) -> str:
        """The file's path as sysfs names a loop device's backing file: the folder's
        links resolved once, not a walk of every component on every lookup."""
        if self._real_dir is None:
            self._real_dir = os.path.realpath(self.dir)
        return os.path.join(self._real_dir, path.name)

    def _loop(self, path: Path) -> str | None:
        """The loop device backing this file, from sysfs: what `losetup -j` reads,
        without a process. Answers are remembered and checked on use, so a volume's
        usual lookup is one read; a miss reads every loop device once."""
        want = self._real(path)
        known = self._loops.get(want)
        if known and loopdev.backing_file(known) == want:
            return f"/dev/{known}"
        self._loops = loopdev.attached()
        return loopdev.find(want, self._loops)

    def _attach(self, path: Path) -> str:
        try:
            dev = loopdev.attach(str(path), direct_io=True)
        except OSError as e:
            raise PoolError(f"cannot attach a loop device to {path.name}: {e.strerror}") from e
        self._loops[self._real(path)] = dev.rsplit("/", 1)[-1]
        return dev

    def create(self, volume_id: str, size_gb: int) -> str:
        _check_size(size_gb)
        path = self._file(volume_id)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:  # made before (a retry): find or attach its loop device
            if path.stat().st_size < size_gb * GiB:  # a crash came before the truncate
                os.truncate(path, size_gb * GiB)
            return self.device(volume_id)
        try:
            os.ftruncate(fd, size_gb * GiB)
        finally:
            os.close(fd)
        return self._attach(path)  # a file made just now: no loop device backs it yet

    def backing(self, volume_id: str) -> str:
        return self._real(self._file(volume_id))

    def device(self, volume_id: str) -> str:
        path = self._file(volume_id)
        if not path.exists():
            raise PoolError(f"volume {volume_id} has no backing file in {self.dir}")
        return self._loop(path) or self._attach(path)

    def delete(self, volume_id: str) -> None:
        path = self._file(volume_id)
        if path.exists():
            self._detach(path)
        path.unlink(missing_ok=True)
        for left in self._leftovers(path):  # a copy or revert a crash cut short
            left.unlink(missing_ok=True)

    @staticmethod
    def _leftovers(path: Path, keep: Path | None = None) -> list[Path]:
        """A volume file's intermediate copies (`.partial`, `.revert-<snapshot>`)."""
        return [p for p in path.parent.glob(f"{path.name}.*")
                if p != keep and p.with_name(p.name + ".partial") != keep]

    def _detach(self, path: Path) -> None:
        loop = self._loop(path)
        if loop:
            try:
                loopdev.detach(loop)
            except OSError as e:
                raise PoolError(f"cannot detach {loop}: {e.strerror}") from e

    def extend(self, volume_id: str, size_gb: int) -> None:
        _check_size(size_gb)
        path = self._file(volume_id)
        if path.stat().st_size > size_gb * GiB:
            raise PoolError("volumes only grow")
        os.truncate(path, size_gb * GiB)
        loop = self._loop(path)
        if loop:
            run(["losetup", "-c", loop])

    def clone(self, source_id: str, volume_id: str, size_gb: int) -> str:
        _check_size(size_gb)
        src = self._existing(self._file(source_id), f"volume {source_id}")
        copying.copy_file(src, self._file(volume_id), size_gb * GiB, f"clone of {source_id}")
        return self.device(volume_id)

    def _existing(self, path: Path, what: str) -> Path:
        if not path.exists():
            raise PoolError(f"{what} has no file in {self.dir}")
        return path

    def snapshot(self, volume_id: str, snapshot_id: str) -> str:
        src = self._existing(self._file(volume_id), f"volume {volume_id}")
        dst = self._snapshot_file(snapshot_id)
        dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return copying.copy_file(src, dst, what=f"snapshot {snapshot_id}")

    def delete_snapshot(self, snapshot_id: str) -> None:
        path = self._snapshot_file(snapshot_id)
        path.with_name(path.name + ".partial").unlink(missing_ok=True)
        path.unlink(missing_ok=True)

    def from_snapshot(self, snapshot_id: str, volume_id: str, size_gb: int) -> str:
        _check_size(size_gb)
        src = self._existing(self._snapshot_file(snapshot_id), f"snapshot {snapshot_id}")
        copying.copy_file(src, self._file(volume_id), size_gb * GiB,
                          f"volume from snapshot {snapshot_id}")
        return self.device(volume_id)

    def revert(self, volume_id: str, snapshot_id: str, size_gb: int) -> None:
        """A copy of the snapshot replaces the volume's file; the loop device of
        the old file goes (it would keep the old data), the next use attaches one."""
        _check_size(size_gb)
        path = self._existing(self._file(volume_id), f"volume {volume_id}")
        src = self._existing(self._snapshot_file(snapshot_id), f"snapshot {snapshot_id}")
        # named for its snapshot: a revert to another snapshot never reuses it
        reverted = path.with_name(f"{path.name}.revert-{names.token('snapshot id', snapshot_id)}")
        for left in self._leftovers(path, keep=reverted):
            left.unlink(missing_ok=True)
        copying.copy_file(src, reverted, size_gb * GiB, f"revert to snapshot {snapshot_id}")
        self._detach(path)
        os.replace(reverted, path)
        copying.sync_dir(path.parent)

    def capacity(self) -> dict:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = os.statvfs(self.dir)
        # snapshots count: each is a copy, or shares extents only until either changes
        provisioned = sum(p.stat().st_size for p in (*self.dir.glob("*.img"),
                                                     *self.dir.glob("snapshots/*.img")))
        return {"total_capacity_gb": round(st.f_blocks * st.f_frsize / GiB, 2),
                "free_capacity_gb": round(st.f_bavail * st.f_frsize / GiB, 2),
                "provisioned_capacity_gb": round(provisioned / GiB, 2)}


class LvmThinPool(Pool):
    """Thin volumes in an existing LVM thin pool VG/POOL."""

    def __init__(self, vg: str, pool: str):
        self.vg, self.pool = vg, pool
        self.name = f"{vg}-{pool}"

    def _lv(self, volume_id: str) -> str:
        return f"sb-{names.token('volume id', volume_id)}"

    def device(self, volume_id: str) -> str:
        path = f"/dev/{self.vg}/{self._lv(volume_id)}"
        if not Path(path).exists():
            if not self._exists(volume_id):
                raise PoolError(f"volume {volume_id} has no LV in {self.vg}")
            run(["lvchange", "-ay", "-K", f"{self.vg}/{self._lv(volume_id)}"])
        return path

    def _exists(self, volume_id: str) -> bool:
        return self._has(self._lv(volume_id))

    def create(self, volume_id: str, size_gb: int) -> str:
        _check_size(size_gb)
        if not self._exists(volume_id):
            run(["lvcreate", "-q", "-T", f"{self.vg}/{self.pool}", "-V", f"{size_gb}g",
                 "-n", self._lv(volume_id)])
        return self.device(volume_id)

    def delete(self, volume_id: str) -> None:
        lv = self._lv(volume_id)
        # with what a revert cut short left of it
        for name in [lv] * self._has(lv) + self._named(f"{lv}-rv-") + self._named(f"{lv}-old"):
            run(["lvremove", "-q", "-f", f"{self.vg}/{name}"])

    def extend(self, volume_id: str, size_gb: int) -> None:
        _check_size(size_gb)
        run(["lvextend", "-q", "-L", f"{size_gb}g", f"{self.vg}/{self._lv(volume_id)}"])

    def _snap_lv(self, snapshot_id: str) -> str:
        return f"sbs-{names.token('snapshot id', snapshot_id)}"

    def _has(self, lv: str) -> bool:
        res = subprocess.run(["lvs", "--noheadings", f"{self.vg}/{lv}"],
                             capture_output=True, text=True)
        return res.returncode == 0

    def _thin_copy(self, source_lv: str, lv: str, size_gb: int) -> None:
        """lv as a thin snapshot of source_lv, activated like any volume (snapshots
        skip activation), grown to size_gb."""
        if not self._has(lv):
            run(["lvcreate", "-q", "-s", "-kn", "-n", lv, f"{self.vg}/{source_lv}"])
        run(["lvchange", "-q", "-ay", "-K", f"{self.vg}/{lv}"])
        current = float(run(["lvs", "--noheadings", "--units", "g", "--nosuffix", "-o",
                             "lv_size", f"{self.vg}/{lv}"]).strip())
        if size_gb > current:
            run(["lvextend", "-q", "-L", f"{size_gb}g", f"{self.vg}/{lv}"])

    def clone(self, source_id: str, volume_id: str, size_gb: int) -> str:
        _check_size(size_gb)
        if not self._has(self._lv(source_id)):
            raise PoolError(f"volume {source_id} has no LV in {self.vg}")
        self._thin_copy(self._lv(source_id), self._lv(volume_id), size_gb)
        return self.device(volume_id)

    def snapshot(self, volume_id: str, snapshot_id: str) -> str:
        """A thin snapshot: the origin's blocks at one instant, taken with the
        volume in use (crash-consistent); not activated (-ky) until a volume is
        made from it."""
        if not self._has(self._lv(volume_id)):
            raise PoolError(f"volume {volume_id} has no LV in {self.vg}")
        lv = self._snap_lv(snapshot_id)
        if not self._has(lv):
            run(["lvcreate", "-q", "-s", "-ky", "-n", lv, f"{self.vg}/{self._lv(volume_id)}"])
        return "thin"

    def delete_snapshot(self, snapshot_id: str) -> None:
        lv = self._snap_lv(snapshot_id)
        if self._has(lv):
            run(["lvremove", "-q", "-f", f"{self.vg}/{lv}"])

    def from_snapshot(self, snapshot_id: str, volume_id: str, size_gb: int) -> str:
        _check_size(size_gb)
        if not self._has(self._snap_lv(snapshot_id)):
            raise PoolError(f"snapshot {snapshot_id} has no LV in {self.vg}")
        self._thin_copy(self._snap_lv(snapshot_id), self._lv(volume_id), size_gb)
        return self.device(volume_id)

    def revert(self, volume_id: str, snapshot_id: str, size_gb: int) -> None:
        """A thin snapshot of the snapshot takes the volume's name; the old LV goes.
        Each step is checked by name, so a retry after a crash finishes the swap."""
        _check_size(size_gb)
        lv = self._lv(volume_id)
        # named for its snapshot: a revert to another snapshot never reuses it
        new, old = f"{lv}-rv-{names.token('snapshot id', snapshot_id)}", f"{lv}-old"
        if not self._has(self._snap_lv(snapshot_id)):
            raise PoolError(f"snapshot {snapshot_id} has no LV in {self.vg}")
        for other in self._named(f"{lv}-rv-"):  # an earlier revert's, cut short
            if other != new:
                run(["lvremove", "-q", "-f", f"{self.vg}/{other}"])
        if self._has(lv) and not self._has(old):
            self._thin_copy(self._snap_lv(snapshot_id), new, size_gb)
            run(["lvrename", "-q", self.vg, lv, old])
        if self._has(new):
            run(["lvrename", "-q", self.vg, new, lv])
        if self._has(old):
            run(["lvremove", "-q", "-f", f"{self.vg}/{old}"])

    def _named(self, prefix: str) -> list[str]:
        out = run(["lvs", "--noheadings", "-o", "lv_name", self.vg])
        return [n.strip() for n in out.split() if n.strip().startswith(prefix)]

    def capacity(self) -> dict:
        out = json.loads(run(["lvs", "--reportformat", "json", "--units", "g", "--nosuffix",
                              "-o", "lv_name,lv_size,data_percent,pool_lv",
                              self.vg]))["report"][0]["lv"]
        pool = next((lv for lv in out if lv["lv_name"] == self.pool), None)
        if pool is None:
            raise PoolError(f"thin pool {self.vg}/{self.pool} not found")
        total = float(pool["lv_size"])
        used = total * float(pool["data_percent"] or 0) / 100
        provisioned = sum(float(lv["lv_size"]) for lv in out if lv["pool_lv"] == self.pool)
        return {"total_capacity_gb": round(total, 2), "free_capacity_gb": round(total - used, 2),
                "provisioned_capacity_gb": round(provisioned, 2)}
