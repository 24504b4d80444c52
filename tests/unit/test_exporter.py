"""shareblock-exporter on a control plane over fake targets: the exposition parsed
back with prometheus_client's own parser, names and units as Prometheus wants
them, values as the state says, served over HTTP."""
import re
import subprocess
import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shareblock.control.errors import ControlError
from shareblock.exporter import main as exporter
from shareblock.exporter.metrics import GIB, MIB, epoch
from tests.unit.fakes import ImagePool
from tests.unit.test_control import env, iscsi, make_types, nvme  # noqa: F401  (fixture)

NAME = re.compile(r"^shareblock_[a-z0-9_]+$")
UNITS = ("_bytes", "_seconds", "_total", "_info")


@pytest.fixture
def cp(env, tmp_path):  # noqa: F811
    plane = env()
    for name in ("lio", "nvme"):
        plane.driver(name).pool = ImagePool(tmp_path, image_mb=64)
    make_types(plane)
    return plane


def scrape(cp) -> dict:
    """{(name, labels as a sorted tuple): value} from the text a scrape serves."""
    text = generate_latest(exporter.registry_for(cp)).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        assert NAME.match(family.name), family.name
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found, metric, **labels):
    return found.get((metric, tuple(sorted(labels.items()))))


def test_names_follow_prometheus_rules_and_carry_their_units(cp):
    cp.create(1, "multiattach", "shared")
    found = scrape(cp)
    names = {name for name, _ in found}
    for name in names:
        assert NAME.match(name) and "__" not in name, name
        if "bytes" in name or "seconds" in name:
            assert name.endswith(UNITS), f"{name}: the unit goes last"
    assert {"shareblock_guard_demotions_total", "shareblock_fences_total",
            "shareblock_reconcile_runs_total", "shareblock_volume_size_bytes",
            "shareblock_pool_free_bytes", "shareblock_backend_up"} <= names


def test_hosts_volumes_and_pools_as_the_state_and_the_target_say(cp):
    vol = cp.create(1, "multiattach", "shared")
    a = cp.attachment_create(vol["id"], iscsi(1))
    cp.attachment_complete(a["id"])
    cp.attachment_create(vol["id"], iscsi(2), mode="ro")
    cp.attachment_create(vol["id"])  # reserved, no host yet
    vid = vol["id"]
    found = scrape(cp)
    host1, host2 = iscsi(1)["initiator"], iscsi(2)["initiator"]
    assert value(found, "shareblock_volume_size_bytes", volume_id=vid) == GIB
    assert value(found, "shareblock_volume_multiattach", volume_id=vid) == 1
    assert value(found, "shareblock_volume_attachments", volume_id=vid, status="attached",
                 mode="rw") == 1
    assert value(found, "shareblock_volume_attachments", volume_id=vid, status="attaching",
                 mode="ro") == 1
    assert value(found, "shareblock_volume_attachments", volume_id=vid, status="reserved",
                 mode="rw") == 1
    assert value(found, "shareblock_volume_guard_mode", volume_id=vid, mode="enforce") == 1
    key = {"backend": "lio", "volume_id": vid}
    assert value(found, "shareblock_host_admitted", host=host1, **key) == 1
    assert value(found, "shareblock_host_read_only", host=host1, **key) == 0
    assert value(found, "shareblock_host_read_only", host=host2, **key) == 1
    assert value(found, "shareblock_backend_up", backend="lio") == 1
    pool = cp.driver("lio").get_volume_stats()["pools"][0]
    assert value(found, "shareblock_pool_capacity_bytes", backend="lio",
                 pool=pool["pool_name"]) == pool["total_capacity_gb"] * GIB
    assert value(found, "shareblock_volume_info", volume_id=vid, name="shared",
                 status="in-use", volume_type="multiattach", backend="lio") == 1


def test_the_targets_per_host_counters_become_bytes(cp, monkeypatch):
    vol = cp.create(1, "multiattach", "shared")
    cp.attachment_create(vol["id"], iscsi(1))
    drv = cp.driver("lio")
    real = drv.exports

    def counted(volume_id=None, hosts_only=False):
        assert hosts_only, "a scrape reads the hosts alone"
        seen = real(volume_id, hosts_only)
        for export in seen.values():
            for host in export.hosts.values():
                host.counters = {"num_cmds": 7, "read_mbytes": 3, "write_mbytes": 5}
                host.logged_in = True
        return seen
    monkeypatch.setattr(drv, "exports", counted)
    found = scrape(cp)
    key = {"backend": "lio", "volume_id": vol["id"], "host": iscsi(1)["initiator"]}
    assert value(found, "shareblock_host_written_bytes_total", **key) == 5 * MIB
    assert value(found, "shareblock_host_read_bytes_total", **key) == 3 * MIB
    assert value(found, "shareblock_host_commands_total", **key) == 7
    assert value(found, "shareblock_host_sessions", **key) == 1


def test_a_demotion_a_fence_and_a_reconcile_are_counted_once(cp):
    vol = cp.create(1, "multiattach", "shared")
    cp.attachment_create(vol["id"], iscsi(1))
    subprocess.run(["mkfs.ext4", "-q", cp.driver("lio").pool.device(vol["id"])], check=True)
    cp.attachment_create(vol["id"], iscsi(2))  # the guard: ro
    cp.fence("h1")
    cp.unfence("h1")
    cp.driver("lio").target.revoke(vol["id"], iscsi(2)["initiator"])  # lost: repaired
    cp.reconcile()
    found = scrape(cp)
    assert value(found, "shareblock_guard_demotions_total") == 1
    assert value(found, "shareblock_fences_total") == 1
    assert value(found, "shareblock_unfences_total") == 1
    assert value(found, "shareblock_reconcile_runs_total") == 1
    assert value(found, "shareblock_reconcile_repairs_total", kind="admitted") == 1
    last = value(found, "shareblock_last_reconcile_timestamp_seconds")
    assert last == epoch(cp.events()[-1]["at"])
    decided = [k for k in found if k[0] ==
               "shareblock_volume_guard_last_decision_timestamp_seconds"]
    assert [dict(labels)["action"] for _, labels in decided] == ["demoted"]
    assert dict(decided[0][1])["filesystem"] == "ext4"
    before = [dict(r) for r in cp.db.query("SELECT * FROM events")]
    again = scrape(cp)
    assert [dict(r) for r in cp.db.query("SELECT * FROM events")] == before
    assert {k: v for k, v in again.items() if "scrape_duration" not in k[0]} == {
        k: v for k, v in found.items() if "scrape_duration" not in k[0]}, "nothing moved"


def test_a_backend_that_does_not_answer_is_down_and_the_others_still_show(cp, monkeypatch):
    cp.create(1, "multiattach", "shared")
    monkeypatch.setattr(cp.driver("nvme"), "exports",
                        lambda volume_id=None: (_ for _ in ()).throw(OSError("unreachable")))
    found = scrape(cp)
    assert value(found, "shareblock_backend_up", backend="nvme") == 0
    assert value(found, "shareblock_backend_up", backend="lio") == 1


def test_served_over_http_and_a_bad_listen_address_is_refused(cp, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        exporter.main(["--listen", "nowhere"])
    assert "ADDR:PORT" in capsys.readouterr().err
    assert exporter.parse_listen("[::1]:9740") == ("::1", 9740)
    assert exporter.parse_listen(":9740") == ("0.0.0.0", 9740)
    from prometheus_client import start_http_server
    server, thread = start_http_server(0, addr="127.0.0.1", registry=exporter.registry_for(cp))
    try:
        port = server.server_address[1]
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        assert b"shareblock_backend_up" in body
    finally:
        server.shutdown()
        thread.join(5)


def test_refused_attaches_are_counted_by_reason_and_change_nothing_else(cp):
    single = cp.create(1, "plain", "single")
    cp.attachment_create(single["id"], iscsi(1))
    shared = cp.create(1, "multiattach", "shared")
    cp.attachment_create(shared["id"], iscsi(3))
    cp.fence("h3")
    before = {t: [tuple(r) for r in cp.db.query(f"SELECT * FROM {t}")]  # noqa: S608
              for t in ("volumes", "attachments", "events")}
    for call in (lambda: cp.attachment_create(single["id"], iscsi(2)),       # in use
                 lambda: cp.attachment_create(shared["id"], iscsi(3)),       # fenced
                 lambda: cp.attachment_create(shared["id"], {"initiator": "../x"}),
                 lambda: cp.attachment_create("nope", iscsi(2)),
                 lambda: cp.attachment_update("no-such-attachment", iscsi(2))):
        with pytest.raises(ControlError):
            call()
    assert {t: [tuple(r) for r in cp.db.query(f"SELECT * FROM {t}")]  # noqa: S608
            for t in before} == before
    found = scrape(cp)
    for reason, n in (("in_use", 1), ("fenced", 1), ("invalid_input", 1), ("not_found", 2)):
        assert value(found, "shareblock_attach_refusals_total", reason=reason) == n, reason
