"""SCSI-3 persistent reservations through LIO: the APTPL records the kernel writes,
replayed one per write (only the admitted hosts', res_type in decimal), and the
kernel's view read from a device's `pr/` attributes (formats of target_core_configfs.c)."""
import json
import os

import pytest

from shareblock.cli.main import run_captured
from shareblock.control.api import InvalidInput
from shareblock.targets import lio_pr
from shareblock.targets.configfs import Node
from tests.unit.test_control import cli_plane, env, iscsi, nvme  # noqa: F401

A = "iqn.2026-11.io.test:host1"
B = "iqn.2026-11.io.test:host2"
TARGET = "iqn.2026-11.io.shareblock:vol-1"


def record(host, key, holder=False, res_type="05", isid="00023d000001"):
    head = (f"initiator_fabric=iSCSI\ninitiator_node={host}\ninitiator_sid={isid}\n"
            f"sa_res_key={key}\n")
    mid = (f"res_holder=1\nres_type={res_type}\nres_scope=00\n" if holder
           else "res_holder=0\n")
    tail = (f"res_all_tg_pt=0\nmapped_lun=0\ntarget_fabric=iSCSI\ntarget_node={TARGET}\n"
            "tpgt=1\nport_rtpi=1\ntarget_lun=0\n")
    return head + mid + tail


def aptpl_file(*records):
    """As __core_scsi3_write_aptpl_to_file writes it: numbered blocks, a NUL at the end."""
    text = "".join(f"PR_REG_START: {i}\n{r}PR_REG_END: {i}\n" for i, r in enumerate(records))
    return text + "\0"


class Device:
    """A backstore's `pr/res_aptpl_metadata`: every write kept, as the kernel keeps
    each one as a pre-registration."""

    def __init__(self):
        self.writes = []

    def write(self, attr, value, check=True):
        assert attr == "pr/res_aptpl_metadata" and check is False
        self.writes.append(value)


def test_records_are_parsed_from_the_kernels_file():
    found = lio_pr.records(aptpl_file(record(A, 1193046, holder=True), record(B, 11259375)))
    assert [r["initiator_node"] for r in found] == [A, B]
    assert found[0]["res_holder"] == "1" and found[0]["res_type"] == "05"
    assert found[1]["sa_res_key"] == "11259375" and "res_type" not in found[1]
    assert lio_pr.records("No Registrations or Reservations\n\0") == []


def test_each_record_is_one_write_with_its_type_in_decimal(tmp_path):
    path = tmp_path / "aptpl_x"
    path.write_text(aptpl_file(record(A, 7, holder=True, res_type="08"), record(B, 9)))
    device = Device()
    assert lio_pr.replay(device, str(path)) == 2
    assert len(device.writes) == 2  # one registration per write: never merged
    first = dict(kv.split("=", 1) for kv in device.writes[0].split(","))
    # the kernel parses `res_type=08` as bad octal and would drop type 8's holder
    assert first["res_type"] == "8" and first["initiator_node"] == A
    assert first["target_node"] == TARGET and first["mapped_lun"] == "0"
    assert "PR_REG" not in device.writes[0] + device.writes[1]


def test_a_record_the_kernel_refuses_does_not_stop_the_others(tmp_path):
    path = tmp_path / "aptpl_x"
    path.write_text(aptpl_file(record(A, 7, holder=True, res_type="zz"), record(B, 9)))

    class Refusing(Device):
        def write(self, attr, value, check=True):
            if f"initiator_node={A}" in value:
                raise lio_pr.ConfigfsError("write: Invalid argument")
            super().write(attr, value, check)
    device = Refusing()
    assert lio_pr.replay(device, str(path)) == 1
    assert f"initiator_node={B}" in device.writes[0]


def test_only_the_hosts_about_to_be_admitted_get_their_registrations_back(tmp_path):
    """A revoked host's ACL freed its registrations, but the kernel did not rewrite
    the file: its records must not come back."""
    path = tmp_path / "aptpl_x"
    path.write_text(aptpl_file(record(A, 7, holder=True), record(B, 9)))
    device = Device()
    assert lio_pr.replay(device, str(path), hosts={B}) == 1
    assert f"initiator_node={B}" in device.writes[0]
    assert lio_pr.replay(Device(), str(tmp_path / "none")) == 0
    assert lio_pr.replay(Device(), None) == 0  # no dbroot: no LIO, nothing to replay


def test_dbroot_is_made_the_same_folder_at_every_boot_and_pr_is_private(tmp_path,
                                                                       monkeypatch):
    etc, var = f"{tmp_path}/etc-target", f"{tmp_path}/var-target"
    monkeypatch.setattr(lio_pr, "DBROOT", etc)
    monkeypatch.setattr(lio_pr, "KNOWN_DBROOTS", (etc, var))
    configfs = tmp_path / "configfs" / "target"
    configfs.mkdir(parents=True)
    root = Node(configfs)
    assert lio_pr.folder(root) is None and lio_pr.ensure_folder(root) is None  # no LIO
    # the module loaded before /etc/target existed: the kernel chose /var/target
    (configfs / "dbroot").write_text(var + "\n")
    os.makedirs(f"{var}/pr")
    old = f"{var}/pr/aptpl_serial-1"  # written at an earlier boot
    open(old, "w").write(aptpl_file(record(A, 7)))
    assert lio_pr.ensure_folder(root) == f"{etc}/pr"
    assert (configfs / "dbroot").read_text().strip() == etc
    assert os.stat(f"{etc}/pr").st_mode & 0o777 == 0o700
    assert lio_pr.file_of(root, "serial-1") == old, "found where the kernel wrote it"
    assert lio_pr.file_of(root, "serial-2") == f"{etc}/pr/aptpl_serial-2"
    lio_pr.forget(root, "serial-1")
    lio_pr.forget(root, "serial-1")  # idempotent
    assert not os.path.exists(old)


PR_ATTRS = {
    "res_holder": f"SPC-3 Reservation: iSCSI Initiator: {A},i,0x00023d000001",
    "res_pr_type": "SPC-3 Reservation Type: Write Exclusive Access, Registrants Only",
    "res_pr_registered_i_pts": (
        "SPC-3 PR Registrations:\n"
        f"iSCSI Node: {A},i,0x00023d000001 Key: 0x0000000000123456 PRgen: 0x00000001\n"
        f"iSCSI Node: {B},i,0x00023d000002 Key: 0x0000000000abcdef PRgen: 0x00000002"),
    "res_aptpl_active": "APTPL Bit Status: Activated",
    "res_pr_generation": "0x00000003",
}


def write_pr(folder, attrs):
    (folder / "pr").mkdir(parents=True, exist_ok=True)
    for name, text in attrs.items():
        (folder / "pr" / name).write_text(text + "\n")


def test_the_kernels_view_holder_type_and_registrations(tmp_path):
    write_pr(tmp_path, PR_ATTRS)
    view = lio_pr.view(Node(tmp_path))
    assert view["holder"] == {"host": A, "isid": "00023d000001", "key": "0x0000000000123456"}
    assert (view["type"], view["type_name"]) == (5, "Write Exclusive Access, Registrants Only")
    assert [(r["host"], r["key"]) for r in view["registrations"]] == [
        (A, "0x0000000000123456"), (B, "0x0000000000abcdef")]
    assert view["aptpl"] is True and view["generation"] == 3


def test_no_reservation_no_registrations(tmp_path):
    write_pr(tmp_path, {"res_holder": "No SPC-3 Reservation holder",
                        "res_pr_type": "No SPC-3 Reservation holder",
                        "res_pr_registered_i_pts": "SPC-3 PR Registrations:\nNone",
                        "res_aptpl_active": "APTPL Bit Status: Disabled",
                        "res_pr_generation": "0x00000000"})
    view = lio_pr.view(Node(tmp_path))
    assert view == {"holder": None, "type": None, "type_name": None, "registrations": [],
                    "aptpl": False, "generation": 0}


@pytest.fixture
def cp(cli_plane):  # noqa: F811
    return cli_plane


def backstore(cp, vid):
    target = cp.driver("lio").target
    return (target.root / "core" / f"iblock_{target.backstore_index(vid)}"
            / target.backstore_name(vid)).path


def test_reservations_command_shows_the_kernels_view_in_json_and_a_table(cp):
    vol = cp.create(1, "multiattach", name="shared")
    assert cp.reservations("shared")["exported"] is False  # nobody attached: no export
    cp.attachment_create(vol["id"], iscsi(1))
    write_pr(backstore(cp, vol["id"]), PR_ATTRS)
    rc, out, err = run_captured(["reservations", "shared", "--json"])
    assert rc == 0, err
    shown = json.loads(out)
    assert shown["volume_id"] == vol["id"] and shown["exported"] is True
    assert shown["holder"]["host"] == A and shown["type"] == 5
    assert {r["host"] for r in shown["registrations"]} == {A, B}
    rc, out, _ = run_captured(["reservations", "shared"])
    assert rc == 0 and "Write Exclusive Access, Registrants Only" in out
    assert out.count("yes") == 1  # the holder's registration


def test_reservations_of_an_nvme_volume_are_refused_clearly(cp):
    vol = cp.create(1, "ma-nvme")
    cp.attachment_create(vol["id"], nvme(1))
    with pytest.raises(InvalidInput, match="no persistent reservations"):
        cp.reservations(vol["id"])
    rc, _, err = run_captured(["reservations", vol["id"]])
    assert rc == 2 and err.startswith("shareblock: error:")
    rc, _, err = run_captured(["reservations", "no-such-volume"])
    assert rc == 3


def test_export_replays_before_the_lun_links_the_device_and_only_once(tmp_path, monkeypatch):
    """The real LioTarget.export over a fake configfs tree: the replay comes after the
    unit serial and before the LUN link (the kernel refuses records after), on a new
    backstore only, with the batch's hosts (apply) or all of them (a lone export)."""
    from shareblock.targets.base import Desired, HostAccess, Portal
    from shareblock.targets.lio import LioTarget
    from tests.unit.fakes import fake_kernel
    root = fake_kernel(monkeypatch, tmp_path / "configfs")
    (root / "target" / "dbroot").write_text(f"{tmp_path}/etc-target\n")
    monkeypatch.setattr(lio_pr, "DBROOT", f"{tmp_path}/etc-target")
    monkeypatch.setattr(lio_pr, "KNOWN_DBROOTS", (f"{tmp_path}/etc-target",))
    made = Node.create

    def create(node, groups=()):  # configfs makes a folder's default groups with it
        out = made(node, groups)
        if node.path.parent.name.startswith("iblock_"):  # a backstore
            extra = ("wwn", "pr")
        elif node.path.name == "tpgt_1":
            extra = ("attrib", "np", "lun", "acls")
        else:
            extra = ()
        for group in extra:
            (node.path / group).mkdir(exist_ok=True)
        return out
    monkeypatch.setattr(Node, "create", create)
    target = LioTarget([Portal("127.0.0.1", 3260)], configfs=root)
    calls = []

    def replay(device, path, hosts=None):
        lun = target.tpg(device.name.removeprefix("sb-")) / "lun" / "lun_0"
        calls.append({"serial": (device.path / "wwn" / "vpd_unit_serial").read_text(),
                      "linked": bool(lun.links()), "path": path, "hosts": hosts})
        return 0
    monkeypatch.setattr(lio_pr, "replay", replay)
    target.export("vol-1", "/dev/loop7")
    assert calls == [{"serial": target.unit_serial("vol-1"), "linked": False,
                      "path": f"{tmp_path}/etc-target/pr/aptpl_{target.unit_serial('vol-1')}",
                      "hosts": None}]
    assert (tmp_path / "etc-target" / "pr").is_dir()
    target.export("vol-1", "/dev/loop7")
    assert len(calls) == 1, "an export in place replays nothing again"
    # a batch (restore, reconcile): a new backstore, only the batch's hosts
    target.apply([Desired("vol-2", "/dev/loop8", [HostAccess(A, "rw", _creds())])])
    assert calls[-1]["hosts"] == {A} and calls[-1]["linked"] is False


def _creds():
    from shareblock.targets import credentials
    return credentials.random_chap("h1")
