"""Snapshots, volumes from snapshots and copies, revert, honest retype: the
control plane's rules (Cinder's) on fake targets, a memory pool and real SQLite."""
import json

import pytest

from shareblock.cli.main import run_captured
from shareblock.control.api import Conflict, InvalidInput, NotFound
from shareblock.control.policy import PolicyNotAuthorized
from tests.unit.test_control import env, hosts_on_target, iscsi, make_types  # noqa: F401


@pytest.fixture
def cp(env):  # noqa: F811
    plane = env()
    make_types(plane)
    return plane


def pool(cp, backend="lio"):
    return cp.driver(backend).pool


def test_snapshot_of_an_in_use_multiattach_volume_detaches_nobody(cp):
    vol = cp.create(2, "multiattach", name="shared")
    a = cp.attachment_create(vol["id"], iscsi(1))
    cp.attachment_create(vol["id"], iscsi(2), mode="ro")
    cp.attachment_complete(a["id"])
    before = hosts_on_target(cp, vol["id"])
    pool(cp).data[vol["id"]] = "written-by-a"
    snap = cp.snapshot_create("shared", name="s1")
    assert {k: snap[k] for k in ("volume_id", "status", "size", "name")} == {
        "volume_id": vol["id"], "status": "available", "size": 2, "name": "s1"}
    assert hosts_on_target(cp, vol["id"]) == before and len(before) == 2
    assert cp.show(vol["id"])["status"] == "in-use"
    assert pool(cp).snapshots[snap["id"]] == (vol["id"], "written-by-a")
    assert cp.snapshot_show("s1")["id"] == snap["id"]
    assert [s["id"] for s in cp.snapshot_list(vol["id"])] == [snap["id"]]
    assert cp.snapshot_list() == [cp.snapshot_show(snap["id"])]


def test_snapshot_needs_an_available_or_in_use_volume_and_a_good_name(cp):
    vol = cp.create(1, "plain")
    with pytest.raises(InvalidInput):
        cp.snapshot_create(vol["id"], name="../x")
    cp._set(vol["id"], status="extending")
    with pytest.raises(Conflict, match="extending"):
        cp.snapshot_create(vol["id"])
    with pytest.raises(NotFound):
        cp.snapshot_create("no-such-volume")
    assert cp.snapshot_list() == []


def test_a_failed_snapshot_is_an_error_snapshot_that_can_be_deleted(cp):
    vol = cp.create(1, "plain")
    pool(cp).volumes.pop(vol["id"])  # the pool lost it: its snapshot fails
    snap = cp.snapshot_create(vol["id"])
    assert snap["status"] == "error" and "no volume" in snap["error"]
    cp.snapshot_delete(snap["id"])
    assert cp.snapshot_list() == []


def test_a_volume_with_snapshots_is_not_deleted(cp):
    vol = cp.create(1, "plain")
    snap = cp.snapshot_create(vol["id"])
    with pytest.raises(Conflict, match="1 dependent snapshot"):
        cp.delete(vol["id"])
    assert cp.show(vol["id"])["status"] == "available" and vol["id"] in pool(cp).volumes
    cp.snapshot_delete(snap["id"])
    assert snap["id"] not in pool(cp).snapshots
    cp.delete(vol["id"])
    with pytest.raises(NotFound):
        cp.show(vol["id"])


def test_snapshot_space_counts_in_the_pool(cp):
    vol = cp.create(3, "plain")
    before = cp.driver("lio").get_volume_stats(refresh=True)["pools"][0]
    cp.snapshot_create(vol["id"])
    after = cp.driver("lio").get_volume_stats(refresh=True)["pools"][0]
    assert after["provisioned_capacity_gb"] == before["provisioned_capacity_gb"] + 3


def test_volume_from_a_snapshot_takes_its_type_and_size_unless_given(cp):
    vol = cp.create(2, "multiattach")
    pool(cp).data[vol["id"]] = "v1"
    snap = cp.snapshot_create(vol["id"])
    pool(cp).data[vol["id"]] = "v2"
    made = cp.create(snapshot_id=snap["id"], name="restored")
    assert (made["status"], made["size"], made["volume_type"], made["multiattach"],
            made["snapshot_id"]) == ("available", 2, "multiattach", True, snap["id"])
    assert made["os-vol-host-attr:host"] == vol["os-vol-host-attr:host"]
    assert pool(cp).data[made["id"]] == "v1"
    bigger = cp.create(5, "plain", snapshot_id=snap["id"])
    assert (bigger["size"], bigger["volume_type"], bigger["multiattach"]) == (5, "plain", False)
    with pytest.raises(InvalidInput, match="smaller"):
        cp.create(1, snapshot_id=snap["id"])
    with pytest.raises(InvalidInput, match="not both"):
        cp.create(snapshot_id=snap["id"], source_volid=vol["id"])
    with pytest.raises(Conflict, match="another backend"):
        cp.create(snapshot_id=snap["id"], volume_type="ma-nvme")
    with pytest.raises(InvalidInput, match="size is required"):
        cp.create(volume_type="plain")
    assert len(cp.volume_list()) == 3


def test_copy_of_a_volume_takes_its_type_and_size(cp):
    vol = cp.create(2, "multiattach")
    cp.attachment_complete(cp.attachment_create(vol["id"], iscsi(1))["id"])
    pool(cp).data[vol["id"]] = "live"
    copy = cp.create(source_volid=vol["id"])
    assert (copy["size"], copy["volume_type"], copy["source_volid"]) == (
        2, "multiattach", vol["id"])
    assert pool(cp).data[copy["id"]] == "live"
    assert cp.show(vol["id"])["status"] == "in-use"  # untouched


def test_revert_to_the_latest_snapshot_only_of_an_available_volume(cp):
    vol = cp.create(1, "plain")
    pool(cp).data[vol["id"]] = "one"
    first = cp.snapshot_create(vol["id"])
    pool(cp).data[vol["id"]] = "two"
    second = cp.snapshot_create(vol["id"])
    pool(cp).data[vol["id"]] = "three"
    with pytest.raises(Conflict, match="not the latest"):
        cp.revert_to_snapshot(first["id"])
    att = cp.attachment_create(vol["id"], iscsi(1))
    with pytest.raises(Conflict, match="available volume"):
        cp.revert_to_snapshot(second["id"])
    assert pool(cp).data[vol["id"]] == "three"
    cp.attachment_delete(att["id"])
    out = cp.revert_to_snapshot(second["id"])
    assert out["status"] == "available" and pool(cp).data[vol["id"]] == "two"
    assert cp.snapshot_show(second["id"])["status"] == "available"


def test_revert_refused_by_the_driver_while_a_host_is_admitted(cp):
    vol = cp.create(1, "plain")
    snap = cp.snapshot_create(vol["id"])
    drv = cp.driver("lio")
    drv.create_export(None, {"id": vol["id"]})
    drv.initialize_connection({"id": vol["id"]}, iscsi(9))
    with pytest.raises(Exception, match="detach them"):
        drv.revert_to_snapshot(None, {"id": vol["id"], "size": 1}, {"id": snap["id"]})


def test_snapshot_policy_follows_cinders_rule_names(env):  # noqa: F811
    root = env()
    make_types(root)
    vol = root.create(1, "plain")
    nobody = env(user="nobody")
    with pytest.raises(PolicyNotAuthorized):
        nobody.snapshot_create(vol["id"])
    alice = env(user="alice")  # a plane of its own: its own memory pool
    mine = alice.create(1, "plain")
    assert alice.snapshot_create(mine["id"])["status"] == "available"


def test_retype_is_refused_by_the_driver_when_the_backend_cannot_honour_it(cp):
    drv = cp.driver("lio")
    assert drv.retype(None, {"id": "v"}, {"extra_specs": {"volume_backend_name": "lio"}},
                      {}, "h") == (True, None)
    for specs in ({"volume_backend_name": "nvme"}, {"storage_protocol": "NVMe-oF"}):
        assert drv.retype(None, {"id": "v"}, {"extra_specs": specs}, {}, "h") == (False, None)
    diff = {"encryption": {"cipher": (None, "aes-xts-plain64")}}
    assert drv.retype(None, {"id": "v"}, {"extra_specs": {}}, diff, "h") == (False, None)
    for specs, ok in (({"capabilities:QoS_support": "<is> True"}, False),
                      ({"replication_enabled": "<is> True"}, False),
                      ({"thick_provisioning_support": "<is> True"}, False),
                      ({"thin_provisioning_support": "<is> True",
                        "shareblock:fs_guard": "warn"}, True),
                      ({"capabilities:max_over_subscription_ratio": ">= 10"}, True),
                      ({"storage_protocol": "<in> iSCSI"}, True)):
        assert drv.retype(None, {"id": "v"}, {"extra_specs": specs}, {}, "h") == (ok, None), \
            specs


def cli(config, *argv):
    rc, out, err = run_captured(["--config", str(config), *argv])
    return rc, out, err


@pytest.fixture
def conf(cp, tmp_path, monkeypatch):
    """The CLI's control plane is the test's (fake targets, memory pools)."""
    monkeypatch.setattr("shareblock.control.api.ControlPlane", lambda conf: cp)
    return tmp_path / "shareblock-root.conf"


def test_cli_snapshot_commands_and_options_after_the_command(cp, conf):
    vol = cp.create(1, "plain", name="v")
    rc, out, _ = cli(conf, "snapshot-create", "v", "--name", "s", "--json")
    assert rc == 0
    snap = json.loads(out)
    assert {"id", "volume_id", "status", "size", "name"} <= set(snap)
    rc, out, _ = run_captured(["snapshot-show", "s", "--json", "--config", str(conf)])
    assert rc == 0 and json.loads(out)["id"] == snap["id"]
    rc, out, _ = cli(conf, "snapshot-list", "--volume-id", vol["id"], "--json")
    assert [s["id"] for s in json.loads(out)] == [snap["id"]]
    rc, out, _ = cli(conf, "create", "--snapshot-id", "s", "--name", "w", "--json")
    made = json.loads(out)
    assert rc == 0 and made["size"] == 1 and made["snapshot_id"] == snap["id"]
    rc, out, _ = cli(conf, "create", "--source-volid", "v", "--json")
    assert rc == 0 and json.loads(out)["source_volid"] == vol["id"]
    rc, out, _ = cli(conf, "revert-to-snapshot", "s", "--json")
    assert rc == 0 and json.loads(out)["id"] == vol["id"]
    rc, _, err = cli(conf, "delete", "v")
    assert rc == 4 and "dependent snapshot" in err
    rc, out, _ = cli(conf, "snapshot-delete", "s")
    assert rc == 0 and cp.snapshot_list() == []
    rc, out, _ = cli(conf, "show", "v", "--json")
    assert rc == 0 and json.loads(out)["name"] == "v"


def test_cli_attachment_create_takes_the_server_id_positionally(cp, conf):
    vol = cp.create(1, "plain", name="v")
    rc, out, _ = cli(conf, "attachment-create", "v", "server-1", "--json")
    assert rc == 0 and json.loads(out)["instance"] == "server-1"
    rc, _, err = cli(conf, "attachment-create", "v", "server-1", "--instance", "server-2")
    assert rc == 2 and "different servers" in err
    assert len(cp.attachment_list(vol["id"])) == 1


def test_reconcile_finishes_snapshot_work_a_crash_cut_short(cp):
    vol = cp.create(1, "plain")
    pool(cp).data[vol["id"]] = "one"
    done = cp.snapshot_create(vol["id"])
    pool(cp).data[vol["id"]] = "two"
    # a revert cut short: both marked, the pool untouched
    cp._set(vol["id"], status="reverting")
    cp._set_snapshot(done["id"], status="restoring")
    gone = cp.snapshot_create(cp.create(1, "plain")["id"])
    cp._set_snapshot(gone["id"], status="deleting")
    taking = cp.snapshot_create(cp.create(1, "plain")["id"])
    cp._set_snapshot(taking["id"], status="creating")
    report = cp.reconcile()
    assert sorted(report["snapshots"]) == sorted([done["id"], gone["id"], taking["id"]])
    assert pool(cp).data[vol["id"]] == "one"
    assert cp.show(vol["id"])["status"] == "available"
    assert cp.snapshot_show(done["id"])["status"] == "available"
    with pytest.raises(NotFound):
        cp.snapshot_show(gone["id"])
    assert cp.snapshot_show(taking["id"])["status"] == "error"
    assert taking["id"] not in pool(cp).snapshots and gone["id"] not in pool(cp).snapshots
    assert cp.reconcile()["snapshots"] == []
    # the revert's end written for the volume, not yet for the snapshot: not reverted again
    pool(cp).data[vol["id"]] = "written after the revert"
    cp._set_snapshot(done["id"], status="restoring")
    assert cp.reconcile()["snapshots"] == [done["id"]]
    assert pool(cp).data[vol["id"]] == "written after the revert"
    assert cp.snapshot_show(done["id"])["status"] == "available"


def test_capability_specs_match_as_cinders_filter():
    from shareblock.driver.capabilities import matches, mismatch
    assert matches(True, "<is> True") and not matches(False, "<is> True")
    assert matches("iSCSI", "<in> iSCSI") and matches(20.0, ">= 10") and not matches(5, ">= 10")
    assert matches("b", "<or> a <or> b") and not matches("c", "<or> a <or> b")
    assert matches("x", "x") and not matches(None, ">= 1") and not matches("a", ">= 1")
    stats = {"volume_backend_name": "lio", "storage_protocol": "iSCSI", "multiattach": True,
             "pools": [{"QoS_support": False}]}
    assert mismatch(stats, {"foo": "bar"}) == "does not report foo"
    assert "QoS_support" in mismatch(stats, {"QoS_support": "<is> True"})
    assert mismatch(stats, {"qos:maxIOPS": "100", "shareblock:fs_guard": "off"}) is None


def test_a_volume_being_copied_keeps_its_data_and_size(cp):
    vol = cp.create(1, "plain")
    copy = cp.create(source_volid=vol["id"])
    cp._set(copy["id"], status="creating")  # as while the copy runs
    for attempt in (lambda: cp.extend(vol["id"], 2), lambda: cp.delete(vol["id"])):
        with pytest.raises(Conflict, match="being copied"):
            attempt()
    snap = cp.snapshot_create(vol["id"])
    with pytest.raises(Conflict, match="being copied"):
        cp.revert_to_snapshot(snap["id"])
    assert cp.show(vol["id"])["size"] == 1 and cp.show(vol["id"])["status"] == "available"


def test_revert_needs_the_snapshots_size_and_a_failed_one_leaves_error(cp):
    vol = cp.create(1, "plain")
    snap = cp.snapshot_create(vol["id"])
    cp.extend(vol["id"], 2)
    with pytest.raises(InvalidInput, match="same size"):
        cp.revert_to_snapshot(snap["id"])
    assert cp.show(vol["id"])["status"] == "available"
    vol = cp.create(1, "plain")
    snap = cp.snapshot_create(vol["id"])
    pool(cp).snapshots.pop(snap["id"])  # the pool lost it: the revert fails
    with pytest.raises(Exception, match="revert to snapshot"):
        cp.revert_to_snapshot(snap["id"])
    shown = cp.show(vol["id"])
    assert shown["status"] == "error" and "revert" in shown["error"]
    assert cp.snapshot_show(snap["id"])["status"] == "available"


def test_cli_delete_goes_on_past_a_failure_and_reports_each(cp, conf):
    cp.create(1, "plain", name="a")
    cp.create(1, "plain", name="b")
    cp.snapshot_create("a")
    rc, _, err = cli(conf, "delete", "a", "missing", "b")
    assert rc == 4 and "a:" in err and "missing:" in err and len(err.strip().splitlines()) == 1
    assert [v["name"] for v in cp.volume_list()] == ["a"], "b was still deleted"
    rc, _, err = cli(conf, "snapshot-delete", "nope")
    assert rc == 3 and "not found" in err


def test_a_long_copys_progress_stays_off_a_pipe_and_json(cp, conf, monkeypatch):
    """A copy's service-log lines and ticks never reach a script's stderr (the
    terminal's line is test_progress's)."""
    import logging

    def copy_with_progress(vid, sid):
        logging.getLogger("shareblock.progress").info("snapshot %s: 8 of 16 MiB copied", sid)
        logging.getLogger("shareblock.progress.ticks").info(
            "x", extra={"what": f"snapshot {sid}", "done": 8, "total": 16})
        return "copy"
    monkeypatch.setattr(pool(cp), "snapshot", copy_with_progress)
    cp.create(1, "plain", name="v")
    for json_flag in (["--json"], []):
        rc, out, err = cli(conf, "snapshot-create", "v", *json_flag)
        assert rc == 0 and "error" not in err
        assert "copied" not in err and "snapshot" not in err, err
