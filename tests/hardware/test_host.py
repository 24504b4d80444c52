"""`shareblock connect` on a host: real os-brick, open-iscsi and nvme-cli.

os-brick drives this kernel's own identity (its iSCSI default iface, its
/etc/nvme/hostnqn); a second identity on the same kernel is driven with
iscsiadm / nvme-cli directly (os-brick cannot hold two identities in one kernel).
"""
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from shareblock.cli import main as cli
from shareblock.control import config
from shareblock.control.api import ControlPlane
from shareblock.lab import config as lab_config
from shareblock.lab.hosts import Host

MB = 1 << 20


@pytest.fixture
def env(tmp_path, monkeypatch):
    conf = lab_config.write(tmp_path)
    cp = ControlPlane(config.load(str(conf)), user="root")
    for proto, name in (("iSCSI", "iscsi"), ("NVMe-oF", "nvmet_tcp")):
        cp.type_create(f"ma-{name}")
        cp.type_key(f"ma-{name}", "set", {"multiattach": "<is> True", "storage_protocol": proto})
        cp.type_create(f"single-{name}")
        cp.type_key(f"single-{name}", "set", {"storage_protocol": proto})
    from shareblock.host import attach
    monkeypatch.setattr(attach, "STATE", tmp_path / "host.json")

    def sb(*args, expect=0):
        """The real CLI (in-process: a Python start costs seconds under emulation)."""
        rc, out, err = cli.run_captured(["--config", str(conf), *args])
        assert rc == expect, (args, out, err)
        return subprocess.CompletedProcess(args, rc, out, err)
    return cp, sb


@pytest.mark.parametrize("protocol", ["iscsi", "nvmet_tcp"])
def test_connect_two_hosts_share_then_disconnect_one(env, protocol, unique):
    cp, sb = env
    vol = cp.create(1, f"ma-{protocol}", name=f"host-{unique}")
    other = Host(protocol, f"other-{unique}")
    key = "initiator" if protocol == "iscsi" else "nqn"
    connected = False
    try:
        res = sb("--json", "connect", vol["id"])
        connected = True
        rec = json.loads(res.stdout)
        device = rec["device"]
        assert rec["mode"] == "rw" and os.path.exists(device)
        att = cp.attachment_create(vol["id"], {key: other.id, "host": "other"})
        cp.attachment_complete(att["id"])
        other.attach(att["connection_info"])
        data = os.urandom(MB)
        other.write(data)
        with open(device, "rb") as f:  # O_DIRECT-free read: drop caches first
            subprocess.run(["blockdev", "--flushbufs", device], check=True)
            assert f.read(MB) == data, "the connected host reads the other host's write"
        status = json.loads(sb("--json", "hosts-status").stdout)
        assert [(s["volume_id"], s["device"]) for s in status] == [(vol["id"], device)]
        assert status[0]["session"] in ("LOGGED_IN", "live")
        assert cp.show(vol["id"])["status"] == "in-use"
        sb("disconnect", vol["id"])
        connected = False
        assert json.loads(sb("--json", "hosts-status").stdout) == []
        drv = cp.driver(vol["os-vol-host-attr:host"])
        assert set(drv.target.actual(vol["id"])[vol["id"]].hosts) == {other.id}, \
            "the other host is still admitted"
        if not other.connected():
            # os-brick logs out every session to this portal and IQN, our lab's
            # second identity's too (one kernel); the target kept its access:
            other.attach(att["connection_info"])
        assert other.read(MB) == data, "the other host keeps working"
        assert [a["id"] for a in cp.attachment_list(vol["id"])] == [att["id"]]
    finally:
        if connected:
            sb("disconnect", vol["id"])
        other.cleanup()


@pytest.mark.parametrize("protocol", ["iscsi", "nvmet_tcp"])
def test_connect_read_only(env, protocol, unique):
    cp, sb = env
    vol = cp.create(1, f"ma-{protocol}")
    rec = json.loads(sb("--json", "connect", vol["id"], "--mode", "ro").stdout)
    try:
        name = os.path.basename(os.path.realpath(rec["device"]))
        assert rec["mode"] == "ro"
        assert open(f"/sys/block/{name}/ro").read().strip() == "1", "ro on the host too"
        subprocess.run(["blockdev", "--setrw", rec["device"]], check=True)
        res = subprocess.run(["dd", "if=/dev/zero", f"of={rec['device']}", "bs=1M", "count=1",
                              "oflag=direct"], capture_output=True)
        assert res.returncode != 0, "the target refuses the write"
    finally:
        sb("disconnect", vol["id"])


@pytest.mark.parametrize("protocol", ["iscsi", "nvmet_tcp"])
def test_failures_are_one_line_and_leave_nothing(env, protocol, unique):
    cp, sb = env
    res = sb("connect", "no-such-volume", expect=3)
    assert len(res.stderr.strip().splitlines()) == 1 and "not found" in res.stderr
    vol = cp.create(1, f"single-{protocol}")
    key = "initiator" if protocol == "iscsi" else "nqn"
    other = Host(protocol, f"taken-{unique}")
    taken = cp.attachment_create(vol["id"], {key: other.id, "host": "elsewhere"})
    try:
        res = sb("connect", vol["id"], expect=4)
        assert "not multiattach" in res.stderr and len(res.stderr.strip().splitlines()) == 1
        assert len(cp.attachment_list(vol["id"])) == 1, "no half-made attachment"
        assert json.loads(sb("--json", "hosts-status").stdout) == []
    finally:
        cp.attachment_delete(taken["id"])


def _unreachable(data):
    if "portals" in data:  # NVMe/TCP: a port nothing listens on
        data["portals"] = [(a, 4499, t) for a, _, t in data["portals"]]
    else:
        data["target_portal"] = data["target_portal"].rsplit(":", 1)[0] + ":3299"


def _wrong_secret(data):
    if "dhchap_secret" in data:  # a well-formed key that is not this host's
        from shareblock.targets import credentials
        data["dhchap_secret"] = credentials.random_dhchap_secret()
    else:
        data["auth_password"] = "not-" + data["auth_password"]


def _sessions_to(target: str) -> list[str]:
    """iSCSI sessions or NVMe controllers this kernel holds to `target`."""
    found = []
    for attr, folder in (("targetname", "/sys/class/iscsi_session"),
                         ("subsysnqn", "/sys/class/nvme")):
        for entry in Path(folder).glob("*") if Path(folder).is_dir() else []:
            try:
                if (entry / attr).read_text().strip() == target:
                    found.append(entry.name)
            except OSError:
                continue
    return found


@pytest.fixture
def one_login_try():
    """iscsid retries a refused login 8 times per attempt and os-brick makes 3
    attempts: minutes under emulation. Node records made while this runs get one
    try (iscsiadm copies iscsid.conf into a new node record); restored after."""
    conf = Path("/etc/iscsi/iscsid.conf")
    before = conf.read_text()
    conf.write_text(re.sub(r"(?m)^node.session.initial_login_retry_max = \d+$",
                           "node.session.initial_login_retry_max = 1", before))
    yield
    conf.write_text(before)


@pytest.mark.parametrize("fault", [_unreachable, _wrong_secret],
                         ids=["target-unreachable", "wrong-credentials"])
@pytest.mark.parametrize("protocol", ["iscsi", "nvmet_tcp"])
def test_refused_connect_is_one_line_and_rolled_back(env, protocol, fault, monkeypatch,
                                                     one_login_try):
    """The target is unreachable, or refuses this host's credentials: one line,
    non-zero exit, and nothing left behind on the control plane, the target or
    this host (no attachment, no ACL, no session, no node record, no nvme key)."""
    cp, sb = env
    vol = cp.create(1, f"ma-{protocol}")
    from shareblock.host.control import LocalControl
    made = []
    real_create = LocalControl.attachment_create

    def faulty_create(self, volume, connector, mode):
        att = real_create(self, volume, connector, mode)
        made.append(att["connection_info"]["data"].copy())
        fault(att["connection_info"]["data"])
        return att
    monkeypatch.setattr(LocalControl, "attachment_create", faulty_create)
    res = sb("connect", vol["id"], expect=1)
    monkeypatch.undo()
    assert res.stderr.startswith("shareblock: error: connect ") and \
        len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert made, "the control plane was asked"
    target = made[0].get("target_iqn") or made[0]["target_nqn"]
    assert cp.attachment_list(vol["id"]) == [] and cp.show(vol["id"])["status"] == "available"
    drv = cp.driver(vol["os-vol-host-attr:host"])
    assert vol["id"] not in drv.target.actual(vol["id"]), "no export left for a failed connect"
    assert _sessions_to(target) == []
    assert json.loads(sb("--json", "hosts-status").stdout) == []
    if protocol == "iscsi":
        nodes = subprocess.run(["iscsiadm", "-m", "node"], capture_output=True, text=True)
        assert target not in nodes.stdout, "no node record left"
    elif os.path.exists("/etc/nvme/config.json"):
        assert target not in open("/etc/nvme/config.json").read(), "no key left"
    if fault is _unreachable:
        return
    # the same connect without the fault works: the refusal was the wrong secret's
    rec = json.loads(sb("--json", "connect", vol["id"]).stdout)
    try:
        assert os.path.exists(rec["device"])
    finally:
        sb("disconnect", vol["id"])
