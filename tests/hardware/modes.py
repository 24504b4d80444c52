"""Quick and full mode of the hardware and Cinder suites.

CI runs the quick mode (scripts/test.sh sets SHAREBLOCK_QUICK=1): variants whose
path other tests already cover there run in full mode only, by their own script
(scripts/cluster.sh for reservations and fencing, scripts/cinder.sh for Cinder).
By hand, without the variable, everything runs.
"""
import os

import pytest

QUICK = os.environ.get("SHAREBLOCK_QUICK") == "1"


def full_only(script: str):
    return pytest.mark.skipif(QUICK, reason=f"full mode only ({script})")
