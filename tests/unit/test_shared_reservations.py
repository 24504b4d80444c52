"""One reservation domain for all hosts of an NVMe volume (`shared_reservations`):
nvmet's shared-subsystem shape on a fake configfs, and the spec through the driver
and the control plane."""
import json
import os
import subprocess

import pytest

from shareblock.cli import main as cli
from shareblock.control import config
from shareblock.control.api import Conflict, ControlPlane
from shareblock.driver import capabilities
from shareblock.targets import credentials, devmapper
from shareblock.targets.base import (Desired, HostAccess, ModeUnsupported, NotFound,
                                     ReservationsUnsupported, TargetError)
from shareblock.targets.configfs import Node
from shareblock.targets.desired import DesiredStore
from shareblock.targets.recorded import RecordedTarget
from tests.unit.fakes import (ImagePool, fake_driver, fake_kernel, fake_kernel_target,
                              snapshot)
from tests.unit.test_control import CONF_TEXT, nvme

DEV = "/dev/loop7"
VOL = "vol-1"
H = [f"nqn.2014-08.org.nvmexpress:uuid:0000000{i}-0000-4000-8000-000000000000"
     for i in range(3)]


def kit(tmp_path, monkeypatch, reservations=True, recorded=False):
    root = fake_kernel(monkeypatch, tmp_path / "configfs", reservations=reservations)
    target = fake_kernel_target(root, "nvmet_tcp")
    if recorded:
        target = RecordedTarget(target, DesiredStore(tmp_path / "node"))
    return target, root


def base(target):
    kernel = getattr(target, "kernel", target)
    return kernel.subsystem(kernel.volume_nqn(VOL))


def on_port(target) -> bool:
    kernel = getattr(target, "kernel", target)
    return (kernel.port(kernel.portals[0]) / "subsystems").has_link(kernel.volume_nqn(VOL))


def test_a_kernel_without_reservations_refuses_the_shape_and_keeps_nothing(tmp_path,
                                                                            monkeypatch):
    target, root = kit(tmp_path, monkeypatch, reservations=False, recorded=True)
    before = snapshot(root)
    assert target.shares_reservations() is False
    with pytest.raises(ReservationsUnsupported, match="Linux 6.13"):
        target.export(VOL, DEV, shared_reservations=True)
    with monkeypatch.context() as m:  # the spec is refused first, device or not
        m.setattr(devmapper, "sectors", lambda device: (_ for _ in ()).throw(
            TargetError(f"{device} does not exist")))
        with pytest.raises(ReservationsUnsupported):
            target.export(VOL, "/dev/missing", shared_reservations=True)
    assert snapshot(root) == before, "the question and the refusal leave configfs as it was"
    assert target.desired() == {}, "and no document"
    target.export(VOL, DEV)  # the per-host shape still works there
    assert target.desired()[VOL].shared_reservations is False


def test_each_process_asks_on_its_own_probe_and_a_crashs_leftover_goes(tmp_path,
                                                                         monkeypatch):
    """Control planes starting together each make their own probe subsystem (a
    shared one let one remove what another was reading: a wrong "no"). A probe a
    crashed process left is removed by the next question; a live one's is not."""
    target, root = kit(tmp_path, monkeypatch)
    subs = root / "nvmet/subsystems"
    dead = subprocess.Popen(["true"])
    dead.wait()
    prefix = f"{target.prefix}-probe:reservations-"
    for pid in (dead.pid, 1):  # 1: a process that runs
        target.subsystem(f"{prefix}{pid}-0000").create(groups=("namespaces", "allowed_hosts"))
    made = []
    create = Node.create
    monkeypatch.setattr(Node, "create", lambda node, *a, **k: made.append(node.name)
                        or create(node, *a, **k))
    assert target.shares_reservations() is True
    assert any(n.startswith(f"{prefix}{os.getpid()}-") for n in made), made
    left = sorted(n.name for n in subs.iterdir() if "probe" in n.name)
    assert left == [f"{prefix}1-0000"]


def test_every_host_joins_one_subsystem_rw_with_its_own_keys(tmp_path, monkeypatch):
    target, root = kit(tmp_path, monkeypatch, recorded=True)
    assert target.shares_reservations() is True
    assert not [n for n in (root / "nvmet/subsystems").iterdir() if "probe" in n.name]
    target.export(VOL, DEV, shared_reservations=True)
    ns = base(target) / "namespaces" / "1"
    assert (ns.read("resv_enable"), ns.read("device_path"), ns.read("enable")) == ("1", DEV, "1")
    keys = [credentials.random_dhchap() for _ in H]
    conns = [target.admit(VOL, h, "rw", k) for h, k in zip(H[:2], keys, strict=False)]
    assert {c.target for c in conns} == {base(target).name}, "one subsystem for both"
    assert len({c.uuid for c in conns}) == 1 and conns[0].nsid == 1
    assert set((base(target) / "allowed_hosts").links()) == set(H[:2]) and on_port(target)
    for h, k in zip(H[:2], keys, strict=False):  # each host its own DH-HMAC-CHAP key
        assert (root / "nvmet/hosts" / h / "dhchap_key").read_text() == k.dhchap_key
    assert target.modes(VOL) == {H[0]: "rw", H[1]: "rw"}
    seen = target.actual(VOL)[VOL]
    assert set(seen.hosts) == set(H[:2]) and seen.device == DEV and not seen.problems
    assert target.connection(VOL, H[1]).target == base(target).name
    assert target.desired()[VOL].shared_reservations is True
    with pytest.raises(NotFound):
        target.connection(VOL, H[2])
    assert not list((root / "nvmet/subsystems").glob("*:h-*")), "no per-host subsystem"


def test_no_host_of_it_can_be_read_only_and_a_refusal_changes_nothing(tmp_path, monkeypatch):
    target, root = kit(tmp_path, monkeypatch, recorded=True)
    target.export(VOL, DEV, shared_reservations=True)
    target.admit(VOL, H[0], "rw", credentials.random_dhchap())
    before, docs = snapshot(root), target.desired()
    with pytest.raises(ModeUnsupported, match="no per-host write protect"):
        target.admit(VOL, H[1], "ro", credentials.random_dhchap())
    with pytest.raises(ModeUnsupported):
        target.set_mode(VOL, H[0], "ro")
    assert snapshot(root) == before and target.desired() == docs
    target.set_mode(VOL, H[0], "rw")  # already so: nothing to do
    with pytest.raises(NotFound):
        target.set_mode(VOL, H[1], "rw")


def test_revoke_ends_every_controller_and_readmits_the_others(tmp_path, monkeypatch):
    target, root = kit(tmp_path, monkeypatch)
    target.export(VOL, DEV, shared_reservations=True)
    for h in H[:2]:
        target.admit(VOL, h, "rw", credentials.random_dhchap())
    steps = []
    unlink, link = Node.unlink, Node.link
    monkeypatch.setattr(Node, "unlink", lambda self, name: (
        steps.append(("unlink", self.path.parent.parent.name, name)), unlink(self, name)))
    monkeypatch.setattr(Node, "link", lambda self, name, to: (
        steps.append(("link", self.path.parent.parent.name, name)), link(self, name, to)))
    target.revoke(VOL, H[0])
    nqn = base(target).name
    assert steps == [("unlink", "ports", nqn), ("unlink", "subsystems", H[0]),
                     ("link", "ports", nqn)], "off the port (controllers end), out, back on"
    assert set((base(target) / "allowed_hosts").links()) == {H[1]} and on_port(target)
    assert not (root / "nvmet/hosts" / H[0]).exists() and (root / "nvmet/hosts" / H[1]).exists()
    steps.clear()
    target.revoke(VOL, H[0])  # again: nobody's controllers end for nothing
    assert [s for s in steps if s[0] == "unlink"] == []
    target.revoke(VOL, H[1])  # the last one: the subsystem stays off the ports
    assert not on_port(target) and not (base(target) / "allowed_hosts").links()


def test_a_revoke_cut_short_after_the_ports_converges_when_retried(tmp_path, monkeypatch):
    target, root = kit(tmp_path, monkeypatch)
    target.export(VOL, DEV, shared_reservations=True)
    for h in H[:2]:
        target.admit(VOL, h, "rw", credentials.random_dhchap())
    kernel = target
    (kernel.port(kernel.portals[0]) / "subsystems").unlink(base(target).name)  # the crash
    assert any("on no port" in p for p in target.actual(VOL)[VOL].problems)
    target.revoke(VOL, H[0])
    assert set(target.modes(VOL)) == {H[1]} and on_port(target)
    assert not target.actual(VOL)[VOL].problems


def test_the_shape_changes_only_with_no_host_admitted(tmp_path, monkeypatch):
    target, root = kit(tmp_path, monkeypatch)
    target.export(VOL, DEV)
    target.admit(VOL, H[0], "rw", credentials.random_dhchap())
    before = snapshot(root)
    with pytest.raises(TargetError, match="detach them first"):
        target.export(VOL, DEV, shared_reservations=True)
    assert snapshot(root) == before
    target.revoke(VOL, H[0])
    target.export(VOL, DEV, shared_reservations=True)
    assert (base(target) / "namespaces" / "1").read("resv_enable") == "1"
    target.admit(VOL, H[1], "rw", credentials.random_dhchap())
    with pytest.raises(TargetError, match="detach them first"):
        target.export(VOL, DEV)
    target.revoke(VOL, H[1])
    target.export(VOL, DEV)
    assert (base(target) / "namespaces" / "1").read("resv_enable") == "0"


def test_unexport_takes_the_hosts_and_ports_with_it(tmp_path, monkeypatch):
    target, root = kit(tmp_path, monkeypatch)
    empty = snapshot(root)
    target.export(VOL, DEV, shared_reservations=True)
    for h in H[:2]:
        target.admit(VOL, h, "rw", credentials.random_dhchap())
    target.unexport(VOL)
    left = {k for k in snapshot(root) if k not in empty}
    assert all(k.startswith("nvmet/ports/") for k in left), left  # the port itself stays
    assert not [k for k in left if "/subsystems/" in k]


def test_restore_replays_the_shape_from_the_document(tmp_path, monkeypatch):
    target, root = kit(tmp_path, monkeypatch)
    keys = credentials.random_dhchap()
    doc = Desired(VOL, DEV, [HostAccess(H[0], "rw", keys)], shared_reservations=True)
    assert Desired.from_dict(doc.to_dict(secrets=True)) == doc
    assert Desired.from_dict({**doc.to_dict(), "shared_reservations": "yes"}
                             ).shared_reservations is False, "only true is true"
    target.restore([doc])
    assert target.modes(VOL) == {H[0]: "rw"} and on_port(target)
    assert (base(target) / "namespaces" / "1").read("resv_enable") == "1"


def test_the_spec_reads_as_cinder_reads_capabilities():
    assert capabilities.shares_reservations({"shared_reservations": "<is> True"})
    assert capabilities.shares_reservations({"capabilities:shared_reservations": "<is> true"})
    assert not capabilities.shares_reservations({"shared_reservations": "<is> False"})
    assert not capabilities.shares_reservations({})
    stats = {"pools": [{"shared_reservations": False}]}
    assert "shared_reservations=False" in capabilities.mismatch(
        stats, {"shared_reservations": "<is> True"})


def make_plane(tmp_path, monkeypatch, reservations: bool) -> ControlPlane:
    root = fake_kernel(monkeypatch, tmp_path / "configfs", reservations=reservations)
    state = tmp_path / "state"
    path = tmp_path / "shareblock.conf"
    path.write_text(CONF_TEXT.format(state=state, policy=""))
    drivers = {name: fake_driver(root, state, proto, name)
               for name, proto in (("lio", "iscsi"), ("nvme", "nvmet_tcp"))}
    return ControlPlane(config.load(str(path)), user="root", drivers=drivers)


@pytest.fixture
def plane(tmp_path, monkeypatch):
    cp = make_plane(tmp_path, monkeypatch, reservations=True)
    for name, spec in (("cluster", {"shared_reservations": "<is> True"}), ("private", {})):
        cp.type_create(name)
        cp.type_key(name, "set", {"multiattach": "<is> True", "storage_protocol": "NVMe-oF",
                                  **spec})
    return cp


def test_the_driver_reports_the_capability_and_exports_the_types_shape(plane):
    drv = plane.driver("nvme")
    assert drv.get_volume_stats(refresh=True)["pools"][0]["shared_reservations"] is True
    assert plane.driver("lio").get_volume_stats(refresh=True)["shared_reservations"] is True
    vol = plane.create(1, "cluster")
    plane.attachment_create(vol["id"], nvme(1))
    plane.attachment_create(vol["id"], nvme(2))
    seen = drv.exports(vol["id"])[vol["id"]]
    assert set(seen.hosts) == {nvme(1)["nqn"], nvme(2)["nqn"]}
    assert drv.recorded_exports()[vol["id"]].shared_reservations is True
    with pytest.raises(Conflict, match="no per-host write protect"):
        plane.attachment_create(vol["id"], nvme(3), mode="ro")


def test_retype_that_reshapes_an_attached_nvme_volume_is_refused(plane):
    vol = plane.create(1, "private")
    att = plane.attachment_create(vol["id"], nvme(1))
    with pytest.raises(Conflict, match="shared_reservations"):
        plane.retype(vol["id"], "cluster")
    assert plane.show(vol["id"])["volume_type"] == "private"
    plane.attachment_delete(att["id"])
    plane.retype(vol["id"], "cluster")
    plane.attachment_create(vol["id"], nvme(1))
    drv = plane.driver("nvme")
    assert drv.recorded_exports()[vol["id"]].shared_reservations is True


def test_a_kernel_without_reservations_fails_the_types_scheduling(tmp_path, monkeypatch,
                                                                   caplog):
    cp = make_plane(tmp_path, monkeypatch, reservations=False)
    cp.type_create("cluster")
    cp.type_key("cluster", "set", {"storage_protocol": "NVMe-oF",
                                   "shared_reservations": "<is> True"})
    vol = cp.create(1, "cluster")  # as under Cinder: the volume goes to error
    assert cp.show(vol["id"])["status"] == "error"
    assert "nvme reports shared_reservations=False, not <is> True" in caplog.text


def test_the_guard_cannot_demote_there_so_it_refuses_or_warns(plane, tmp_path):
    """ext4 on a shared-reservations NVMe volume: a second writer's attach is refused
    with the guard's reason; a pass over two writers already there warns instead of
    failing, and the event says why nobody was demoted."""
    plane.driver("nvme").pool = ImagePool(tmp_path, image_mb=64)
    vol = plane.create(1, "cluster")
    device = plane.driver("nvme").pool.device(vol["id"])
    first = [plane.attachment_create(vol["id"], nvme(n)) for n in (1, 2)]
    subprocess.run(["mkfs.ext4", "-q", device], check=True)
    with pytest.raises(Conflict, match="guard gives it ro: .*ext4"):
        plane.attachment_create(vol["id"], nvme(3))
    assert set(plane.driver("nvme").exports(vol["id"])[vol["id"]].hosts) == {
        nvme(1)["nqn"], nvme(2)["nqn"]}, "the refused host was never admitted"
    for att in first:
        plane.attachment_complete(att["id"])
    done = plane.guard_pass()
    assert [(d["host"], d["action"]) for d in done] == [(nvme(2)["nqn"], "warned")]
    assert "not demoted" in done[0]["reason"]
    assert {a["attach_mode"] for a in plane.attachment_list()} == {"rw"}
    assert [e["action"] for e in plane.events(vol["id"])] == ["warned"]


def test_get_pools_lists_each_backends_capabilities_as_cinder_does(plane, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setattr("shareblock.control.api.ControlPlane", lambda conf: plane)
    monkeypatch.setenv("SHAREBLOCK_CONFIG", str(tmp_path / "shareblock.conf"))
    rc, out, err = cli.run_captured(["get-pools", "--json"])
    assert rc == 0, err
    assert [p["name"].split("@", 1)[1] for p in json.loads(out)] == ["lio#pool", "nvme#pool"]
    assert all("capabilities" not in p for p in json.loads(out))
    rc, out, err = cli.run_captured(["--json", "get-pools", "--detail"])
    caps = {p["name"].split("@", 1)[1]: p["capabilities"] for p in json.loads(out)}
    assert caps["nvme#pool"]["shared_reservations"] is True
    assert caps["nvme#pool"]["storage_protocol"] == "NVMe-oF"
    assert caps["lio#pool"]["multiattach"] is True
    rc, out, err = cli.run_captured(["get-pools", "--detail"])
    assert rc == 0 and out.count("| name ") == 2 and "shared_reservations" in out
    plane.user, plane.roles = "alice", ["member"]
    rc, out, err = cli.run_captured(["get-pools"])
    assert rc != 0 and "get_pools" in err, "admin only, as in Cinder"
