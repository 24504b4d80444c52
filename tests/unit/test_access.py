"""The host-access rule, a row each (the driver keeping to it: test_driver.py)."""
import pytest

from shareblock.driver import access


@pytest.mark.parametrize("modes, expected", [
    ([], None),                 # no live attachment: not admitted
    (["ro"], "ro"),
    (["rw"], "rw"),
    (["rw", "ro"], "rw"),       # VM 1 rw + VM 2 ro on one hypervisor: rw
    (["ro", "rw"], "rw"),       # order does not matter
    (["ro", "ro"], "ro"),
])
def test_host_mode_rule(modes, expected):
    assert access.host_mode(modes) == expected


def test_host_mode_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="rw or ro"):
        access.host_mode(["rw", "wo"])


def test_host_modes_count_live_attachments_only():
    atts = [{"host": "a", "attach_mode": "rw", "attach_status": "detached"},
            {"host": "a", "attach_mode": "ro", "attach_status": "attached"},
            {"host": "b", "attach_mode": "rw", "attach_status": "attaching"},
            {"host": None, "attach_mode": "rw", "attach_status": "reserved"},
            {"host": "c", "attach_mode": "rw", "attach_status": "deleted"}]
    assert access.host_modes(atts, lambda a: a["host"]) == {"a": "ro", "b": "rw"}
