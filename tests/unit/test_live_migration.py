"""Live migration as Nova and Cinder do it: a second attachment of the same
instance on the destination host, the source's deleted when the move ends."""
import subprocess

import pytest

from shareblock.control.api import Conflict
from shareblock.driver import access
from tests.unit.fakes import ImagePool
from tests.unit.test_control import env, hosts_on_target, iscsi, make_types  # noqa: F401

SRC, DST, OTHER = iscsi(1), iscsi(2), iscsi(3)


@pytest.fixture
def cp(env, tmp_path):  # noqa: F811
    plane = env()
    plane.driver("lio").pool = ImagePool(tmp_path, image_mb=16)
    make_types(plane)
    return plane


def test_single_attach_volume_moves_with_its_instance_and_no_other(cp):
    vol = cp.create(1, "plain")
    src = cp.attachment_complete(cp.attachment_create(vol["id"], SRC, instance="vm-1")["id"])
    with pytest.raises(Conflict, match="not multiattach"):
        cp.attachment_create(vol["id"], OTHER, instance="vm-2")
    with pytest.raises(Conflict, match="not multiattach"):
        cp.attachment_create(vol["id"], OTHER)  # no instance named: not a migration
    dst = cp.attachment_create(vol["id"], DST, instance="vm-1")
    assert cp.show(vol["id"])["status"] == "in-use"
    assert hosts_on_target(cp, vol["id"]) == {SRC["initiator"]: "rw", DST["initiator"]: "rw"}
    cp.attachment_complete(dst["id"])
    cp.attachment_delete(src["id"])
    assert cp.show(vol["id"])["status"] == "in-use"
    assert hosts_on_target(cp, vol["id"]) == {DST["initiator"]: "rw"}
    with pytest.raises(Conflict):
        cp.attachment_create(vol["id"], OTHER, instance="vm-2")


def test_migrating_instance_on_ext4_is_one_writer_another_is_guarded(cp):
    vol = cp.create(1, "multiattach")
    src = cp.attachment_create(vol["id"], SRC, instance="vm-1")
    subprocess.run(["mkfs.ext4", "-q", cp.driver("lio").pool.device(vol["id"])], check=True)
    dst = cp.attachment_create(vol["id"], DST, instance="vm-1")
    assert dst["attach_mode"] == "rw" and dst["reason"] is None
    assert cp.guard_pass() == []  # the run-time pass sees one writer too
    assert hosts_on_target(cp, vol["id"]) == {SRC["initiator"]: "rw", DST["initiator"]: "rw"}
    other = cp.attachment_create(vol["id"], OTHER, instance="vm-2")
    assert other["attach_mode"] == "ro" and "ext4" in other["reason"]
    cp.attachment_delete(src["id"])
    assert hosts_on_target(cp, vol["id"]) == {DST["initiator"]: "rw",
                                              OTHER["initiator"]: "ro"}


def test_run_time_guard_demotes_a_migrating_pair_together(cp):
    vol = cp.create(1, "multiattach")
    cp.attachment_create(vol["id"], SRC, instance="vm-1")
    cp.attachment_create(vol["id"], DST, instance="vm-1")
    cp.attachment_create(vol["id"], OTHER, instance="vm-2")  # blank volume: rw
    subprocess.run(["mkfs.ext4", "-q", cp.driver("lio").pool.device(vol["id"])], check=True)
    done = cp.guard_pass()
    # vm-1 attached first: it keeps rw on both of its hosts; vm-2 is demoted
    assert [(d["host"], d["action"]) for d in done] == [(OTHER["initiator"], "demoted")]
    assert hosts_on_target(cp, vol["id"]) == {SRC["initiator"]: "rw", DST["initiator"]: "rw",
                                              OTHER["initiator"]: "ro"}


def test_one_writer_groups_and_same_writer():
    def att(host, instance, mode="rw"):
        return {"host": host, "instance_uuid": instance, "attach_mode": mode}
    atts = [att("a", "x"), att("b", "x"), att("c", "y"), att("d", "x"), att("d", "z"),
            att("e", None), att("f", None), att("g", "x", "ro")]
    assert access.one_writer_groups(atts, lambda a: a["host"]) == [
        ["a", "b"], ["c"], ["d"], ["e"], ["f"]]
    assert access.same_writer(atts, lambda a: a["host"], "h", "x") == {"a", "b"}
    assert access.same_writer(atts, lambda a: a["host"], "h", None) == set()


def test_run_time_guard_demotes_both_ends_of_a_migration_together(cp):
    vol = cp.create(1, "multiattach")
    cp.attachment_create(vol["id"], OTHER, instance="vm-2")  # the earliest writer keeps rw
    cp.attachment_create(vol["id"], SRC, instance="vm-1")
    cp.attachment_create(vol["id"], DST, instance="vm-1")
    subprocess.run(["mkfs.ext4", "-q", cp.driver("lio").pool.device(vol["id"])], check=True)
    done = cp.guard_pass()
    assert sorted((d["host"], d["action"]) for d in done) == sorted(
        [(SRC["initiator"], "demoted"), (DST["initiator"], "demoted")])
    assert hosts_on_target(cp, vol["id"]) == {SRC["initiator"]: "ro", DST["initiator"]: "ro",
                                              OTHER["initiator"]: "rw"}
