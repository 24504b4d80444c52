"""Crash points and reconcile on fake targets: every point of every operation.

The lab runs the same matrix on the real kernel with forked children
(tests/hardware/reliability/test_crash.py); here the crash is a BaseException
raised at the point, which no `except Exception` rollback catches.
"""
import pytest

from shareblock.control import config
from shareblock.control.api import ControlPlane
from shareblock.targets import crashpoints
from tests import crashlib
from tests.unit.fakes import ImagePool, fake_driver, fake_kernel
from tests.unit.test_control import CONF_TEXT


@pytest.fixture
def make_cp(tmp_path, monkeypatch):
    root = fake_kernel(monkeypatch, tmp_path / "configfs")
    state = tmp_path / "state"
    path = tmp_path / "shareblock.conf"
    path.write_text(CONF_TEXT.format(state=state, policy=""))
    conf = config.load(str(path))
    drivers = {name: fake_driver(root, state, proto, name)
               for name, proto in (("lio", "iscsi"), ("nvme", "nvmet_tcp"))}
    for name, drv in drivers.items():
        drv.pool = ImagePool(tmp_path / f"pool-{name}")
    # a fresh control plane each time, as a restarted process; the "kernel" stays
    return lambda: ControlPlane(conf, user="root", drivers=drivers)


def test_unarmed_points_do_nothing_and_armed_ones_count():
    crashpoints.reached("commit")
    crashpoints.arm(2, action="raise")
    crashpoints.reached("commit")
    with pytest.raises(crashpoints.Crash, match="2: export"):
        crashpoints.reached("export")
    crashpoints.reached("admit")  # disarmed by the crash
    assert crashpoints.disarm() == []
    cut = []
    crashpoints.arm(1, action="continue", on_crash=cut.append)
    for name in ("commit", "export", "admit"):
        crashpoints.reached(name)
    assert cut == [["commit"]] and crashpoints.disarm() == ["commit", "export", "admit"]
    with pytest.raises(ValueError):
        crashpoints.arm(1, action="explode")


@pytest.mark.parametrize("protocol", ["iscsi", "nvmet_tcp"])
@pytest.mark.parametrize("operation", sorted(crashlib.OPERATIONS))
def test_every_crash_point_converges(make_cp, protocol, operation):
    t = crashlib.make_types(make_cp(), protocol)
    known: set[str] = set()
    points = crashlib.points_of(make_cp, t, operation, False, known)
    assert " ".join(points) == crashlib.TRAILS[operation]
    failed = []
    for n in range(1, len(points) + 1):
        case = crashlib.crash_case(make_cp, t, operation, n, False, known)
        assert case["outcome"] == "crashed" and case["point"] == points[n - 1]
        if case["violations"]:
            failed.append((n, case["point"], case["violations"]))
    assert not failed, failed


@pytest.mark.parametrize("operation", sorted(crashlib.OPERATIONS))
def test_reconcile_crashing_too_still_converges(make_cp, operation):
    """Crash the operation at each point, then crash reconcile itself at its 1st,
    2nd, ... point in turn until one run finishes: the end state is converged."""
    t = crashlib.make_types(make_cp(), "nvmet_tcp")
    known: set[str] = set()
    failed, recrashes = [], 0
    for n in range(1, len(crashlib.TRAILS[operation].split()) + 1):
        case = crashlib.crash_case(make_cp, t, operation, n, False, known, recrash=True)
        recrashes += case["reconcile_crashes"]
        if case["violations"]:
            failed.append((n, case["point"], case["reconcile_crashes"], case["violations"]))
    assert not failed, failed
    assert recrashes or operation == "retype", "reconcile was never interrupted"
