"""The backend driver on fake targets (fake configfs) and an in-memory pool."""
import os
import stat

import pytest

from shareblock.targets import names
from tests.unit.fakes import fake_driver, fake_kernel


@pytest.fixture(params=["iscsi", "nvmet_tcp"])
def driver(request, tmp_path, monkeypatch):
    root = fake_kernel(monkeypatch, tmp_path / "configfs")
    return fake_driver(root, tmp_path / "state", request.param, "sb1")


def connector(drv, n, **extra):
    if drv.protocol == "iscsi":
        return {"initiator": f"iqn.2026-11.io.test:host{n}", "host": f"h{n}", **extra}
    return {"nqn": f"nqn.2014-08.org.nvmexpress:uuid:0000000{n}-0000-4000-8000-000000000000",
            "host": f"h{n}", **extra}


def volume(attachments=()):
    return {"id": "vol-1", "size": 1, "volume_attachment": list(attachments)}


def admitted(drv):
    seen = drv.target.actual("vol-1").get("vol-1")
    return {h: s.mode for h, s in seen.hosts.items()} if seen else {}


def test_stats_report_multiattach_protocol_and_pool(driver):
    stats = driver.get_volume_stats(refresh=True)
    assert stats["multiattach"] is True and stats["volume_backend_name"] == "sb1"
    assert stats["storage_protocol"] == ("iSCSI" if driver.protocol == "iscsi" else "NVMe-oF")
    pool = stats["pools"][0]
    assert pool["total_capacity_gb"] == 100.0 and pool["thin_provisioning_support"]
    driver.configuration["shareblock_multiattach"] = False
    assert driver.get_volume_stats(refresh=True)["multiattach"] is False


def test_connection_info_in_os_brick_shape_with_own_credentials(driver):
    vol = volume()
    driver.create_volume(vol)
    driver.create_export(None, vol, None)
    one = driver.initialize_connection(vol, connector(driver, 1))
    two = driver.initialize_connection(vol, connector(driver, 2, mode="ro"))
    again = driver.initialize_connection(vol, connector(driver, 1))
    if driver.protocol == "iscsi":
        assert one["driver_volume_type"] == "iscsi"
        d = one["data"]
        assert {"target_iqn", "target_portal", "target_lun", "auth_method", "auth_username",
                "auth_password", "access_mode"} <= set(d)
        assert d["target_portal"] == "127.0.0.1:3260" and d["target_lun"] == 0
        assert d["auth_password"] != two["data"]["auth_password"]
        assert again["data"]["auth_password"] == d["auth_password"]
    else:
        assert one["driver_volume_type"] == "nvmeof"
        d = one["data"]
        assert {"target_nqn", "vol_uuid", "portals", "access_mode"} <= set(d)
        assert d["portals"] == [("127.0.0.1", 4420, "tcp")]
        assert d["target_nqn"] != two["data"]["target_nqn"]
    assert one["data"]["access_mode"] == "rw" and two["data"]["access_mode"] == "ro"
    assert admitted(driver) == {driver.host_id(connector(driver, 1)): "rw",
                                driver.host_id(connector(driver, 2)): "ro"}


def test_ro_attachment_on_the_volume_is_enforced(driver):
    vol = volume([{"id": "a1", "attach_mode": "ro", "connector": connector(driver, 3)}])
    driver.create_export(None, vol, None)
    info = driver.initialize_connection(vol, connector(driver, 3))
    assert info["data"]["access_mode"] == "ro"
    assert admitted(driver)[driver.host_id(connector(driver, 3))] == "ro"


def test_terminate_keeps_the_export_while_others_share_it(driver):
    c1, c2 = connector(driver, 1), connector(driver, 2)
    a1 = {"id": "a1", "connector": c1, "attach_status": "attached"}
    a2 = {"id": "a2", "connector": c2, "attach_status": "attached"}
    vol = volume([a1, a2])
    driver.create_export(None, vol, None)
    driver.initialize_connection(vol, c1)
    driver.initialize_connection(vol, c2)
    assert driver.terminate_connection(vol, c1, attachment=a1) is True
    assert set(admitted(driver)) == {driver.host_id(c2)}
    vol = volume([a2])
    assert driver.terminate_connection(vol, c2, attachment=a2) is None
    assert admitted(driver) == {}


def test_same_host_twice_stays_admitted_until_its_last_attachment(driver):
    c1 = connector(driver, 1)
    a1 = {"id": "a1", "connector": c1}
    a2 = {"id": "a2", "connector": c1}
    vol = volume([a1, a2])
    driver.create_export(None, vol, None)
    driver.initialize_connection(vol, c1)
    assert driver.terminate_connection(vol, c1, attachment=a1) is True
    assert set(admitted(driver)) == {driver.host_id(c1)}


@pytest.mark.parametrize("bad", [None, {}, {"initiator": "../../x", "nqn": "nqn.bad"},
                                 {"initiator": "iqn.2026-11.io.x:y", "mode": "wo",
                                  "nqn": "nqn.2026-11.io.x:y"}])
def test_bad_connector_is_refused_and_changes_nothing(driver, bad):
    vol = volume()
    driver.create_export(None, vol, None)
    with pytest.raises(names.InvalidName):
        driver.initialize_connection(vol, bad)
    assert admitted(driver) == {}


def test_ensure_export_restores_hosts_with_the_same_secrets(driver):
    vol = volume()
    driver.create_export(None, vol, None)
    first = driver.initialize_connection(vol, connector(driver, 1, mode="ro"))
    vol["volume_attachment"] = [att(driver, 1, "ro", "a1")]
    driver.target.kernel.unexport("vol-1")  # a reboot: configfs empty, documents kept
    assert admitted(driver) == {}
    driver.ensure_export(None, vol)
    assert admitted(driver) == {driver.host_id(connector(driver, 1)): "ro"}
    again = driver.initialize_connection(vol, connector(driver, 1, mode="ro"))
    assert again == first


def test_ensure_export_without_the_nodes_document_rebuilds_from_attachments(driver):
    """A node that lost its documents: the live attachments say who, the derived
    secrets are the ones the hosts hold, and a mode configfs still lowers stays low."""
    c1, c2 = connector(driver, 1), connector(driver, 2)
    vol = volume()
    driver.create_export(None, vol, None)
    first = driver.initialize_connection(vol, c1)
    vol["volume_attachment"] = [{"id": "a1", "attach_mode": "rw", "connector": c1}]
    driver.initialize_connection(vol, c2)
    driver.set_host_mode("vol-1", driver.host_id(c2), "ro")  # the guard demoted it
    vol["volume_attachment"].append({"id": "a2", "attach_mode": "rw", "connector": c2})
    driver.target.store.remove(driver.protocol, "vol-1")
    driver.ensure_export(None, vol)
    assert admitted(driver) == {driver.host_id(c1): "rw", driver.host_id(c2): "ro"}
    assert driver.initialize_connection(vol, c1) == first
    assert set(driver.recorded_exports()) == {"vol-1"}


def test_ensure_export_follows_the_attachments_over_a_stale_document(driver):
    """The attachments are the record: a host the node's document still names but
    that has no live attachment is not restored; a demotion the document holds
    (configfs emptied by a reboot) stays."""
    c1, c2, c3 = (connector(driver, n) for n in (1, 2, 3))
    vol = volume()
    driver.create_export(None, vol, None)
    for c in (c1, c2, c3):
        driver.initialize_connection(vol, c)
    driver.set_host_mode("vol-1", driver.host_id(c2), "ro")  # the guard demoted it
    vol["volume_attachment"] = [{"id": "a1", "attach_mode": "rw", "connector": c1},
                                {"id": "a2", "attach_mode": "rw", "connector": c2},
                                {"id": "a3", "attach_mode": "rw", "connector": c3,
                                 "attach_status": "detached"}]
    driver.target.kernel.unexport("vol-1")  # a reboot: configfs empty, documents kept
    driver.ensure_export(None, vol)
    assert admitted(driver) == {driver.host_id(c1): "rw", driver.host_id(c2): "ro"}
    assert [a.host for a in driver.recorded_exports()["vol-1"].hosts] == [
        driver.host_id(c1), driver.host_id(c2)]


def test_ensure_export_of_a_volume_without_attachments_removes_its_export(driver):
    vol = volume()
    driver.create_export(None, vol, None)
    driver.initialize_connection(vol, connector(driver, 1))
    driver.ensure_export(None, volume())
    assert admitted(driver) == {} and driver.recorded_exports() == {}


def test_node_documents_and_key_are_private(driver, tmp_path):
    vol = volume()
    driver.create_export(None, vol, None)
    driver.initialize_connection(vol, connector(driver, 1))
    doc = driver.target.store.path(driver.protocol, "vol-1")
    key = tmp_path / "state" / "sb1.key"
    assert stat.S_IMODE(os.stat(doc).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(doc.parent).st_mode) == 0o700


def test_delete_volume_unexports_and_forgets(driver):
    vol = volume()
    driver.create_volume(vol)
    driver.create_export(None, vol, None)
    driver.initialize_connection(vol, connector(driver, 1))
    driver.delete_volume(vol)
    assert "vol-1" not in driver.pool.volumes and admitted(driver) == {}
    assert driver.target.desired() == {}


def test_terminate_as_cinder_29_calls_it(driver):
    """No attachment kwarg, and the attachment being deleted is still listed."""
    c1, c2 = connector(driver, 1), connector(driver, 2)
    a1, a2 = {"id": "a1", "connector": c1}, {"id": "a2", "connector": c2}
    vol = volume([a1, a2])
    driver.create_export(None, vol, None)
    driver.initialize_connection(vol, c1)
    driver.initialize_connection(vol, c2)
    assert driver.terminate_connection(vol, c1, force=False) is True
    assert set(admitted(driver)) == {driver.host_id(c2)}
    assert driver.terminate_connection(volume([a2]), c2, force=False) is None
    assert admitted(driver) == {}


# --- one host, several attachments: the host-access rule (driver/access.py) ---
def att(drv, n, mode, att_id):
    return {"id": att_id, "attach_mode": mode, "attach_status": "attached",
            "connector": connector(drv, n)}


def host1(drv):
    return connector(drv, 1)["initiator" if drv.protocol == "iscsi" else "nqn"]


def test_second_ro_attachment_of_a_host_keeps_it_rw(driver):
    rw, ro = att(driver, 1, "rw", "a1"), att(driver, 1, "ro", "a2")
    driver.create_export(None, volume(), None)
    driver.initialize_connection(volume([rw]), connector(driver, 1, mode="rw"))
    info = driver.initialize_connection(volume([rw, ro]), connector(driver, 1, mode="ro"))
    assert admitted(driver) == {host1(driver): "rw"}, "VM 1 kept write access"
    assert info["data"]["access_mode"] == "ro", "VM 2's own attachment is ro"
    # detach VM 2's ro attachment: the host stays rw
    assert driver.terminate_connection(volume([rw, ro]), connector(driver, 1),
                                       attachment={"id": "a2"}) is True
    assert admitted(driver) == {host1(driver): "rw"}


def test_detaching_the_rw_attachment_leaves_the_host_ro_live(driver):
    rw, ro = att(driver, 1, "rw", "a1"), att(driver, 1, "ro", "a2")
    driver.create_export(None, volume(), None)
    driver.initialize_connection(volume([rw]), connector(driver, 1, mode="rw"))
    driver.initialize_connection(volume([rw, ro]), connector(driver, 1, mode="ro"))
    assert driver.terminate_connection(volume([rw, ro]), connector(driver, 1),
                                       attachment={"id": "a1"}) is True
    assert admitted(driver) == {host1(driver): "ro"}
    assert driver.terminate_connection(volume([ro]), connector(driver, 1),
                                       attachment={"id": "a2"}) is None
    assert admitted(driver) == {}


@pytest.mark.parametrize("gone, stays", [("ro", "rw"), ("rw", "ro")])
def test_same_host_detach_as_cinder_29_calls_it(driver, gone, stays):
    """Cinder 29 passes no attachment and still lists the one being deleted, but the
    connector it passes is that attachment's own, with its mode: that one goes."""
    rw, ro = att(driver, 1, "rw", "a1"), att(driver, 1, "ro", "a2")
    for a in (rw, ro):
        a["connector"] = connector(driver, 1, mode=a["attach_mode"])
    driver.create_export(None, volume(), None)
    driver.initialize_connection(volume([rw]), rw["connector"])
    driver.initialize_connection(volume([rw, ro]), ro["connector"])
    leaving = rw if gone == "rw" else ro
    assert driver.terminate_connection(volume([rw, ro]), leaving["connector"],
                                       force=False) is True
    assert admitted(driver) == {host1(driver): stays}


def test_same_host_detach_without_a_mode_never_lowers_by_guesswork(driver):
    """A connector without a mode cannot say which attachment goes: the host keeps
    rw while it may still hold a rw attachment."""
    rw, ro = att(driver, 1, "rw", "a1"), att(driver, 1, "ro", "a2")
    driver.create_export(None, volume(), None)
    driver.initialize_connection(volume([rw]), connector(driver, 1, mode="rw"))
    driver.initialize_connection(volume([rw, ro]), connector(driver, 1, mode="ro"))
    assert driver.terminate_connection(volume([rw, ro]), connector(driver, 1),
                                       force=False) is True
    assert admitted(driver) == {host1(driver): "rw"}


def test_ensure_export_keeps_held_hosts_while_an_attachment_names_no_host(driver):
    """A live attachment without a connector cannot say which host it is: nobody the
    target holds is revoked."""
    c1, c2 = connector(driver, 1), connector(driver, 2)
    vol = volume()
    driver.create_export(None, vol, None)
    driver.initialize_connection(vol, c1)
    driver.initialize_connection(vol, c2)
    vol["volume_attachment"] = [{"id": "a1", "attach_mode": "rw", "connector": c1},
                                {"id": "a2", "attach_mode": "rw", "connector": None}]
    driver.ensure_export(None, vol)
    assert set(admitted(driver)) == {driver.host_id(c1), driver.host_id(c2)}
