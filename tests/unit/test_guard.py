"""The guard's decisions, every combination, and the control plane acting on them."""
import itertools
import subprocess

import pytest

from shareblock.driver import guard
from tests.unit.fakes import ImagePool
from tests.unit.test_control import env, iscsi, make_types  # noqa: F401  (fixture)

VERDICTS = ["single-host", "cluster", "blank", "opaque", "unknown"]


@pytest.mark.parametrize("requested,others,verdict,mode", list(itertools.product(
    ["rw", "ro"], [[], ["iqn.2026-11.io.x:a"]], VERDICTS, ["enforce", "warn", "off"])))
def test_at_attach_every_combination(requested, others, verdict, mode):
    d = guard.at_attach(requested, others, verdict, "ext4", mode)
    risky = requested == "rw" and others and verdict == "single-host" and mode != "off"
    if not risky:
        assert (d.mode, d.action) == (requested, "granted")
    elif mode == "enforce":
        assert (d.mode, d.action) == ("ro", "demoted") and "ext4" in d.reason
    else:
        assert (d.mode, d.action) == ("rw", "warned")


def test_run_time_keeps_the_writer_and_never_the_last():
    writers = ["a", "b", "c"]
    out = guard.at_run_time(writers, {"a": 0, "b": 9, "c": 1}, writers, "single-host", "ext4",
                            "enforce")
    assert set(out) == {"a", "c"} and all(d.mode == "ro" for d in out.values())
    assert guard.at_run_time(["a"], {}, ["a"], "single-host", "ext4", "enforce") == {}
    # no counters (or nobody wrote yet): the earliest attachment keeps rw
    out = guard.at_run_time(["b", "a"], {"a": None, "b": None}, ["b", "a"], "single-host",
                            "xfs", "enforce")
    assert set(out) == {"a"}
    assert guard.at_run_time(writers, {}, writers, "cluster", "gfs2", "enforce") == {}
    warned = guard.at_run_time(writers, {"b": 3}, writers, "single-host", "ext4", "warn")
    assert {d.action for d in warned.values()} == {"warned"} and set(warned) == {"a", "c"}


def test_guard_mode_from_the_type():
    assert guard.guard_mode({}) == "enforce"
    assert guard.guard_mode({"shareblock:fs_guard": "off"}) == "off"
    assert guard.guard_mode({}, default="warn") == "warn"


@pytest.fixture
def cp(env, tmp_path):  # noqa: F811
    plane = env()
    for name in ("lio", "nvme"):
        plane.driver(name).pool = ImagePool(tmp_path, image_mb=320)  # room for xfs
    make_types(plane)
    return plane


def test_second_writer_on_ext4_gets_ro_with_a_reason_and_an_event(cp):
    vol = cp.create(1, "multiattach")
    a = cp.attachment_create(vol["id"], iscsi(1))
    subprocess.run(["mkfs.ext4", "-q", cp.driver("lio").pool.device(vol["id"])], check=True)
    b = cp.attachment_create(vol["id"], iscsi(2))
    assert b["attach_mode"] == "ro" and "ext4" in b["reason"]
    assert b["connection_info"]["data"]["access_mode"] == "ro"
    assert a["attach_mode"] == "rw"
    drv = cp.driver("lio")
    seen = drv.target.actual(vol["id"])[vol["id"]].hosts
    assert seen["iqn.2026-11.io.test:host2"].mode == "ro"
    events = cp.events(vol["id"])
    assert [(e["host"], e["filesystem"], e["action"]) for e in events] == [
        ("iqn.2026-11.io.test:host2", "ext4", "demoted")]
    c = cp.attachment_create(vol["id"], iscsi(3), mode="ro")
    assert c["attach_mode"] == "ro" and c["reason"] is None


def test_guard_off_and_warn_per_type(cp):
    for mode in ("off", "warn"):
        cp.type_create(f"ma-{mode}")
        cp.type_key(f"ma-{mode}", "set", {"multiattach": "<is> True",
                                           "volume_backend_name": "lio",
                                           "shareblock:fs_guard": mode})
        vol = cp.create(1, f"ma-{mode}")
        cp.attachment_create(vol["id"], iscsi(1))
        subprocess.run(["mkfs.ext4", "-q", cp.driver("lio").pool.device(vol["id"])],
                       check=True)
        b = cp.attachment_create(vol["id"], iscsi(2))
        assert b["attach_mode"] == "rw"
        actions = [e["action"] for e in cp.events(vol["id"])]
        assert actions == ([] if mode == "off" else ["warned"])


def test_blank_then_formatted_the_guard_pass_demotes_all_but_one(cp):
    vol = cp.create(1, "multiattach")
    atts = [cp.attachment_create(vol["id"], iscsi(n)) for n in (1, 2, 3)]
    for att in atts:
        cp.attachment_complete(att["id"])
        assert att["attach_mode"] == "rw"
    assert cp.guard_pass() == []  # blank: nothing to protect yet
    subprocess.run(["mkfs.xfs", "-q", cp.driver("lio").pool.device(vol["id"])], check=True)
    done = cp.guard_pass()
    assert sorted(d["host"] for d in done) == ["iqn.2026-11.io.test:host2",
                                                "iqn.2026-11.io.test:host3"]
    modes = {a["connector"]["initiator"]: a["attach_mode"] for a in cp.attachment_list()}
    assert modes == {"iqn.2026-11.io.test:host1": "rw", "iqn.2026-11.io.test:host2": "ro",
                     "iqn.2026-11.io.test:host3": "ro"}
    seen = cp.driver("lio").target.actual(vol["id"])[vol["id"]].hosts
    assert {h: s.mode for h, s in seen.items()} == modes
    assert cp.guard_pass() == []  # one writer left: never demoted
    assert len(cp.events(vol["id"])) == 2
    assert cp.reconcile()["admitted"] == []  # state and target agree on the modes
