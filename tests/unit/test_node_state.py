"""The storage node's desired state: one private document per volume, written
before configfs, put back on a refusal, and replayed by apply and restore."""
import json
import os
import stat

import pytest

from shareblock.targets import credentials, crashpoints, names
from shareblock.targets.base import Desired, HostAccess, NotFound
from shareblock.targets.desired import BadDocument, DesiredStore
from shareblock.targets.recorded import RecordedTarget
from tests.unit.fakes import fake_kernel, fake_kernel_target, snapshot

VOL, DEV = "vol-1", "/dev/loop7"


@pytest.fixture(params=["iscsi", "nvmet_tcp"])
def node(request, tmp_path, monkeypatch):
    root = fake_kernel(monkeypatch, tmp_path / "configfs")
    target = RecordedTarget(fake_kernel_target(root, request.param),
                            DesiredStore(tmp_path / "node"))
    if request.param == "iscsi":
        hosts = [f"iqn.2026-11.io.test:h{i}" for i in range(2)]
        creds = [credentials.random_chap(f"h{i}") for i in range(2)]
    else:
        hosts = [f"nqn.2026-11.io.test:h{i}" for i in range(2)]
        creds = [credentials.random_dhchap() for _ in range(2)]
    return target, root, hosts, creds


def doc(target):
    return json.loads(target.store.path(target.protocol, VOL).read_text())


def test_each_change_is_in_the_volumes_document(node):
    target, root, hosts, creds = node
    target.export(VOL, DEV, backing="/pool/vol-1.img")
    target.admit(VOL, hosts[0], "rw", creds[0])
    target.admit(VOL, hosts[1], "ro", creds[1])
    target.set_mode(VOL, hosts[0], "ro")
    d = doc(target)
    assert (d["protocol"], d["prefix"], d["device"], d["backing"]) == (
        target.protocol, target.prefix, DEV, "/pool/vol-1.img")
    assert d["portals"] == [{"address": p.address, "port": p.port} for p in target.portals]
    assert d["port_ids"] == ([target.port_ids[p] for p in target.portals]
                             if target.protocol == "nvmet_tcp" else None)
    assert [(h["host"], h["mode"]) for h in d["hosts"]] == [(hosts[0], "ro"), (hosts[1], "ro")]
    assert d["hosts"][1]["credentials"] == creds[1].to_dict()
    target.revoke(VOL, hosts[0])
    assert [h["host"] for h in doc(target)["hosts"]] == [hosts[1]]
    assert target.desired() == {VOL: Desired.from_dict(doc(target))}
    target.unexport(VOL)
    assert target.desired() == {} and not target.store.path(target.protocol, VOL).exists()


def test_documents_are_private_and_one_per_volume(node):
    target, root, hosts, creds = node
    for vid in ("vol-1", "vol-2"):
        target.export(vid, DEV)
        target.admit(vid, hosts[0], "rw", creds[0])
    folder = target.store.path(target.protocol, VOL).parent
    assert sorted(p.name for p in folder.glob("*.json")) == ["vol-1.json", "vol-2.json"]
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    for path in folder.glob("*.json"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_refused_change_leaves_document_and_configfs_as_they_were(node):
    target, root, hosts, creds = node
    target.export(VOL, DEV)
    target.admit(VOL, hosts[0], "rw", creds[0])
    before, saved = snapshot(root), doc(target)
    wrong = credentials.random_dhchap() if target.protocol == "iscsi" else creds[0].__class__(
        user="u", secret="s")
    with pytest.raises(names.InvalidName):
        target.admit(VOL, hosts[1], "rw", wrong)
    with pytest.raises(names.InvalidName):
        target.admit(VOL, "not a host", "rw", creds[1])
    with pytest.raises(names.InvalidName):
        target.set_mode(VOL, hosts[0], "rx")
    with pytest.raises(NotFound):
        target.admit("vol-unknown", hosts[1], "rw", creds[1])
    assert snapshot(root) == before and doc(target) == saved
    assert not target.store.path(target.protocol, "vol-unknown").exists()


def test_a_crash_after_the_document_is_converged_by_apply(node):
    target, root, hosts, creds = node
    target.export(VOL, DEV)
    crashpoints.arm(1, action="raise")
    with pytest.raises(crashpoints.Crash):
        target.admit(VOL, hosts[0], "rw", creds[0])
    assert target.actual(VOL)[VOL].hosts == {}, "configfs not reached"
    assert [h["host"] for h in doc(target)["hosts"]] == [hosts[0]], "the document is ahead"
    target.apply(list(target.desired().values()))
    assert {h: s.mode for h, s in target.actual(VOL)[VOL].hosts.items()} == {hosts[0]: "rw"}


def test_apply_records_and_converges_a_batch(node):
    target, root, hosts, creds = node
    target.export(VOL, DEV)
    target.admit(VOL, hosts[1], "rw", creds[1])
    batch = [Desired(VOL, DEV, [HostAccess(hosts[0], "ro", creds[0])]),
             Desired("vol-2", DEV, [HostAccess(hosts[1], "rw", creds[1])])]
    target.apply(batch)
    assert target.desired() == {d.volume_id: d for d in batch}
    seen = target.actual()
    assert {v: {h: s.mode for h, s in e.hosts.items()} for v, e in seen.items()} == {
        VOL: {hosts[0]: "ro"}, "vol-2": {hosts[1]: "rw"}}


def test_another_prefix_documents_are_not_this_targets(node, tmp_path):
    target, root, hosts, creds = node
    target.export(VOL, DEV)
    other = RecordedTarget(fake_kernel_target(root, target.protocol,
                                              prefix=target.prefix + ".other"), target.store)
    assert other.desired() == {} and set(target.desired()) == {VOL}


def test_a_foreign_file_is_a_clear_error(tmp_path):
    store = DesiredStore(tmp_path)
    (tmp_path / "iscsi").mkdir()
    (tmp_path / "iscsi" / "vol-1.json").write_text('{"volume_id": "vol-1"}')
    with pytest.raises(BadDocument, match="not a shareblock desired-state document"):
        store.documents()
    (tmp_path / "iscsi" / "vol-1.json").write_text("{")
    with pytest.raises(BadDocument):
        store.load("iscsi", "vol-1")
    with pytest.raises(names.InvalidName):
        store.path("iscsi", "../etc")


def test_a_batch_of_unchanged_documents_writes_nothing(node):
    """Reconcile and the boot-time restore replay what the node already holds: the
    documents stay as they are (no rewrite, no fsync per volume)."""
    target, root, hosts, creds = node
    target.export(VOL, DEV)
    target.admit(VOL, hosts[0], "rw", creds[0])
    path = target.store.path(target.protocol, VOL)
    before = path.stat().st_ino
    target.apply(list(target.desired().values()))
    target.restore(list(target.desired().values()))
    assert path.stat().st_ino == before, "the unchanged document was not rewritten"
    changed = target.desired()[VOL]
    changed.hosts[0].mode = "ro"
    target.apply([changed])
    assert path.stat().st_ino != before and doc(target)["hosts"][0]["mode"] == "ro"
