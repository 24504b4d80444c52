"""The embedded control plane: the seed's rules, on fake targets and real SQLite."""
import json
import multiprocessing
import os
import stat
import threading

import pytest

from shareblock.control import api as api_mod
from shareblock.control import config
from shareblock.control.api import Conflict, ControlPlane, InvalidInput, NotFound
from shareblock.control.db import Database
from shareblock.control.policy import PolicyNotAuthorized
from tests.unit.fakes import fake_driver, fake_kernel

CONF_TEXT = """[DEFAULT]
enabled_backends = lio, nvme
state_path = {state}
{policy}
[roles]
users = root:admin, alice:member

[lio]
volume_backend_name = lio
target_protocol = iscsi

[nvme]
volume_backend_name = nvme
target_protocol = nvmet_tcp
target_port = 4420
"""


@pytest.fixture
def env(tmp_path, monkeypatch):
    root = fake_kernel(monkeypatch, tmp_path / "configfs")
    state = tmp_path / "state"

    def plane(user="root", multiattach=True, policy_file=None):
        path = tmp_path / f"shareblock-{user}.conf"
        path.write_text(CONF_TEXT.format(
            state=state, policy=f"policy_file = {policy_file}" if policy_file else ""))
        conf = config.load(str(path))
        drivers = {name: fake_driver(root, state, proto, name, multiattach)
                   for name, proto in (("lio", "iscsi"), ("nvme", "nvmet_tcp"))}
        return ControlPlane(conf, user=user, drivers=drivers)
    return plane


@pytest.fixture
def cli_plane(env, tmp_path, monkeypatch):
    """A control plane with the test types, which the CLI (in process) uses too."""
    plane = env()
    make_types(plane)
    monkeypatch.setattr("shareblock.control.api.ControlPlane", lambda conf: plane)
    monkeypatch.setenv("SHAREBLOCK_CONFIG", str(tmp_path / "shareblock-root.conf"))
    return plane


def iscsi(n, **extra):
    return {"initiator": f"iqn.2026-11.io.test:host{n}", "host": f"h{n}", **extra}


def nvme(n):
    return {"nqn": f"nqn.2014-08.org.nvmexpress:uuid:0000000{n}-0000-4000-8000-000000000000",
            "host": f"h{n}"}


def make_types(cp):
    cp.type_create("multiattach")
    cp.type_key("multiattach", "set", {"multiattach": "<is> True",
                                       "volume_backend_name": "lio"})
    cp.type_create("plain")
    cp.type_key("plain", "set", {"volume_backend_name": "lio"})
    cp.type_create("ma-nvme")
    cp.type_key("ma-nvme", "set", {"multiattach": "<is> True", "storage_protocol": "NVMe-oF"})


def hosts_on_target(cp, volume):
    vol = cp.show(volume)
    drv = cp.driver(vol["os-vol-host-attr:host"])
    seen = drv.target.actual(vol["id"]).get(vol["id"])
    return {h: s.mode for h, s in seen.hosts.items()} if seen else {}


def test_multiattach_flag_comes_from_the_type_exactly(env):
    cp = env()
    make_types(cp)
    for value in ("<is> true", "True", "<is>True", "<is> True "):
        cp.type_create(f"almost-{len(value)}-{value[-2:].strip()}")
        name = cp.type_list()[-1]["name"]
        cp.type_key(name, "set", {"multiattach": value})
        assert cp.create(1, name)["multiattach"] is False
    vol = cp.create(1, "multiattach", name="shared")
    assert vol["multiattach"] is True and vol["status"] == "available"
    assert vol["os-vol-host-attr:host"] == "lio"
    assert cp.create(1, "ma-nvme")["os-vol-host-attr:host"] == "nvme"
    assert cp.create(1, "plain")["multiattach"] is False


def test_no_backend_with_the_capability_means_error(env):
    cp = env(multiattach=False)
    make_types(cp)
    vol = cp.create(1, "multiattach")
    assert vol["status"] == "error" and "multiattach" in vol["error"]
    assert cp.create(1, "plain")["status"] == "available"


def test_policy_multiattach_is_admin_only_unless_a_policy_file_opens_it(env, tmp_path):
    make_types(env())
    alice = env(user="alice")
    with pytest.raises(PolicyNotAuthorized):
        alice.create(1, "multiattach")
    vol = alice.create(1, "plain")
    with pytest.raises(PolicyNotAuthorized):
        alice.retype(vol["id"], "multiattach")
    assert alice.show(vol["id"])["volume_type"] == "plain"
    with pytest.raises(PolicyNotAuthorized):
        alice.type_create("mine")
    nobody = env(user="mallory")
    with pytest.raises(PolicyNotAuthorized):
        nobody.volume_list()
    rules = tmp_path / "policy.json"
    rules.write_text(json.dumps({"volume:multiattach": "role:member"}))
    opened = env(user="alice", policy_file=rules)
    assert opened.create(1, "multiattach")["multiattach"] is True
    assert opened.retype(vol["id"], "multiattach")["multiattach"] is True


def test_retype_changing_multiattach_needs_available_and_fails_cleanly(env):
    cp = env()
    make_types(cp)
    vol = cp.create(1, "multiattach")
    att = cp.attachment_create(vol["id"], iscsi(1))
    with pytest.raises(Conflict, match="only allowed on available"):
        cp.retype(vol["id"], "plain")
    after = cp.show(vol["id"])
    assert (after["volume_type"], after["multiattach"]) == ("multiattach", True)
    cp.attachment_delete(att["id"])
    assert cp.show(vol["id"])["status"] == "available"
    assert cp.retype(vol["id"], "plain")["multiattach"] is False
    assert cp.retype(vol["id"], "multiattach")["multiattach"] is True
    with pytest.raises(Conflict, match="another backend.*speaks iSCSI, not NVMe-oF"):
        cp.retype(vol["id"], "ma-nvme")  # lio cannot speak NVMe-oF: no migration
    assert cp.show(vol["id"])["volume_type"] == "multiattach"


def test_a_retype_reads_the_backends_stats_once(env, monkeypatch):
    cp = env()
    make_types(cp)
    vol = cp.create(1, "plain")
    drv = cp.driver("lio")
    refreshed = []
    real = drv.get_volume_stats
    monkeypatch.setattr(drv, "get_volume_stats",
                        lambda refresh=False: refreshed.append(refresh) or real(refresh))
    cp.retype(vol["id"], "multiattach")
    assert refreshed.count(True) == 1, "the driver decides on the stats it refreshes"


def test_attachment_life_cycle_and_statuses(env):
    cp = env()
    make_types(cp)
    vol = cp.create(1, "multiattach")
    a1 = cp.attachment_create(vol["id"])
    assert a1["status"] == "reserved" and cp.show(vol["id"])["status"] == "reserved"
    a1 = cp.attachment_update(a1["id"], iscsi(1))
    assert a1["status"] == "attaching" and cp.show(vol["id"])["status"] == "attaching"
    info = a1["connection_info"]
    assert info["driver_volume_type"] == "iscsi" and info["data"]["access_mode"] == "rw"
    cp.attachment_complete(a1["id"])
    assert cp.show(vol["id"])["status"] == "in-use"
    a2 = cp.attachment_create(vol["id"], iscsi(2), mode="ro")
    assert a2["attach_mode"] == "ro" and a2["connection_info"]["data"]["access_mode"] == "ro"
    cp.attachment_complete(a2["id"])
    assert hosts_on_target(cp, vol["id"]) == {"iqn.2026-11.io.test:host1": "rw",
                                              "iqn.2026-11.io.test:host2": "ro"}
    assert len(cp.show(vol["id"])["attachments"]) == 2
    cp.attachment_delete(a1["id"])
    assert hosts_on_target(cp, vol["id"]) == {"iqn.2026-11.io.test:host2": "ro"}
    assert cp.show(vol["id"])["status"] == "in-use"
    cp.attachment_delete(a2["id"])
    assert cp.show(vol["id"])["status"] == "available"
    assert hosts_on_target(cp, vol["id"]) == {}
    with pytest.raises(NotFound):
        cp.attachment_show(a2["id"])


def test_a_detaching_attachment_does_not_hold_up_a_multiattach_volume(env, monkeypatch):
    """One host's detach in progress (or failed, left detaching until reconcile)
    does not refuse another host's attach of a multiattach volume: each attachment
    is its own. A volume that is not multiattach still takes one at a time."""
    cp = env()
    make_types(cp)
    shared, plain = cp.create(1, "multiattach"), cp.create(1, "plain")
    a1 = cp.attachment_create(shared["id"], iscsi(1))
    p1 = cp.attachment_create(plain["id"], iscsi(1))
    drv = cp.driver("lio")

    def fails(*args, **kwargs):
        raise OSError("target unreachable")
    monkeypatch.setattr(drv, "terminate_connection", fails)
    for att in (a1, p1):
        with pytest.raises(api_mod.ControlError, match="stays detaching"):
            cp.attachment_delete(att["id"])
    assert cp.show(shared["id"])["status"] == "detaching"
    monkeypatch.undo()
    a2 = cp.attachment_create(shared["id"], iscsi(2))
    assert a2["status"] == "attaching"
    assert hosts_on_target(cp, shared["id"]) == {"iqn.2026-11.io.test:host1": "rw",
                                                 "iqn.2026-11.io.test:host2": "rw"}
    with pytest.raises(Conflict, match="not multiattach"):
        cp.attachment_create(plain["id"], iscsi(2))


def test_single_attach_volume_takes_one_attachment(env):
    cp = env()
    make_types(cp)
    vol = cp.create(1, "plain")
    cp.attachment_create(vol["id"], iscsi(1))
    with pytest.raises(Conflict, match="not multiattach"):
        cp.attachment_create(vol["id"], iscsi(2))


def test_concurrent_creates_on_a_single_attach_volume_one_wins_threads(env):
    cp = env()
    make_types(cp)
    vol = cp.create(1, "plain")
    wins, losses = [], []
    barrier = threading.Barrier(16)

    def attempt(n):
        barrier.wait()
        try:
            wins.append(cp.attachment_create(vol["id"])["id"])
        except Conflict:
            losses.append(n)
    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 15
    assert len(cp.attachment_list(vol["id"])) == 1


def _race(db_path, conf_path, vol_id, start, results):
    conf = config.load(conf_path)
    cp = ControlPlane(conf, user="root", drivers={}, database=Database(db_path))
    start.wait()
    try:
        cp.attachment_create(vol_id)
        results.put("won")
    except Conflict:
        results.put("lost")


def test_concurrent_creates_one_wins_across_processes(env, tmp_path):
    cp = env()
    make_types(cp)
    vol = cp.create(1, "plain")
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    conf_path = str(tmp_path / "shareblock-root.conf")
    procs = [ctx.Process(target=_race, args=(cp.db.path, conf_path, vol["id"], start, results))
             for _ in range(8)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(30)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes.count("won") == 1 and outcomes.count("lost") == 7


def test_bad_input_is_refused_and_changes_nothing(env):
    cp = env()
    make_types(cp)
    vol = cp.create(1, "multiattach")
    before = (cp.show(vol["id"]), cp.attachment_list())
    for call in (lambda: cp.attachment_create(vol["id"], {"initiator": "../../etc"}),
                 lambda: cp.attachment_create(vol["id"], "not a dict"),
                 lambda: cp.attachment_create(vol["id"], iscsi(1), mode="wo"),
                 lambda: cp.create(0, "plain"), lambda: cp.create(1, "nope"),
                 lambda: cp.type_create("../x"), lambda: cp.extend(vol["id"], 1),
                 lambda: cp.type_key("plain", "set", {"bad key": "x"}),
                 lambda: cp.type_key("plain", "set", {"shareblock:fs_guard": "maybe"})):
        with pytest.raises((InvalidInput, NotFound)):
            call()
    assert (cp.show(vol["id"]), cp.attachment_list()) == before
    with pytest.raises(NotFound):
        cp.show("no-such-volume")


def test_failed_backend_rolls_the_attachment_back(env, monkeypatch):
    cp = env()
    make_types(cp)
    vol = cp.create(1, "multiattach")
    drv = cp.driver("lio")

    def boom(*a, **k):
        raise RuntimeError("target on fire")
    monkeypatch.setattr(drv.target, "admit", boom)
    with pytest.raises(api_mod.ControlError, match="on fire"):
        cp.attachment_create(vol["id"], iscsi(1))
    assert cp.attachment_list(vol["id"]) == []
    assert cp.show(vol["id"])["status"] == "available"


def test_reconcile_makes_acls_equal_attachments(env):
    cp = env()
    make_types(cp)
    vol = cp.create(1, "multiattach")
    a1 = cp.attachment_create(vol["id"], iscsi(1))
    cp.attachment_create(vol["id"], iscsi(2), mode="ro")
    drv = cp.driver("lio")
    drv.target.revoke(vol["id"], "iqn.2026-11.io.test:host1")     # lost ACL
    drv.target.admit(vol["id"], "iqn.2026-11.io.test:stray", "rw",  # ACL with no attachment
                     drv._credentials("iqn.2026-11.io.test:stray"))
    drv.target.set_mode(vol["id"], "iqn.2026-11.io.test:host2", "rw")  # wrong mode
    drv.target.export("orphan-1", "/dev/fake/orphan-1")             # export with no volume
    report = cp.reconcile()
    assert hosts_on_target(cp, vol["id"]) == {"iqn.2026-11.io.test:host1": "rw",
                                              "iqn.2026-11.io.test:host2": "ro"}
    assert "orphan-1" in report["unexported"] and "orphan-1" not in drv.target.actual()
    assert cp.reconcile()["admitted"] == [] and cp.reconcile()["revoked"] == []
    assert cp.attachment_show(a1["id"])["status"] == "attaching"


def test_state_database_is_private_and_versioned(env):
    cp = env()
    assert stat.S_IMODE(os.stat(cp.db.path).st_mode) == 0o600
    assert cp.db.schema_version() == len(__import__("shareblock.control.db").control.db.MIGRATIONS)


def test_delete_rules(env):
    cp = env()
    make_types(cp)
    vol = cp.create(1, "multiattach")
    att = cp.attachment_create(vol["id"], iscsi(1))
    with pytest.raises(Conflict):
        cp.delete(vol["id"])
    cp.attachment_delete(att["id"])
    cp.delete(vol["id"])
    with pytest.raises(NotFound):
        cp.show(vol["id"])


def test_reconcile_waits_for_an_update_in_progress_instead_of_undoing_it(env):
    """An attach that another process is running holds the volume's lock: reconcile
    waits for it, and then finds it finished, not cut short by a crash."""
    cp = env()
    make_types(cp)
    vol = cp.create(1, "multiattach")
    att = cp.attachment_create(vol["id"])  # reserved
    entered, release = threading.Event(), threading.Event()
    real = cp.driver("lio").initialize_connection

    def slow(volume, connector):  # the update is between its admit and its record
        entered.set()
        release.wait(10)
        return real(volume, connector)
    cp.driver("lio").initialize_connection = slow
    updater = threading.Thread(target=cp.attachment_update, args=(att["id"], iscsi(1)))
    updater.start()
    assert entered.wait(10)
    reports = []
    other = ControlPlane(cp.conf, user="root", drivers=cp.drivers())  # another caller
    reconciler = threading.Thread(target=lambda: reports.append(other.reconcile()))
    reconciler.start()
    reconciler.join(0.5)
    assert reconciler.is_alive(), "reconcile waits for the volume's lock"
    release.set()
    updater.join(10)
    reconciler.join(10)
    assert reports and reports[0]["rolled_back"] == [] and reports[0]["revoked"] == []
    assert cp.attachment_show(att["id"])["status"] == "attaching"
    assert hosts_on_target(cp, vol["id"]) == {"iqn.2026-11.io.test:host1": "rw"}


def test_the_full_path_finds_every_row_by_an_index(env):
    """attachment-create and -delete with a connector: every statement finds its rows
    through an index, so the database's part of the full path does not grow with
    the number of volumes (a scan of every volume was once in each lookup)."""
    cp = env()
    make_types(cp)
    cp.create(1, "multiattach", name="by-name")
    conn = cp.db.connection()
    statements = []
    conn.set_trace_callback(statements.append)
    try:
        att = cp.attachment_create("by-name", iscsi(1))  # found by name, then by id
        cp.attachment_complete(att["id"])
        cp.attachment_delete(att["id"])
    finally:
        conn.set_trace_callback(None)
    scans = {}
    for sql in statements:
        if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
            continue
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
        scanned = [p for p in plan if p.startswith("SCAN") and "USING" not in p
                   and p != "SCAN fences"]  # one row per fenced node, not per volume
        if scanned:
            scans[sql] = scanned
    assert len(statements) > 10 and scans == {}
