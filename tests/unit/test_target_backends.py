"""Both backends on a fake configfs tree: every operation, bad input, idempotency."""
import pytest

from shareblock.targets import credentials, names
from shareblock.targets.base import (Credentials, Desired, HostAccess, NotFound, Portal,
                                     TargetError)
from shareblock.targets.nvmet import NvmetTarget
from shareblock.targets.configfs import Node
from shareblock.targets.desired import DesiredStore
from shareblock.targets.recorded import RecordedTarget
from tests.unit.fakes import FakeDm, fake_kernel, fake_kernel_target, snapshot

DEV = "/dev/loop7"
VOL = "vol-1"


@pytest.fixture(params=["iscsi", "nvmet_tcp", "iscsi-recorded", "nvmet_tcp-recorded"])
def kit(request, tmp_path, monkeypatch):
    """Each backend bare, and as the node runs it: recording its desired state."""
    protocol, _, recorded = request.param.partition("-")
    root = fake_kernel(monkeypatch, tmp_path / "configfs")
    if protocol == "iscsi":
        # rtslib-fb makes and deletes exports; it needs a real kernel (hardware tests).
        target = fake_kernel_target(root, protocol,
                                    [Portal("127.0.0.1", 3260), Portal("::1", 3260)])
        hosts = [f"iqn.2026-11.io.test:host-{i}" for i in range(3)]
        creds = [credentials.random_chap(f"h{i}") for i in range(3)]
    else:
        target = fake_kernel_target(root, protocol)
        hosts = [f"nqn.2014-08.org.nvmexpress:uuid:0000000{i}-0000-4000-8000-000000000000"
                 for i in range(3)]
        creds = [credentials.random_dhchap() for _ in range(3)]
    if recorded:
        target = RecordedTarget(target, DesiredStore(tmp_path / "node"))
    target.export(VOL, DEV)
    return target, root, hosts, creds


def modes(target):
    return {h: s.mode for h, s in target.actual(VOL)[VOL].hosts.items()}


def test_admit_each_host_with_its_mode_and_read_back(kit):
    target, root, hosts, creds = kit
    conn = target.admit(VOL, hosts[0], "rw", creds[0])
    target.admit(VOL, hosts[1], "ro", creds[1])
    assert modes(target) == {hosts[0]: "rw", hosts[1]: "ro"}
    assert conn.mode == "rw" and conn.portals == target.portals
    assert target.connection(VOL, hosts[1]).mode == "ro"
    assert target.modes(VOL) == modes(target), "the cheap read-back says the same"
    assert target.modes("vol-none") == {}
    seen = target.actual()
    assert list(seen) == [VOL] and seen[VOL].device == DEV and not seen[VOL].problems


def test_admit_twice_changes_nothing(kit):
    target, root, hosts, creds = kit
    target.admit(VOL, hosts[0], "rw", creds[0])
    before = snapshot(root)
    target.admit(VOL, hosts[0], "rw", creds[0])
    assert snapshot(root) == before


def test_set_mode_touches_only_that_host(kit):
    target, root, hosts, creds = kit
    target.admit(VOL, hosts[0], "rw", creds[0])
    target.admit(VOL, hosts[1], "rw", creds[1])
    target.set_mode(VOL, hosts[1], "ro")
    assert modes(target) == {hosts[0]: "rw", hosts[1]: "ro"}
    target.set_mode(VOL, hosts[1], "rw")
    assert modes(target) == {hosts[0]: "rw", hosts[1]: "rw"}
    with pytest.raises(NotFound):
        target.set_mode(VOL, hosts[2], "ro")


def test_revoke_keeps_the_others_and_is_idempotent(kit):
    target, root, hosts, creds = kit
    for i in range(3):
        target.admit(VOL, hosts[i], "rw", creds[i])
    target.revoke(VOL, hosts[1])
    target.revoke(VOL, hosts[1])
    assert set(modes(target)) == {hosts[0], hosts[2]}
    with pytest.raises(NotFound):
        target.connection(VOL, hosts[1])


@pytest.mark.parametrize("bad", ["", "../../etc", "iqn.2026-11.io.x:a/b", "x\n", "nqn.x"])
def test_bad_host_is_refused_and_changes_nothing(kit, bad):
    target, root, hosts, creds = kit
    target.admit(VOL, hosts[0], "rw", creds[0])
    before = snapshot(root)
    for op in (lambda: target.admit(VOL, bad, "rw", creds[1]),
               lambda: target.set_mode(VOL, bad, "ro"),
               lambda: target.revoke(VOL, bad)):
        with pytest.raises(names.InvalidName):
            op()
    assert snapshot(root) == before


@pytest.mark.parametrize("volume", ["", "..", "a/b", "vol 1", "-v"])
def test_bad_volume_is_refused_and_changes_nothing(kit, volume):
    target, root, hosts, creds = kit
    before = snapshot(root)
    with pytest.raises(names.InvalidName):
        target.admit(volume, hosts[0], "rw", creds[0])
    assert snapshot(root) == before


def test_bad_mode_and_credentials_change_nothing(kit):
    target, root, hosts, creds = kit
    before = snapshot(root)
    with pytest.raises(names.InvalidName):
        target.admit(VOL, hosts[0], "wo", creds[0])
    wrong_kind = (Credentials(dhchap_key=credentials.random_dhchap_secret())
                  if target.protocol == "iscsi" else credentials.random_chap("x"))
    with pytest.raises(names.InvalidName):
        target.admit(VOL, hosts[0], "rw", wrong_kind)
    assert snapshot(root) == before


def test_unknown_volume(kit):
    target, root, hosts, creds = kit
    with pytest.raises(NotFound):
        target.admit("vol-unknown", hosts[0], "rw", creds[0])


def test_unexport_then_restore_round_trips(kit, tmp_path):
    target, root, hosts, creds = kit
    desired = Desired(VOL, DEV, [HostAccess(hosts[0], "rw", creds[0]),
                                 HostAccess(hosts[1], "ro", creds[1])])
    target.restore([desired])
    full = snapshot(root)
    target.unexport(VOL)
    assert VOL not in target.actual()
    target.restore([desired])
    assert modes(target) == {hosts[0]: "rw", hosts[1]: "ro"}
    assert snapshot(root) == full


def test_apply_converges_to_the_document(kit):
    target, root, hosts, creds = kit
    target.admit(VOL, hosts[2], "rw", creds[2])
    target.apply([Desired(VOL, DEV, [HostAccess(hosts[0], "ro", creds[0])])])
    assert modes(target) == {hosts[0]: "ro"}


def test_no_secret_in_reprs():
    creds = credentials.random_chap("h", mutual=True)
    text = repr(creds) + repr(HostAccess("iqn.2026-11.io.x:y", "rw", creds))
    assert creds.secret not in text and creds.mutual_secret not in text
    d = credentials.random_dhchap()
    assert d.dhchap_key not in repr(d)
    assert "credentials" not in str(Desired(VOL, DEV, [HostAccess("h", "rw", creds)]).to_dict())


def test_nvmet_read_back_sees_a_subsystem_left_off_the_port(kit, monkeypatch):
    """actual(volume) checks the volume's own port links (no listing of every port
    link) and finds what the full read-back finds."""
    target, root, hosts, creds = kit
    listed = []
    links = Node.links
    monkeypatch.setattr(Node, "links", lambda node: listed.append(node.path) or links(node))
    if not isinstance(target, NvmetTarget):
        pytest.skip("nvmet only")
    target.admit(VOL, hosts[0], "rw", creds[0])
    target.admit(VOL, hosts[1], "rw", creds[1])
    assert not target.actual(VOL)[VOL].problems
    nqn = target.connection(VOL, hosts[1]).target
    (target.port(target.portals[0]) / "subsystems").unlink(nqn)
    want = [f"{hosts[1]}'s subsystem is on no port"]
    listed.clear()
    assert target.actual(VOL)[VOL].problems == want
    assert not [p for p in listed if p.name == "subsystems"], "listed every port link"
    assert target.actual()[VOL].problems == want


def test_nvmet_read_back_of_one_volume_finds_its_subsystems_by_name(kit, monkeypatch):
    """A volume's subsystems are found by their names' prefix (a sorted listing and
    a binary search), never by a Python pass over every volume's subsystem."""
    target, root, hosts, creds = kit
    if not isinstance(target, NvmetTarget) and not isinstance(
            getattr(target, "kernel", None), NvmetTarget):
        pytest.skip("nvmet only")
    target.export("vol-10", DEV)  # its name starts with VOL's
    target.admit("vol-10", hosts[2], "rw", creds[2])
    target.admit(VOL, hosts[0], "ro", creds[0])
    passes = []
    children = Node.children
    monkeypatch.setattr(Node, "children", lambda node: passes.append(node.path.name) or
                        children(node))
    assert {h: s.mode for h, s in target.actual(VOL)[VOL].hosts.items()} == {hosts[0]: "ro"}
    assert set(target.actual("vol-10")["vol-10"].hosts) == {hosts[2]}
    assert "subsystems" not in passes


def nvmet_kit(tmp_path, monkeypatch):
    root = fake_kernel(monkeypatch, tmp_path / "configfs")
    return fake_kernel_target(root, "nvmet_tcp"), root


def admin_port(target, port_id: str, address: str, svcid: str = "4420"):
    port = (target.root / "ports" / port_id).create(groups=("subsystems",))
    port.set({"addr_trtype": "tcp", "addr_adrfam": "ipv4", "addr_traddr": address,
              "addr_trsvcid": svcid})
    return port


NQN0 = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000000"


def test_nvmet_ports_are_shareblocks_own_by_id_and_address(tmp_path, monkeypatch):
    target, root = nvmet_kit(tmp_path, monkeypatch)
    admin = admin_port(target, "1", "127.0.0.9")  # an admin's port elsewhere: left alone
    target.export(VOL, DEV)
    target.admit(VOL, NQN0, "rw", credentials.random_dhchap())
    ours = target.port(target.portals[0])
    assert ours.name == str(target.port_ids[target.portals[0]]) != "1"
    assert ours.read("addr_traddr") == "127.0.0.1" and ours.read("addr_trsvcid") == "4420"
    assert admin.read("addr_traddr") == "127.0.0.9" and admin.links() == {}


def test_an_admins_port_is_never_reused_or_changed(tmp_path, monkeypatch):
    target, root = nvmet_kit(tmp_path, monkeypatch)
    ours = str(target.port_ids[target.portals[0]])
    taken = admin_port(target, ours, "127.0.0.9")  # an admin's port under our id
    target.export(VOL, DEV)
    before = snapshot(root)
    with pytest.raises(TargetError, match=f"nvmet port {ours} serves .*127.0.0.9.*not "
                                          "shareblock's"):
        target.admit(VOL, NQN0, "rw", credentials.random_dhchap())
    assert snapshot(root) == before and taken.read("addr_traddr") == "127.0.0.9"
    taken.remove()
    admin_port(target, "7", "127.0.0.1")  # an admin's port at our very portal
    before = snapshot(root)
    with pytest.raises(TargetError, match="served by nvmet port 7"):
        target.admit(VOL, NQN0, "rw", credentials.random_dhchap())
    assert snapshot(root) == before


def test_explicit_port_ids_are_checked(tmp_path, monkeypatch):
    root = fake_kernel(monkeypatch, tmp_path / "configfs")
    two = [Portal("127.0.0.1", 4420), Portal("::1", 4420)]
    target = NvmetTarget(two, configfs=root, dm=FakeDm(), port_ids=[11, 12])
    assert [target.port(p).name for p in two] == ["11", "12"]
    for bad in ([11], [11, 11], [0, 1], [11, "12"], [True, 12], [11, 70000]):
        with pytest.raises(names.InvalidName, match="one distinct id"):
            NvmetTarget(two, configfs=root, dm=FakeDm(), port_ids=bad)


def test_the_scrapes_read_back_sees_the_same_hosts_with_fewer_reads(kit, monkeypatch):
    """actual(hosts_only=True), the exporter's read at every scrape: each host's
    mode and counters as the full read-back has them, without the device and the
    checks (fewer configfs reads per export)."""
    target, root, hosts, creds = kit
    target.admit(VOL, hosts[0], "rw", creds[0])
    target.admit(VOL, hosts[1], "ro", creds[1])
    reads = []
    read = Node.read
    monkeypatch.setattr(Node, "read", lambda node, attr, *a: reads.append(attr)
                        or read(node, attr, *a))
    full = target.actual()
    full_reads, reads[:] = len(reads), []
    brief = target.actual(hosts_only=True)
    assert {h: (s.mode, s.counters) for h, s in brief[VOL].hosts.items()} == \
        {h: (s.mode, s.counters) for h, s in full[VOL].hosts.items()}
    assert brief[VOL].device is None and full[VOL].device == DEV
    assert len(reads) < full_reads, (reads, full_reads)
