"""fence_shareblock as Pacemaker runs it (its options on stdin, the real command),
against real LIO and nvmet and real initiators: `off` cuts a node's host off at
the target (its writes fail) while another node's fio writer verifies its data,
`status` answers from configfs, `on` readmits the node with the connection info
it had; a fence holds across a target reboot and restore; the same over SSH."""
import contextlib
import io
import os
import shlex
import subprocess
import sys
import time
from unittest import mock

import pytest

from shareblock.control import config
from shareblock.control.api import ControlPlane
from shareblock.fence import agent
from shareblock.lab.hosts import Host
from shareblock.lab.initiators import InitiatorError
from tests import crashlib
from tests.hardware.boot import boot_restore, load_lab_modules
from tests.hardware import pacemaker
from tests.hardware.modes import full_only
from tests.hardware.reliability.test_reboot import drop_devices, unload_modules, wipe_configfs

MB = 1 << 20
AGENT = os.path.join(os.path.dirname(sys.executable), "fence_shareblock")


def fence_agent(stdin: str, env=None) -> subprocess.CompletedProcess:
    """The agent as Pacemaker's fencer runs it: the installed command, no arguments,
    its options on stdin."""
    return subprocess.run([AGENT], input=stdin, capture_output=True, text=True,
                          timeout=600, env=env)


def fence_here(stdin: str) -> subprocess.CompletedProcess:
    """The same agent code and stdin parsing in this process (a Python start costs
    many seconds under emulation)."""
    out, err = io.StringIO(), io.StringIO()
    with mock.patch("sys.stdin", io.StringIO(stdin)), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        rc = agent.main([])
    return subprocess.CompletedProcess([AGENT], rc, out.getvalue(), err.getvalue())


def fio_writer(host: Host) -> subprocess.Popen:
    """Another node's writer: writes and verifies (crc32c) its own region in loops."""
    return subprocess.Popen(
        ["fio", "--name=other-node", f"--filename={host.device()}", "--rw=write",
         "--bs=64k", "--size=4M", "--offset=32M", "--direct=1", "--ioengine=psync",
         "--verify=crc32c", "--do_verify=1", "--loops=3", "--output-format=terse"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def write_fails(host: Host, timeout: float = 120) -> bool:
    """A write of the host's now fails (its session or controller is gone at the
    target; the lab's hosts give up after a few seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dev = host.device()
        if dev is None:
            return True  # the namespace or disk went with the controller or session
        try:
            host.write(os.urandom(MB), offset_mb=4)
        except InitiatorError:
            return True
        time.sleep(2)
    return False


@pytest.fixture
def lab(tmp_path, unique):
    path = crashlib.lab_conf(tmp_path, unique)
    hosts = []

    def plane():
        return ControlPlane(config.load(str(path)), user="root")

    def attach(cp, vid, protocol, node):
        host = Host(protocol, f"{node}-{unique}", lost_after=5)
        hosts.append(host)
        att = cp.attachment_create(vid, host.connector(node))
        cp.attachment_complete(att["id"])
        info = cp.attachment_show(att["id"])["connection_info"]
        host.attach(info)
        return host, info
    yield path, plane, attach
    for host in hosts:
        host.cleanup()
    crashlib.clean_up(plane())


def reads_back(host: Host, data: bytes, timeout: float = 60) -> bool:
    """The host reads `data` again. Open finding: once, an NVMe host just connected
    again after unfence read zeros there (another run read the data at once); the
    wait bounds it, and zeros that stay fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        if host.read(len(data)) == data:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(2)


@pytest.mark.parametrize("protocol", ["iscsi", "nvmet_tcp"])
def test_pacemaker_fences_a_node_at_the_target_and_unfences_it(lab, protocol, unique):
    path, plane, attach = lab
    cp = plane()
    vid = cp.create(1, crashlib.make_types(cp, protocol)["ma"])["id"]
    node_a, node_b = f"fa-{unique}", f"fb-{unique}"
    a, info_a = attach(cp, vid, protocol, node_a)
    b, _ = attach(cp, vid, protocol, node_b)
    data = os.urandom(MB)
    a.write(data)
    options = f"config={path}\nnodename={node_a}\n"
    res = fence_here(f"action=status\nport={node_a}\n{options}")
    assert (res.returncode, res.stdout.strip()) == (0, "Status: ON"), res.stderr
    listed = fence_here(f"action=list\nconfig={path}\n")
    assert {f"{node_a},", f"{node_b},"} <= set(listed.stdout.split()), listed.stderr

    writer = fio_writer(b)
    res = fence_agent(f"action=off\nport={node_a}\n{options}")
    assert (res.returncode, res.stdout.strip()) == (0, "Success: Powered OFF"), res.stderr
    assert write_fails(a), "the fenced node's writes fail"
    out, err = writer.communicate(timeout=900)
    assert writer.returncode == 0, f"the other node's fio writer failed: {err}{out}"
    assert b.read(MB) == data, "and it reads what the fenced node wrote before"
    res = fence_here(f"action=status\nport={node_a}\n{options}")
    assert (res.returncode, res.stdout.strip()) == (2, "Status: OFF")
    # read as the next command would, through a control plane of its own
    assert plane().fence_status(node_a)["admitted"] == []  # configfs: none of its hosts
    assert [e["action"] for e in plane().events() if e["host"] == node_a] == ["fenced"]

    res = fence_agent(f"action=on\nport={node_a}\n{options}")
    assert (res.returncode, res.stdout.strip()) == (0, "Success: Powered ON"), res.stderr
    a.disconnect()
    a.attach(info_a)  # the connection info it had: same credentials, same mode
    assert reads_back(a, data), "the readmitted node reads what it wrote before"
    a.write(os.urandom(MB), offset_mb=4)
    assert [e["action"] for e in plane().events() if e["host"] == node_a] == [
        "fenced", "unfenced"]


def test_a_fenced_node_stays_fenced_across_a_target_reboot(lab, tmp_path, unique):
    path, plane, attach = lab
    cp = plane()
    vid = cp.create(1, crashlib.make_types(cp, "iscsi")["ma"])["id"]
    node_a, node_b = f"ra-{unique}", f"rb-{unique}"
    a, info_a = attach(cp, vid, "iscsi", node_a)
    b, info_b = attach(cp, vid, "iscsi", node_b)
    res = fence_here(f"action=off\nport={node_a}\nconfig={path}\n")
    assert res.returncode == 0, res.stderr
    for host in (a, b):
        host.disconnect()

    wipe_configfs()
    drop_devices([tmp_path / "lio-volumes", tmp_path / "nvme-volumes"])
    unload_modules()
    booted = boot_restore(tmp_path / "state" / "node")
    assert booted.returncode == 0, booted.stderr
    load_lab_modules()  # nvmet too, for the tests after this one
    res = fence_here(f"action=status\nport={node_a}\nconfig={path}\n")
    assert (res.returncode, res.stdout.strip()) == (2, "Status: OFF"), res.stderr
    assert plane().reconcile()["admitted"] == [], "reconcile keeps it out too"
    with pytest.raises(InitiatorError):
        a.attach(info_a)  # no ACL: the login is refused
    b.attach(info_b)
    b.write(os.urandom(MB))
    res = fence_here(f"action=on\nport={node_a}\nconfig={path}\n")
    assert res.returncode == 0, res.stderr
    a.disconnect()
    a.attach(info_a)
    a.write(os.urandom(MB), offset_mb=4)


@full_only("scripts/cluster.sh")  # quick mode: the CLI over SSH is test_control_plane's
def test_the_agent_fences_over_ssh(lab, sshd, unique):
    """The agent on a cluster node, the control plane on the storage node."""
    path, plane, attach = lab
    cp = plane()
    vid = cp.create(1, crashlib.make_types(cp, "iscsi")["ma"])["id"]
    node_a = f"sa-{unique}"
    a, _ = attach(cp, vid, "iscsi", node_a)
    env = dict(os.environ, SHAREBLOCK_REMOTE_COMMAND=shlex.join(
        [os.path.join(os.path.dirname(sys.executable), "shareblock"), "--config", str(path)]))
    remote = (f"control={sshd['url']}\nknown_hosts={sshd['known_hosts']}\n"
              f"ssh_key={sshd['key']}\nport={node_a}\n")
    with mock.patch.dict(os.environ, env):
        res = fence_here("action=off\n" + remote)
        assert (res.returncode, res.stdout.strip()) == (0, "Success: Powered OFF"), res.stderr
        assert write_fails(a)
        assert plane().fence_status(node_a)["status"] == "off"
        res = fence_here("action=on\n" + remote)
        assert res.returncode == 0, res.stderr
        assert plane().fence_status(node_a)["status"] == "on"
        # an unknown host key is refused: nothing fenced
        res = fence_here("action=off\n" + remote.replace(sshd["known_hosts"], sshd["empty"]))
    assert res.returncode == 1 and plane().fence_status(node_a)["status"] == "on"


@full_only("scripts/cluster.sh")  # minutes of cluster start-up and agent runs; quick
# mode runs the agent as the fencer does (stdin) in the tests above
def test_pacemakers_own_fencer_fences_and_unfences_through_the_agent(lab, tmp_path, unique):
    """Real Pacemaker (Debian's, one node): the stonith device as the README
    configures it, the fencer running fence_shareblock from /usr/sbin with its
    options on stdin, for `stonith_admin --fence` and `--unfence`."""
    assert pacemaker.available(), "Debian's pacemaker is missing: scripts/bootstrap.sh"
    path, plane, attach = lab
    cp = plane()
    vid = cp.create(1, crashlib.make_types(cp, "iscsi")["ma"])["id"]
    node_a, node_b = f"pa-{unique}", f"pb-{unique}"
    a, info_a = attach(cp, vid, "iscsi", node_a)
    b, _ = attach(cp, vid, "iscsi", node_b)
    data = os.urandom(MB)
    a.write(data)
    cluster = pacemaker.Cluster(tmp_path)
    try:
        cluster.install_agent(AGENT)
        cluster.start()
        cluster.crm_config("stonith-timeout", "600s")
        cluster.add_stonith("shareblock-fence", "fence_shareblock", {
            "config": str(path), "pcmk_host_check": "dynamic-list",
            **{f"pcmk_{op}_timeout": "600s" for op in ("off", "on", "list", "monitor")}},
            {"provides": "unfencing"})
        res = pacemaker.run("stonith_admin", "--list", node_a)
        assert "shareblock-fence" in res.stdout, f"{res.stdout}{res.stderr}{cluster.logs()}"
        res = pacemaker.run("stonith_admin", "--fence", node_a, "--timeout", "600")
        assert res.returncode == 0, f"{res.stdout}{res.stderr}{cluster.logs()}"
        assert write_fails(a), "the fenced node's writes fail"
        assert plane().fence_status(node_a)["status"] == "off"
        assert plane().fence_status(node_b)["status"] == "on", "the other node is not fenced"
        b.write(os.urandom(MB), offset_mb=8)
        res = pacemaker.run("stonith_admin", "--history", node_a)
        assert "successful" in res.stdout or "success" in res.stdout.lower(), res.stdout
        res = pacemaker.run("stonith_admin", "--unfence", node_a, "--timeout", "600")
        assert res.returncode == 0, f"{res.stdout}{res.stderr}{cluster.logs()}"
        assert plane().fence_status(node_a)["status"] == "on"
        a.disconnect()
        a.attach(info_a)
        assert reads_back(a, data), "the unfenced node reads what it wrote before"
        assert [e["action"] for e in plane().events() if e["host"] == node_a] == [
            "fenced", "unfenced"]
    finally:
        cluster.stop()
