"""The scheduler's room check, as Cinder's CapacityFilter: a full pool takes nothing."""
import pytest

from shareblock.control.scheduling import no_room
from tests.unit.test_control import env, make_types  # noqa: F401  (fixture)

THIN = {"thin_provisioning_support": True, "max_over_subscription_ratio": 20.0,
        "reserved_percentage": 0}


@pytest.mark.parametrize("pool, size, fits", [
    ({**THIN, "total_capacity_gb": 10, "free_capacity_gb": 9, "provisioned_capacity_gb": 1},
     50, True),                                  # thin: over-subscribed within the ratio
    ({**THIN, "total_capacity_gb": 10, "free_capacity_gb": 0.0, "provisioned_capacity_gb": 1},
     1, False),                                  # full: nothing, however thin
    ({**THIN, "total_capacity_gb": 10, "free_capacity_gb": 9, "provisioned_capacity_gb": 195},
     10, False),                                 # past the over-subscription ratio
    ({**THIN, "total_capacity_gb": 0.25, "free_capacity_gb": 0.01,
      "provisioned_capacity_gb": 0}, 1, False),  # 0.2 GiB of virtual room left
    ({**THIN, "total_capacity_gb": 10, "free_capacity_gb": 1, "provisioned_capacity_gb": 1,
      "reserved_percentage": 10}, 1, False),     # the free GiB is the reserve
    ({"total_capacity_gb": 10, "free_capacity_gb": 2, "thin_provisioning_support": False},
     3, False),                                  # thick: free space only
])
def test_no_room(pool, size, fits):
    assert (no_room(pool, size) is None) == fits


def test_create_on_a_full_pool_is_an_error_volume_and_nothing_is_made(env):  # noqa: F811
    cp = env()
    make_types(cp)
    pool = cp.driver("lio").pool
    pool.capacity = lambda: {"total_capacity_gb": 1.0, "free_capacity_gb": 0.0,
                             "provisioned_capacity_gb": 1.0}
    vol = cp.create(1, "multiattach")
    assert vol["status"] == "error" and "has no room for 1 GiB" in vol["error"]
    assert vol["id"] not in pool.volumes
    cp.delete(vol["id"])
    assert cp.volume_list() == []
