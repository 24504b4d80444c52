"""Hardware tests run against the real kernel, never faked. They skip only what
this kernel lacks (nvmet reservations: they run on the lab's backports kernel)
and, in CI's quick mode, full-mode variants (modes.py).

Run them through the lab: `shareblock-lab run -- python -m pytest tests/hardware`.
"""
import shutil
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

CONFIGFS = Path("/sys/kernel/config")
SSH_PORT = 2222


def pytest_sessionstart(session):
    missing = [p for p in (CONFIGFS / "target", CONFIGFS / "nvmet") if not p.is_dir()]
    if missing:
        pytest.exit(f"this kernel lacks {', '.join(map(str, missing))}: run the hardware "
                    "suite through `shareblock-lab run -- python -m pytest tests/hardware`",
                    returncode=3)


# Everything shareblock (and its tests' own prefixes, and the lab proof) makes is named
# under these; an admin's own exports (test_coexistence.py) are not ours to judge.
OUR_IQNS = "iqn.2026-11.io.shareblock"
OUR_NQNS = "nqn.2026-11.io.shareblock"
# LIO TPG attributes that would admit a host without its ACL or without CHAP
OPEN_TPG = {"generate_node_acls": "1", "authentication": "0", "demo_mode_discovery": "1"}


def open_doors(configfs: Path = CONFIGFS) -> list[str]:
    """Every way one of our targets admits a host without an ACL: LIO demo mode
    (generated ACLs, with or without write protect), no CHAP, discovery for all;
    an nvmet subsystem that allows any host."""
    found = []
    for target in sorted((configfs / "target" / "iscsi").glob(OUR_IQNS + "*")):
        for tpg in sorted(target.glob("tpgt_*")):
            attrib = {a: _read(tpg / "attrib" / a) for a in (*OPEN_TPG,
                                                            "demo_mode_write_protect")}
            for attr, bad in OPEN_TPG.items():
                if attrib[attr] == bad:
                    found.append(f"{tpg.relative_to(configfs)}: {attr}={bad}")
            if attrib["generate_node_acls"] == "1" and attrib["demo_mode_write_protect"] == "0":
                found.append(f"{tpg.relative_to(configfs)}: demo mode with write access")
    for sub in sorted((configfs / "nvmet" / "subsystems").glob(OUR_NQNS + "*")):
        if _read(sub / "attr_allow_any_host") == "1":
            found.append(f"{sub.relative_to(configfs)}: attr_allow_any_host=1")
    return found


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:  # gone while we looked (another test's cleanup): nothing open there
        return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """The security scan while the scenario's objects still exist (before teardown)."""
    result = yield
    doors = open_doors()
    if doors:
        raise AssertionError(f"a host could get in without an ACL: {doors}")
    return result


@pytest.fixture(autouse=True)
def security_scan():
    """After every hardware test and its clean-up: nothing of ours admits any host."""
    yield
    doors = open_doors()
    assert not doors, f"a host could get in without an ACL: {doors}"


@pytest.fixture
def loop_device(tmp_path):
    """Factory: a fresh loop block device over a sparse file; detached afterwards."""
    made = []

    def make(size_mb: int = 64) -> str:
        backing = tmp_path / f"disk{len(made)}.img"
        with open(backing, "wb") as f:
            f.truncate(size_mb << 20)
        dev = subprocess.run(["losetup", "-f", "--show", str(backing)], check=True,
                             capture_output=True, text=True).stdout.strip()
        made.append(dev)
        return dev

    yield make
    for dev in made:
        subprocess.run(["losetup", "-d", dev], check=False)


@pytest.fixture
def unique():
    """A short unique token so objects of one test never meet another's."""
    return uuid.uuid4().hex[:8]



@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """sshd on 127.0.0.1:2222 in the lab: a storage node reached over loopback."""
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)],
                       check=True)
    shutil.copy(d / "client.pub", d / "authorized_keys")
    config = d / "sshd_config"
    config.write_text(f"""Port {SSH_PORT}
ListenAddress 127.0.0.1
HostKey {d / 'host'}
AuthorizedKeysFile {d / 'authorized_keys'}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM yes
StrictModes no
PidFile {d / 'sshd.pid'}
""")
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                            stderr=open(d / "sshd.log", "w"))
    host_key = (d / "host.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{SSH_PORT} {host_key[0]} {host_key[1]}\n")
    (d / "empty_known_hosts").write_text("")
    time.sleep(1)
    agent = os.path.join(os.path.dirname(sys.executable), "shareblock-target-agent")
    yield {"url": f"ssh://root@127.0.0.1:{SSH_PORT}", "known_hosts": str(d / "known_hosts"),
           "empty": str(d / "empty_known_hosts"), "key": str(d / "client"),
           # the node's agent, keeping the node's desired state in the node's folder
           "agent": f"{agent} --state-dir {d / 'node'}", "node_dir": str(d / "node")}
    proc.terminate()
    proc.wait()
