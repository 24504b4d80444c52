"""targets/ on a storage node over SSH: sshd in the lab, reached over loopback."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shareblock.control import config
from shareblock.control.api import ControlPlane
from shareblock.blockdev import loopdev
from shareblock.targets import names
from shareblock.targets.base import Portal, TargetError
from shareblock.targets.factory import kernel_target, open_target
from shareblock.targets.remote import Unreachable
from shareblock.lab.hosts import Host
from tests import crashlib
from tests.hardware.boot import boot_restore

def remote(protocol, sshd, known_hosts=None, url=None):
    portals = [Portal("127.0.0.1", 3260 if protocol == "iscsi" else 4420)]
    return open_target(protocol, portals, node=url or sshd["url"],
                       known_hosts=known_hosts or sshd["known_hosts"], key_filename=sshd["key"],
                       agent_command=sshd["agent"])


@pytest.mark.parametrize("protocol", ["iscsi", "nvmet_tcp"])
def test_whole_life_cycle_over_ssh(protocol, sshd, loop_device, unique):
    target = remote(protocol, sshd)
    dev = loop_device(32)
    volume = f"remote-{unique}"
    a = Host(protocol, f"remote-a-{unique}")
    try:
        target.export(volume, dev)
        conn = target.admit(volume, a.id, "rw", a.credentials)
        a.connect(conn)
        data = os.urandom(1 << 20)
        a.write(data)
        assert a.read(len(data)) == data
        assert target.actual(volume)[volume].hosts[a.id].mode == "rw"
        target.set_mode(volume, a.id, "ro")
        assert target.connection(volume, a.id).mode == "ro"
        with pytest.raises(names.InvalidName):
            target.admit(volume, "../../etc", "rw", a.credentials)
        target.revoke(volume, a.id)
        assert a.id not in target.actual(volume)[volume].hosts
    finally:
        a.cleanup()
        target.unexport(volume)
    assert volume not in target.actual()


@pytest.mark.parametrize("protocol", ["iscsi", "nvmet_tcp"])
def test_boot_time_restore_on_a_node_reached_over_ssh(protocol, sshd, tmp_path, unique):
    """The agent keeps the node's desired state; the node's own boot-time command
    brings an export back from it alone: the host logs in again, data intact."""
    target = remote(protocol, sshd)
    img = tmp_path / "vol.img"
    with open(img, "wb") as f:
        f.truncate(32 << 20)
    dev = loopdev.attach(str(img))
    volume = f"rboot-{unique}"
    a = Host(protocol, f"rboot-a-{unique}")
    try:
        target.export(volume, dev, backing=str(img))
        a.connect(target.admit(volume, a.id, "rw", a.credentials))
        data = os.urandom(1 << 20)
        a.write(data)
        a.disconnect()
        assert set(target.desired()) == {volume}, "the node recorded it"
        # the node reboots: its configfs objects and the loop device are gone
        kernel_target(protocol, target.portals, target.prefix).unexport(volume)
        loopdev.detach(dev)
        assert volume not in target.actual()
        booted = boot_restore(Path(sshd["node_dir"]))
        assert booted.returncode == 0, booted.stderr
        seen = target.actual(volume)[volume]
        assert {h: s.mode for h, s in seen.hosts.items()} == {a.id: "rw"}
        a.connect(target.connection(volume, a.id))  # its own secrets, as before
        assert a.read(len(data)) == data
    finally:
        a.cleanup()
        target.unexport(volume)
        found = loopdev.find(str(img))
        if found:
            loopdev.detach(found)
    assert volume not in target.actual() and target.desired(volume) == {}


def test_unknown_host_key_is_refused(sshd):
    target = remote("iscsi", sshd, known_hosts=sshd["empty"])
    with pytest.raises(TargetError, match="unknown host key"):
        target.actual()


def test_unreachable_node_is_a_clear_error(sshd):
    target = remote("iscsi", sshd, url="ssh://root@127.0.0.1:1")
    with pytest.raises(Unreachable, match="unreachable"):
        target.actual()


@pytest.mark.parametrize("protocol", ["iscsi", "nvmet_tcp"])
def test_the_exporter_reads_a_storage_node_over_ssh(protocol, sshd, tmp_path, unique):
    """shareblock-exporter with a backend whose targets live on a node reached
    over SSH: the host's admission and writes come from the node's configfs
    through the agent; a node that cannot be reached is `backend_up 0`, and the
    scrape still answers."""
    backend = {"iscsi": "lio", "nvmet_tcp": "nvme"}[protocol]
    ssh = dict(shareblock_storage_node=sshd["url"], shareblock_known_hosts=sshd["known_hosts"],
               shareblock_ssh_key=sshd["key"], shareblock_remote_agent=sshd["agent"])
    path = crashlib.lab_conf(tmp_path, unique, only=backend, **ssh)
    cp = ControlPlane(config.load(str(path)), user="root")
    vid = cp.create(1, crashlib.make_types(cp, protocol)["ma"])["id"]
    a = Host(protocol, f"rexp-{unique}")
    try:
        att = cp.attachment_create(vid, a.connector())
        cp.attachment_complete(att["id"])
        a.attach(cp.attachment_show(att["id"])["connection_info"])
        a.write(os.urandom(4 << 20))
        key = {"backend": backend, "volume_id": vid, "host": a.id}
        seen = scrape(path)
        assert seen[("shareblock_backend_up", (("backend", backend),))] == 1
        assert seen[("shareblock_host_admitted", tuple(sorted(key.items())))] == 1
        assert seen[("shareblock_host_written_bytes_total", tuple(sorted(key.items())))] \
            >= 4 << 20
        gone = tmp_path / "node-away.conf"  # the same state, its node where nothing listens
        gone.write_text(path.read_text().replace(sshd["url"], "ssh://root@127.0.0.1:1"))
        seen = scrape(gone)
        assert seen[("shareblock_backend_up", (("backend", backend),))] == 0
        assert ("shareblock_host_admitted", tuple(sorted(key.items()))) not in seen
        assert seen[("shareblock_volume_size_bytes", (("volume_id", vid),))] == 1 << 30, \
            "the control plane's own figures still come"
    finally:
        a.cleanup()
        crashlib.clean_up(ControlPlane(config.load(str(path)), user="root"))


def scrape(path) -> dict:
    """One `shareblock-exporter --once`, parsed: {(sample name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families
    exporter = os.path.join(os.path.dirname(sys.executable), "shareblock-exporter")
    done = subprocess.run([exporter, "--config", str(path), "--once"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(done.stdout) for s in family.samples}
