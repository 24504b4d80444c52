"""File-pool copies (reflink or sparse copy, crash-safe) and the pools' snapshot,
volume-from-snapshot and revert steps, without loop devices or LVM: files in a
temporary folder, LVM's commands recorded."""
import hashlib
import logging
import os
import stat

import pytest

from shareblock.driver import copying, pools

MiB = 1 << 20


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def sparse_file(path, size, chunks):
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in chunks:
            f.seek(offset)
            f.write(data)


def test_copy_keeps_data_and_holes_and_is_private(tmp_path):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    sparse_file(src, 64 * MiB, [(0, b"a" * 4096), (40 * MiB, os.urandom(MiB))])
    how = copying.copy_file(src, dst, 96 * MiB)
    assert how in ("reflink", "copy")
    assert dst.stat().st_size == 96 * MiB
    with open(src, "rb") as a, open(dst, "rb") as b:
        assert a.read() == b.read(64 * MiB) and b.read() == b"\0" * (32 * MiB)
    assert stat.S_IMODE(dst.stat().st_mode) == 0o600
    if how == "copy":  # holes stay holes: far less allocated than the apparent size
        assert dst.stat().st_blocks * 512 < 8 * MiB
    assert not (tmp_path / "dst.img.partial").exists()


def test_copy_of_a_finished_copy_is_a_no_op_and_a_leftover_partial_is_redone(tmp_path):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    sparse_file(src, 8 * MiB, [(MiB, b"x" * 512)])
    (tmp_path / "dst.img.partial").write_bytes(b"torn")  # a crash mid-copy
    os.chmod(tmp_path / "dst.img.partial", 0o644)
    copying.copy_file(src, dst)
    assert digest(src) == digest(dst) and stat.S_IMODE(dst.stat().st_mode) == 0o600
    sparse_file(src, 8 * MiB, [(0, b"changed")])
    assert copying.copy_file(src, dst) == "done" and digest(src) != digest(dst)


def test_a_long_plain_copy_reports_progress(tmp_path, monkeypatch, caplog):
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    sparse_file(src, 32 * MiB, [(0, os.urandom(16 * MiB))])
    monkeypatch.setattr(copying, "_reflink", lambda a, b: False)
    monkeypatch.setattr(copying, "PROGRESS_EVERY", 0.0)
    monkeypatch.setattr(copying, "CHUNK", MiB)
    with caplog.at_level(logging.INFO, logger="shareblock.progress"):
        assert copying.copy_file(src, dst, what="snapshot s") == "copy"
    lines = [r.getMessage() for r in caplog.records]
    assert any("snapshot s: 8 of 16 MiB copied (50%)" in m for m in lines)
    assert digest(src) == digest(dst)


@pytest.fixture
def file_pool(tmp_path, monkeypatch):
    """A file pool whose loop devices are names only (this kernel may have none)."""
    pool = pools.FilePool(str(tmp_path / "vols"))
    attached = {}
    monkeypatch.setattr(pool, "_loop", lambda path: attached.get(path.name))

    def attach(path):
        attached[path.name] = f"/dev/loop-{path.name}"
        return attached[path.name]
    monkeypatch.setattr(pool, "_attach", attach)
    detached = []
    monkeypatch.setattr(pools.loopdev, "detach", lambda dev: detached.append(dev)
                        or attached.pop(dev.removeprefix("/dev/loop-")))
    pool.detached = detached
    return pool


def test_file_pool_snapshot_volume_from_it_and_revert(file_pool):
    file_pool.create("v", 1)
    path = file_pool._file("v")
    sparse_file(path, 1 << 30, [(0, b"one" * 100)])
    assert file_pool.snapshot("v", "s") in ("reflink", "copy")
    first = digest(path)
    sparse_file(path, 1 << 30, [(0, b"two" * 100)])
    assert file_pool.from_snapshot("s", "w", 2) == "/dev/loop-w.img"
    assert file_pool._file("w").stat().st_size == 2 << 30
    with open(file_pool._file("w"), "rb") as f:
        assert f.read(300) == b"one" * 100
    file_pool.revert("v", "s", 1)
    assert digest(path) == first and file_pool.detached == ["/dev/loop-v.img"]
    assert file_pool.capacity()["provisioned_capacity_gb"] == 4.0  # v, w, and s
    file_pool.delete_snapshot("s")
    file_pool.delete_snapshot("s")  # idempotent
    assert not file_pool._snapshot_file("s").exists()
    with pytest.raises(pools.PoolError, match="snapshot s"):
        file_pool.from_snapshot("s", "x", 1)
    with pytest.raises(pools.PoolError, match="volume nope"):
        file_pool.snapshot("nope", "t")


class FakeLvm:
    """LVM's names as a set; lvcreate/lvrename/lvremove change it, `crash_at`
    stops the run at the n-th command (a crash), as after a power loss."""

    def __init__(self, vg, lvs):
        self.vg, self.lvs, self.log, self.crash_at = vg, set(lvs), [], None

    def run(self, cmd):
        if self.crash_at is not None and len(self.log) == self.crash_at:
            raise SystemExit("crash")
        self.log.append(cmd)
        if cmd[0] == "lvcreate":
            self.lvs.add(cmd[cmd.index("-n") + 1])
        elif cmd[0] == "lvrename":
            self.lvs.remove(cmd[-2])
            self.lvs.add(cmd[-1])
        elif cmd[0] == "lvremove":
            self.lvs.remove(cmd[-1].split("/")[1])
        elif cmd[0] == "lvs" and "lv_name" in cmd:
            return "".join(f"  {lv}\n" for lv in sorted(self.lvs))
        elif cmd[0] == "lvs":
            return "1.00\n"
        return ""

    def has(self, lv):
        return lv in self.lvs


@pytest.mark.parametrize("crash_at", [None, 1, 2, 3, 4, 5])
def test_lvm_revert_converges_after_a_crash_at_any_step(monkeypatch, crash_at):
    lvm = FakeLvm("vg", {"sb-v", "sbs-s"})
    pool = pools.LvmThinPool("vg", "thin")
    monkeypatch.setattr(pools, "run", lvm.run)
    monkeypatch.setattr(pool, "_has", lvm.has)
    lvm.crash_at = crash_at
    try:
        pool.revert("v", "s", 1)
    except SystemExit:
        lvm.crash_at = None
        pool.revert("v", "s", 1)  # the retry
    assert lvm.lvs == {"sb-v", "sbs-s"}
    made = [c for c in lvm.log if c[0] == "lvcreate"]
    assert made and all(c[-1] == "vg/sbs-s" for c in made)


def test_lvm_snapshot_is_thin_and_not_activated(monkeypatch):
    lvm = FakeLvm("vg", {"sb-v"})
    pool = pools.LvmThinPool("vg", "thin")
    monkeypatch.setattr(pools, "run", lvm.run)
    monkeypatch.setattr(pool, "_has", lvm.has)
    assert pool.snapshot("v", "s") == "thin"
    assert pool.snapshot("v", "s") == "thin"  # idempotent
    assert lvm.log == [["lvcreate", "-q", "-s", "-ky", "-n", "sbs-s", "vg/sb-v"]]
    pool.delete_snapshot("s")
    pool.delete_snapshot("s")
    assert lvm.lvs == {"sb-v"}
    with pytest.raises(pools.PoolError):
        pool.snapshot("gone", "t")


def test_lvm_revert_to_another_snapshot_never_reuses_a_leftover_and_delete_clears_all(
        monkeypatch):
    lvm = FakeLvm("vg", {"sb-v", "sbs-a", "sbs-c"})
    pool = pools.LvmThinPool("vg", "thin")
    monkeypatch.setattr(pools, "run", lvm.run)
    monkeypatch.setattr(pool, "_has", lvm.has)
    lvm.crash_at = 2  # the revert to a made its copy, then stopped
    with pytest.raises(SystemExit):
        pool.revert("v", "a", 1)
    lvm.crash_at = None
    assert "sb-v-rv-a" in lvm.lvs
    lvm.log.clear()
    pool.revert("v", "c", 1)
    made = [c for c in lvm.log if c[0] == "lvcreate"]
    assert [c[-1] for c in made] == ["vg/sbs-c"], "c's data, not a's leftover"
    assert lvm.lvs == {"sb-v", "sbs-a", "sbs-c"}
    lvm.lvs |= {"sb-v-rv-a", "sb-v-old"}  # what another crash could leave
    pool.delete("v")
    assert lvm.lvs == {"sbs-a", "sbs-c"}


def test_file_revert_to_another_snapshot_never_reuses_a_leftover(file_pool, monkeypatch):
    file_pool.create("v", 1)
    path = file_pool._file("v")
    for sid, data in (("a", b"aaaa"), ("c", b"cccc")):
        sparse_file(path, 1 << 30, [(0, data)])
        file_pool.snapshot("v", sid)
    sparse_file(path, 1 << 30, [(0, b"live")])

    def failing(dev):
        raise OSError(16, "Device or resource busy")
    with monkeypatch.context() as m:
        m.setattr(pools.loopdev, "detach", failing)
        file_pool.device("v")
        with pytest.raises(pools.PoolError, match="cannot detach"):
            file_pool.revert("v", "a", 1)
    assert list(path.parent.glob("v.img.revert-*")), "a's copy is left behind"
    file_pool.revert("v", "c", 1)
    with open(path, "rb") as f:
        assert f.read(4) == b"cccc"
    assert not list(path.parent.glob("v.img.*"))
    (path.parent / "v.img.revert-x.partial").write_bytes(b"torn")
    file_pool.delete("v")
    assert not list(path.parent.glob("v.img*"))
