"""Races and load on real targets: many processes, one volume.

Each racer is its own process (fork) with its own ControlPlane, as separate
`shareblock` commands or API workers would be: they meet only in the state
store and the kernel's configfs.
"""
import multiprocessing
import random
import subprocess
import threading
import time
import uuid

import pytest

from shareblock.control import config
from shareblock.control.api import Conflict, ControlPlane
from shareblock.lab import config as lab_config
from shareblock.lab.hosts import Host
from tests.hardware.reliability.conftest import rounds

FORK = multiprocessing.get_context("fork")
PROTOCOLS = ["iscsi", "nvmet_tcp"]


@pytest.fixture
def plane(tmp_path):
    conf = str(lab_config.write(tmp_path))
    cp = ControlPlane(config.load(conf), user="root")
    for proto, name in (("iSCSI", "iscsi"), ("NVMe-oF", "nvmet_tcp")):
        cp.type_create(f"ma-{name}")
        cp.type_key(f"ma-{name}", "set", {"multiattach": "<is> True", "storage_protocol": proto})
        cp.type_create(f"single-{name}")
        cp.type_key(f"single-{name}", "set", {"storage_protocol": proto})
    return conf, cp


def identity(protocol: str, tag: str) -> tuple[str, str]:
    """(connector key, host id) of a made-up host; no initiator needed to be admitted."""
    if protocol == "iscsi":
        return "initiator", f"iqn.2026-11.io.shareblock.race:{tag}"
    return "nqn", f"nqn.2014-08.org.nvmexpress:uuid:{uuid.uuid5(uuid.NAMESPACE_DNS, tag)}"


def admitted(cp: ControlPlane, vol: dict) -> dict:
    """host id -> mode, as the kernel's configfs has it."""
    drv = cp.driver(vol["os-vol-host-attr:host"])
    export = drv.target.actual(vol["id"]).get(vol["id"])
    return {h: s.mode for h, s in export.hosts.items()} if export else {}


def attached(cp: ControlPlane, vol: dict, key: str) -> dict:
    """host id -> mode, as the state store has the volume's attachments."""
    return {a["connector"][key]: a["attach_mode"]
            for a in cp.attachment_list(vol["id"]) if a.get("connector")}


def _create_one(conf, vol_id, connector, barrier, results):
    cp = ControlPlane(config.load(conf), user="root")
    barrier.wait()
    try:
        att = cp.attachment_create(vol_id, connector, "rw")
        results.put(("won", connector, att["id"]))
    except Conflict:
        results.put(("refused", connector, None))
    except Exception as e:  # anything else is a bug the round reports
        results.put(("error", connector, repr(e)))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_racing_creates_on_a_single_attach_volume_one_wins(plane, protocol, report):
    conf, cp = plane
    vol = cp.create(1, f"single-{protocol}")
    racers, n_rounds, bad = 100, rounds(2, 10), []
    for r in range(n_rounds):
        barrier, results = FORK.Barrier(racers), FORK.Queue()
        procs = []
        for i in range(racers):
            key, host = identity(protocol, f"r{r}-h{i}")
            procs.append(FORK.Process(target=_create_one, args=(
                conf, vol["id"], {key: host, "host": f"h{i}"}, barrier, results)))
        for p in procs:
            p.start()
        outcome = [results.get(timeout=600) for _ in procs]
        for p in procs:
            p.join()
        won = [o for o in outcome if o[0] == "won"]
        errors = [o for o in outcome if o[0] == "error"]
        winner = won[0][1][key] if len(won) == 1 else None
        if (len(won) != 1 or errors or attached(cp, vol, key) != {winner: "rw"}
                or admitted(cp, vol) != {winner: "rw"}):
            bad.append({"round": r, "won": len(won), "errors": errors[:3],
                        "attached": attached(cp, vol, key), "admitted": admitted(cp, vol)})
        for a in cp.attachment_list(vol["id"]):
            cp.attachment_delete(a["id"])
        assert admitted(cp, vol) == {}, "the last detach revokes"
    report(tried=n_rounds, survived=n_rounds - len(bad), lost=len(bad), unit="rounds",
           racers=racers)
    assert not bad, bad


def _storm(conf, vol_id, connector, ops, seed, results):
    """One host attaching and detaching at random; ends attached or not."""
    cp = ControlPlane(config.load(conf), user="root")
    rnd, att, errors = random.Random(seed), None, []
    for _ in range(ops):
        time.sleep(rnd.random() * 0.2)
        try:
            if att is None:
                att = cp.attachment_create(vol_id, connector, rnd.choice(["rw", "ro"]))
                cp.attachment_complete(att["id"])
            else:
                cp.attachment_delete(att["id"])
                att = None
        except Exception as e:
            errors.append(repr(e))
    results.put(errors)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_attach_detach_storm_leaves_acls_equal_to_attachments(plane, protocol, report):
    conf, cp = plane
    vol = cp.create(1, f"ma-{protocol}")
    hosts, n_rounds, lost, problems = 16, rounds(1, 4), 0, []
    ops = rounds(4, 10)
    key = identity(protocol, "x")[0]
    for r in range(n_rounds):
        results = FORK.Queue()
        procs = [FORK.Process(target=_storm, args=(
            conf, vol["id"], {key: identity(protocol, f"s{r}-h{i}")[1], "host": f"h{i}"},
            ops, r * 100 + i, results)) for i in range(hosts)]
        for p in procs:
            p.start()
        errors = [e for _ in procs for e in results.get(timeout=900)]
        for p in procs:
            p.join()
        want, have = attached(cp, vol, key), admitted(cp, vol)
        if errors or want != have:
            lost += 1
            problems.append({"round": r, "errors": errors[:3], "attached": want,
                             "admitted": have})
        for a in cp.attachment_list(vol["id"]):
            cp.attachment_delete(a["id"])
    report(tried=n_rounds, survived=n_rounds - lost, lost=lost, unit="rounds",
           hosts=hosts, operations=n_rounds * hosts * ops)
    assert not problems, problems


def fio(device: str, offset_mb: int, size_mb: int, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["fio", "--name=region", f"--filename={device}", "--direct=1", "--ioengine=psync",
         "--bs=4k", "--rw=randwrite", "--randrepeat=1", f"--offset={offset_mb}M",
         f"--size={size_mb}M", "--verify=crc32c", "--verify_fatal=1",
         "--verify_state_save=0", *extra],  # no state file left in the checkout
        capture_output=True, text=True)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_writers_keep_writing_while_other_hosts_come_and_go(plane, protocol, unique, report):
    """Two hosts write (fio, verified) to their own halves of a raw multiattach
    volume while other hosts attach and detach: no I/O error, and each host then
    verifies the other's half."""
    conf, cp = plane
    vol = cp.create(1, f"ma-{protocol}")
    writers = [Host(protocol, f"w{i}-{unique}") for i in range(2)]
    region, loops = 16, rounds(2, 12)
    stop, churned, churn_errors = threading.Event(), [0], []

    def churn():
        ccp = ControlPlane(config.load(conf), user="root")
        key, i = identity(protocol, "x")[0], 0
        while not stop.is_set():
            connector = {key: identity(protocol, f"c{i % 6}-{unique}")[1], "host": f"c{i}"}
            try:
                att = ccp.attachment_create(vol["id"], connector, "ro" if i % 2 else "rw")
                ccp.attachment_complete(att["id"])
                ccp.attachment_delete(att["id"])
                churned[0] += 1
            except Exception as e:
                churn_errors.append(repr(e))
            i += 1
    try:
        devices = []
        for w in writers:
            att = cp.attachment_create(vol["id"], w.connector(), "rw")
            cp.attachment_complete(att["id"])
            assert att["attach_mode"] == "rw"
            w.attach(att["connection_info"])
            devices.append(str(w.device()))
        thread = threading.Thread(target=churn)
        thread.start()
        try:
            runs = [threading.Thread(target=lambda i=i: outcome.__setitem__(
                i, fio(devices[i], i * region, region, f"--loops={loops}")))
                for i in range(2)]
            outcome = {}
            for t in runs:
                t.start()
            for t in runs:
                t.join()
        finally:
            stop.set()
            thread.join()
        cross = [fio(devices[1 - i], i * region, region, "--verify_only") for i in range(2)]
        failures = [r.stdout[-800:] + r.stderr[-800:] for r in [*outcome.values(), *cross]
                    if r.returncode != 0]
        key = identity(protocol, "x")[0]
        assert admitted(cp, vol) == attached(cp, vol, key) == {w.id: "rw" for w in writers}
    finally:
        for w in writers:
            w.cleanup()
        for a in cp.attachment_list(vol["id"]):
            cp.attachment_delete(a["id"])
    report(tried=2 * loops, survived=2 * loops if not failures else 0,
           lost=len(failures), unit="verified write passes", churned_attachments=churned[0],
           churn_errors=len(churn_errors))
    assert churned[0] > 0, "hosts came and went during the writes"
    assert not churn_errors, churn_errors[:3]
    assert not failures, failures
