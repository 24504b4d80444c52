"""Crash injection on the real kernel: kill shareblock at every step, reconcile, check.

Each operation (create, attach = export + admit, detach, retype, guard demotion,
delete) runs in a forked child armed to os._exit() at its Nth crash point
(shareblock.targets.crashpoints): whatever the kernel, the pool and the database
hold at that instant stays, as after a kill -9. The parent then runs reconcile
and checks against configfs (target.actual(), backstores, dm views), the
database, the driver state and the pool that everything converged
(crashlib.violations), then detaches and deletes everything through the control
plane, which must work and leave nothing behind.

Full mode tries every point of every operation on both transports; quick mode one
point of half the operations per transport, chosen afresh each day (seed reported).
"""
import random
import time

import pytest

from shareblock.control import config
from shareblock.control.api import ControlPlane
from tests import crashlib
from tests.hardware.reliability.conftest import MODE


@pytest.fixture
def make_cp(tmp_path, unique):
    """A fresh control plane per call, as a restarted process would have."""
    path = crashlib.lab_conf(tmp_path, unique)

    def make():
        return ControlPlane(config.load(str(path)), user="root")
    yield make
    crashlib.clean_up(make())


@pytest.mark.parametrize("protocol", ["iscsi", "nvmet_tcp"])
def test_every_crash_point_converges(make_cp, protocol, report, capsys):
    t = crashlib.make_types(make_cp(), protocol)
    seed = time.strftime("%Y%m%d")
    rng = random.Random(f"{seed}-{protocol}")
    known: set[str] = set()
    per_op, failed, tried = {}, [], 0
    started = time.monotonic()
    operations = sorted(crashlib.OPERATIONS)
    if MODE != "full":  # quick: half the operations per transport, one point each
        operations = operations[protocol == "nvmet_tcp"::2]
    for operation in operations:
        points = crashlib.TRAILS[operation].split()
        if MODE == "full":  # an uninterrupted run first: it must pass these very points
            assert crashlib.points_of(make_cp, t, operation, True, known) == points
            chosen = range(1, len(points) + 1)
        else:
            chosen = [rng.randint(1, len(points))]
        ok = 0
        for n in chosen:
            case = crashlib.crash_case(make_cp, t, operation, n, True, known)
            tried += 1
            assert case["outcome"] == "crashed" and case["point"] == points[n - 1], case
            if case["violations"]:
                failed.append((operation, n, case["point"], case["violations"]))
            else:
                ok += 1
        per_op[operation] = {"points": len(points), "tried": len(chosen), "converged": ok,
                             "at": [f"{n}:{points[n - 1]}" for n in chosen]}
    with capsys.disabled():
        print(f"\n[crash {protocol} {MODE}] {tried} crash points in "
              f"{time.monotonic() - started:.0f} s")
        for op, d in per_op.items():
            print(f"  {op:18} {d['converged']}/{d['tried']} converged of {d['points']} "
                  f"points: {' '.join(d['at'])}")
    report(tried=tried, survived=tried - len(failed), lost=len(failed), unit="crash points",
           protocol=protocol, seed=None if MODE == "full" else seed, operations=per_op)
    assert not failed, failed
