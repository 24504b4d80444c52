"""`shareblock-restore` (targets/restore.py): the node's documents replayed with no
control plane; a bad document or a volume that fails never keeps the others back."""
import pytest

from shareblock.targets import credentials
from shareblock.targets import restore as restore_mod
from shareblock.targets.base import TargetError
from shareblock.targets.desired import DesiredStore
from shareblock.targets.recorded import RecordedTarget
from tests.unit.fakes import fake_kernel, fake_kernel_target

VOLS = ("vol-1", "vol-2", "vol-3")


@pytest.fixture(params=["iscsi", "nvmet_tcp"])
def node(request, tmp_path, monkeypatch):
    """Three volumes exported to one host each, then a reboot: configfs emptied, the
    node's documents kept. The restore's kernel target is the fake one."""
    protocol = request.param
    root = fake_kernel(monkeypatch, tmp_path / "configfs")
    kernel = fake_kernel_target(root, protocol)
    state = tmp_path / "node"
    target = RecordedTarget(kernel, DesiredStore(state))
    host = ("iqn.2026-11.io.test:h1" if protocol == "iscsi" else "nqn.2026-11.io.test:h1")
    creds = (credentials.random_chap("h1") if protocol == "iscsi"
             else credentials.random_dhchap())
    for i, vid in enumerate(VOLS):
        target.export(vid, f"/dev/loop{i}")
        target.admit(vid, host, "rw", creds)
    for vid in VOLS:
        kernel.unexport(vid)
    assert kernel.actual() == {}
    loaded = []
    monkeypatch.setattr(restore_mod, "load_modules", lambda protocols: loaded.append(
        set(protocols)))
    monkeypatch.setattr(restore_mod.loopdev, "attached", lambda: {})
    monkeypatch.setattr(restore_mod, "local_target",
                        lambda *args, **kwargs: RecordedTarget(kernel, DesiredStore(state)))
    return kernel, state, host, loaded


def test_every_document_is_replayed_and_the_modules_loaded(node, monkeypatch):
    kernel, state, host, loaded = node
    monkeypatch.setattr(restore_mod, "device_for", lambda want, loops: want.device)
    report = restore_mod.restore(str(state))
    assert (report["exports"], report["hosts"], report["failed"]) == (3, 3, [])
    assert loaded == [{kernel.protocol}]
    assert {v: set(e.hosts) for v, e in kernel.actual().items()} == {v: {host} for v in VOLS}
    heard = []
    monkeypatch.setattr(restore_mod, "PROGRESS_CHUNK", 2)
    assert restore_mod.restore(str(state), lambda *a: heard.append(a))["exports"] == 3, \
        "a second run is harmless"
    assert heard == [(2, 3), (3, 3)], "progress by chunk, to the total"
    last = DesiredStore(state).last_restore()
    assert (last["exports"], last["hosts"], last["failed"]) == (3, 3, 0) and last["at"] > 0


def test_a_bad_document_a_missing_device_and_a_refusal_hold_back_only_themselves(
        node, monkeypatch):
    kernel, state, host, loaded = node
    folder = next(p for p in state.iterdir() if p.is_dir())
    (folder / "stray.json").write_text("{not json")

    def device_for(want, loops):
        if want.volume_id == "vol-1":
            raise restore_mod.DeviceMissing("volume vol-1: device /dev/loop0 is missing")
        return want.device
    monkeypatch.setattr(restore_mod, "device_for", device_for)
    admit = kernel.admit

    def refusing(volume_id, *args, **kwargs):
        if volume_id == "vol-2":
            raise TargetError("refused by the kernel")
        return admit(volume_id, *args, **kwargs)
    monkeypatch.setattr(kernel, "admit", refusing)
    report = restore_mod.restore(str(state))
    failed = {f["volume_id"]: f["error"] for f in report["failed"]}
    assert set(failed) == {None, "vol-1", "vol-2"}
    assert "stray.json" in failed[None] and "missing" in failed["vol-1"]
    assert report["exports"] == 1
    assert set(kernel.actual()["vol-3"].hosts) == {host}
    assert restore_mod.main(["--state-dir", str(state)]) == 1, "failures make a non-zero exit"
