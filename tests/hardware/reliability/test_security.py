"""Security with real initiators (issue 9): wrong secrets and strangers are refused.

What test_targets.py already shows (wrong user and password, an unlisted host with
its own secrets, a revoked host's session ends) and test_host.py (a wrong CHAP
password / DH-HMAC-CHAP key through os-brick) is not repeated. Here, per transport:

- an admitted host that offers no secret at all (no CHAP / no DH-HMAC-CHAP key);
- the right user name with a wrong password (iSCSI) / a wrong host key (NVMe);
- a stranger presenting an admitted host's own, valid secrets (the ACL is by
  identity, the secret alone opens nothing);
- a host that holds a wrong *target* secret: mutual CHAP / the controller key of
  bidirectional DH-HMAC-CHAP (the host refuses an impostor target);
- discovery from a stranger lists none of our targets (an admitted host's does);
- a revoked host's session ends, and it cannot log back in with its own secrets;
- the configfs security scan (conftest.open_doors) sees demo mode and
  allow_any_host when they are switched on.

Every attempt is counted for the reliability report: tried, refused (survived),
wrongly let in (lost, must be 0). Full mode repeats the refusals.
"""
import re
import subprocess
import time
from pathlib import Path

import pytest

from shareblock.lab.hosts import Host
from shareblock.lab.initiators import InitiatorError
from shareblock.targets import credentials
from shareblock.targets.base import Credentials, Portal
from shareblock.targets.lio import LioTarget
from shareblock.targets.nvmet import NvmetTarget
from tests.hardware.conftest import CONFIGFS, open_doors
from tests.hardware.reliability.conftest import rounds

MB = 1 << 20


@pytest.fixture
def one_login_try():
    """A refused iSCSI login is retried by iscsid (8 times by default): minutes under
    emulation. Node records made while this runs get one try; restored after."""
    conf = Path("/etc/iscsi/iscsid.conf")
    before = conf.read_text()
    conf.write_text(re.sub(r"(?m)^node.session.initial_login_retry_max = \d+$",
                           "node.session.initial_login_retry_max = 1", before))
    yield
    conf.write_text(before)


@pytest.fixture(params=["iscsi", "nvmet_tcp"])
def kit(request, loop_device, unique, one_login_try):
    protocol = request.param
    if protocol == "iscsi":
        target = LioTarget([Portal("127.0.0.1", 3260)])
    else:
        target = NvmetTarget([Portal("127.0.0.1", 4420)])
    volume = f"sec-{unique}"
    hosts = []

    def host(tag):
        h = Host(protocol, f"sec-{tag}-{unique}")
        hosts.append(h)
        return h

    target.export(volume, loop_device(32))
    yield protocol, target, volume, host
    for h in hosts:
        h.cleanup()
    target.unexport(volume)


def refused(attempt) -> bool:
    """True when the initiator could not get in (its login/connect failed)."""
    try:
        attempt()
    except InitiatorError:
        return True
    return False


def wait_until(check, timeout=30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def discovered(protocol, host: Host, secret: str | None = None) -> str:
    """What discovery shows this identity (the output, as text)."""
    if protocol == "iscsi":
        return subprocess.run(["iscsiadm", "-m", "discovery", "-t", "st", "-p", "127.0.0.1:3260",
                               "-I", host.initiator.iface, "-o", "nonpersistent"],
                              capture_output=True, text=True).stdout
    cmd = ["nvme", "discover", "-t", "tcp", "-a", "127.0.0.1", "-s", "4420",
           f"--hostnqn={host.id}", f"--hostid={host.initiator.hostid}"]
    if secret:
        cmd.append(f"--dhchap-secret={secret}")
    return subprocess.run(cmd, capture_output=True, text=True).stdout


def test_wrong_secrets_and_strangers_are_refused_by_real_initiators(kit, report):
    protocol, target, volume, host = kit
    a, m, x = host("a"), host("m"), host("x")  # admitted, admitted (mutual), stranger
    iscsi = protocol == "iscsi"
    if iscsi:  # m also checks the target: mutual CHAP
        m.credentials = credentials.random_chap(f"m{m.id[-8:]}", mutual=True)
    conn_a = target.admit(volume, a.id, "rw", a.credentials)
    conn_m = target.admit(volume, m.id, "rw", m.credentials)

    def wrong_own_secret():
        if iscsi:  # the right user name, a wrong password
            return Credentials(user=a.credentials.user, secret="not-" + a.credentials.secret)
        return credentials.random_dhchap()  # a well-formed host key that is not a's

    def wrong_target_secret():
        if iscsi:
            return Credentials(user=m.credentials.user, secret=m.credentials.secret,
                               mutual_user=m.credentials.mutual_user,
                               mutual_secret="not-" + m.credentials.mutual_secret)
        return Credentials(dhchap_key=m.credentials.dhchap_key,
                           dhchap_ctrl_key=credentials.random_dhchap_secret())

    def no_secret():
        a.conn = conn_a  # so that a.disconnect() cleans up after it
        if iscsi:  # authmethod None: no CHAP offered at all
            return a.initiator.login(conn_a.target, "127.0.0.1", 3260, chap=None, timeout=10)
        return a.initiator.connect(conn_a.target, "127.0.0.1", 4420, timeout=10)

    attempts = {
        "no secret": no_secret,
        "wrong secret": lambda: a.connect(conn_a, creds=wrong_own_secret(), timeout=10),
        "stranger with a's secrets": lambda: x.connect(conn_a, creds=a.credentials,
                                                       timeout=10),
        "impostor target": lambda: m.connect(conn_m, creds=wrong_target_secret(), timeout=10),
    }
    outcome = {}
    for _ in range(rounds(1, 5)):
        for name, attempt in attempts.items():
            outcome.setdefault(name, []).append(refused(attempt))
            for h in (a, m, x):  # whatever got in (it must not) is logged out again
                h.disconnect()

    # the right secrets still work: the refusals were the secrets', not a broken target
    a.connect(conn_a)
    m.connect(conn_m)
    assert a.read(MB) == m.read(MB)

    # discovery: a stranger sees none of our targets, an admitted host sees its own
    stranger_sees = discovered(protocol, x)
    a_sees = discovered(protocol, a, a.credentials.dhchap_key)
    outcome["discovery by a stranger"] = [conn_a.target not in stranger_sees]
    assert conn_a.target in a_sees, "discovery works for an admitted host"

    # revoke: the session ends and the same secrets no longer open anything
    target.revoke(volume, a.id)
    outcome["revoked session ends"] = [wait_until(lambda: not a.connected())]
    a.disconnect()
    outcome["revoked host logs in again"] = [refused(lambda: a.connect(conn_a, timeout=10))]
    assert m.connected(), "the other host keeps its session"

    tried = sum(len(v) for v in outcome.values())
    kept_out = sum(sum(v) for v in outcome.values())
    report(tried=tried, survived=kept_out, lost=tried - kept_out, unit="intrusion attempts",
           transport=protocol)
    assert all(all(v) for v in outcome.values()), {k: v for k, v in outcome.items()
                                                    if not all(v)}


def test_security_scan_sees_demo_mode_and_allow_any_host(kit):
    """The scan that runs after every hardware test is not blind: switch each door
    open on one of our objects, see it reported, close it again."""
    protocol, target, volume, host = kit
    a = host("a")
    target.admit(volume, a.id, "rw", a.credentials)
    assert open_doors() == []
    if protocol == "iscsi":
        where = CONFIGFS / "target/iscsi" / target.target_iqn(volume) / "tpgt_1"
        attrib = where / "attrib"
        doors = {"authentication": "0", "demo_mode_discovery": "1",
                 "generate_node_acls": "1"}
    else:
        # the volume's own subsystem: the kernel refuses allow_any_host while a
        # subsystem lists hosts, so a host's view cannot even be opened this way
        where = attrib = CONFIGFS / "nvmet/subsystems" / target.volume_nqn(volume)
        doors = {"attr_allow_any_host": "1"}
    for attr, value in doors.items():
        before = (attrib / attr).read_text().strip()
        (attrib / attr).write_text(value)
        try:
            found = open_doors()
        finally:
            (attrib / attr).write_text(before)
        assert found and all(str(where.relative_to(CONFIGFS)) in f for f in found), \
            (attr, found)
    assert open_doors() == []
