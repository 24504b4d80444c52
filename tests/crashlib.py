"""Crash injection: run an operation until its Nth crash point, reconcile, check.

Shared by the lab test (tests/hardware/reliability/test_crash.py: a forked child
ends itself with os._exit at the point, the kernel keeps what it made) and the
unit test (tests/unit/test_crash_matrix.py: the same matrix on fake targets, the
crash raised as a BaseException that no rollback catches).

`violations()` is the definition of converged: what reconcile must leave.
"""
import json
import os
import subprocess
import traceback
from pathlib import Path

from shareblock.control.api import ControlPlane
from shareblock.targets import crashpoints

LIVE = ("attaching", "attached")
PREFIXES = """shareblock_iqn_prefix = iqn.2026-11.io.shareblock.r{u}
shareblock_nqn_prefix = nqn.2026-11.io.shareblock.r{u}
"""


def lab_conf(folder: Path, unique: str, only: str | None = None, **backend_options) -> Path:
    """The lab's shareblock.conf (LIO and nvmet, file pools), with target names under
    this test's own prefix, so that anything under it the database lacks is an
    orphan; backend_options go into both backend sections, or the `only` one."""
    from shareblock.lab import config as lab_config
    path = lab_config.write(folder)
    text = path.read_text()
    prefixes = PREFIXES.format(u=unique)
    extra = "".join(f"{k} = {v}\n" for k, v in backend_options.items())
    for name in ("lio", "nvme"):
        section = f"[{name}]\n"
        text = text.replace(section, section + prefixes + (
            extra if only in (None, name) else ""))
    path.write_text(text)
    return path
TRANSIENT = ("creating", "deleting", "extending", "reverting")
SNAPSHOT_TRANSIENT = ("creating", "deleting", "restoring")


def pool_volumes(pool) -> set[str] | None:
    """Volume ids the pool holds storage for (None: cannot tell)."""
    folder = getattr(pool, "dir", None) or getattr(pool, "folder", None)
    if folder is not None:
        return {p.name[:-4] for p in Path(folder).glob("*.img")}
    if hasattr(pool, "volumes"):
        return set(pool.volumes)
    return None


def pool_snapshots(pool) -> set[str] | None:
    """Snapshot ids the pool holds storage for (None: cannot tell)."""
    folder = getattr(pool, "dir", None) or getattr(pool, "folder", None)
    if folder is not None:
        return {p.name[:-4] for p in (Path(folder) / "snapshots").glob("*.img")}
    if isinstance(getattr(pool, "snapshots", None), dict):
        return set(pool.snapshots)
    return None


def dm_views(dm) -> set[str]:
    if hasattr(dm, "tables"):
        return set(dm.tables)
    out = subprocess.run(["dmsetup", "ls"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith("sb-")}


def lio_backstores(target) -> set[str]:
    """Volume ids with an iblock backstore of ours (target.root/core/iblock_N/sb-VID)."""
    core = target.root / "core"
    found = set()
    for hba in core.children():
        if hba.startswith("iblock_"):
            found |= {n[3:] for n in (core / hba).children() if n.startswith("sb-")}
    return found


def settled(statuses: list[str]) -> str:
    for status, volume in (("attached", "in-use"), ("attaching", "attaching"),
                           ("detaching", "detaching"), ("reserved", "reserved")):
        if status in statuses:
            return volume
    return "available"


def violations(cp: ControlPlane, known: set[str]) -> list[str]:
    """Everything that is not converged, for the volumes in `known` (every id the
    test ever saw) and for anything under the test's own target prefix."""
    bad = []
    rows = {r["id"]: r for r in cp.db.query("SELECT * FROM volumes")}
    atts = cp.db.query("SELECT * FROM attachments")
    for a in atts:
        if a["status"] == "detaching":
            bad.append(f"attachment {a['id']} left detaching")
        if a["status"] in LIVE and not a["connection_info"]:
            bad.append(f"attachment {a['id']} {a['status']} without connection info")
    for vid, row in rows.items():
        if row["status"] in TRANSIENT:
            bad.append(f"volume {vid} left {row['status']}")
        elif row["status"] not in ("error", "error_deleting"):
            want = settled([a["status"] for a in atts if a["volume_id"] == vid])
            if row["status"] != want:
                bad.append(f"volume {vid} is {row['status']}, its attachments say {want}")
    snaps = {r["id"]: r for r in cp.db.query("SELECT * FROM snapshots")}
    for sid, snap in snaps.items():
        if snap["status"] in SNAPSHOT_TRANSIENT:
            bad.append(f"snapshot {sid} left {snap['status']}")
    for backend in cp.conf.enabled_backends:
        drv = cp.driver(backend)
        mine = {v: r for v, r in rows.items() if r["backend"] == backend}
        held = pool_snapshots(drv.pool)
        if held is not None:
            for sid, snap in snaps.items():
                if rows[snap["volume_id"]]["backend"] != backend:
                    continue
                if snap["status"] == "available" and sid not in held:
                    bad.append(f"{backend}: snapshot {sid} is available with no storage")
            for sid in (held & known) - set(snaps):
                bad.append(f"{backend}: orphan snapshot storage of {sid}")
        actual = drv.exports()
        desired = drv.target.desired()  # the storage node's documents
        for vid in set(actual) - set(mine):
            bad.append(f"{backend}: orphan export of volume {vid}")
        for vid in set(desired) - set(actual):
            bad.append(f"{backend}: the node's desired state has an export of {vid} "
                       "that is gone")
        fences = cp._fences()
        for vid in mine:
            wanted = {}
            for a in atts:
                if cp.fence_of(fences, vid, json.loads(a["connector"] or "null"), a["host_id"]):
                    continue  # a fenced node's hosts are cut off
                if a["volume_id"] == vid and a["status"] in LIVE and a["host_id"]:
                    if wanted.get(a["host_id"]) != "rw":
                        wanted[a["host_id"]] = a["attach_mode"]
            seen = actual.get(vid)
            have = {h: s.mode for h, s in seen.hosts.items()} if seen else {}
            if have != wanted:
                bad.append(f"{backend}: volume {vid} admits {have}, attachments want {wanted}")
            if seen and not wanted:
                bad.append(f"{backend}: volume {vid} is exported with no attachment")
            if seen and seen.problems:
                bad.append(f"{backend}: volume {vid}: {seen.problems}")
            if seen:
                doc = desired.get(vid)
                recorded = {a.host: a.mode for a in doc.hosts} if doc else None
                if recorded != have:
                    bad.append(f"{backend}: the node's desired state says {recorded} for "
                               f"{vid}, the target {have}")
                for access in doc.hosts if doc else ():
                    if not (access.credentials.secret or access.credentials.dhchap_key):
                        bad.append(f"{backend}: {access.host} is recorded with no secrets")
        stored = pool_volumes(drv.pool)
        if stored is not None:
            for vid in stored & known:
                if vid not in mine:
                    bad.append(f"{backend}: orphan pool storage of {vid}")
            for vid, row in mine.items():
                if row["status"] not in ("error", "error_deleting") and vid not in stored:
                    bad.append(f"{backend}: volume {vid} is {row['status']} with no storage")
        if drv.protocol == "iscsi" and hasattr(drv.target, "root"):
            for vid in (lio_backstores(drv.target) & known) - set(actual):
                bad.append(f"{backend}: orphan backstore of {vid}")
        if drv.protocol == "nvmet_tcp" and hasattr(drv.target, "dm"):
            from shareblock.targets import devmapper
            views = {devmapper.view_name(vid, h) for vid, e in actual.items() for h in e.hosts}
            for name in dm_views(drv.target.dm):
                vid = name[3:39]
                if vid in known and name not in views:
                    bad.append(f"{backend}: orphan dm view {name}")
    return bad


def run_crashed(make_cp, op, n: int, fork: bool) -> tuple[str, list[str]]:
    """Run op(cp) armed to crash at point n (0: never). Returns (outcome, trail):
    outcome is "crashed" or "done"; an operation that fails otherwise raises."""
    if not fork:
        seen: list[str] = []
        cp = make_cp()  # opening the database is not a step of the operation
        crashpoints.arm(n, action="raise", on_crash=seen.extend)
        try:
            op(cp)
        except crashpoints.Crash:
            return "crashed", seen
        finally:
            trail = crashpoints.disarm()
        return "done", trail
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a fresh control plane (no SQLite handle crosses a fork)
        os.close(read)
        code = 0
        try:
            cp = make_cp()
            crashpoints.arm(n, on_crash=lambda t: os.write(write, json.dumps(t).encode()))
            op(cp)
            os.write(write, json.dumps(crashpoints.disarm()).encode())
        except BaseException:
            os.write(write, json.dumps({"error": traceback.format_exc()}).encode())
            code = 2
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    reply = json.loads(out) if out else {"error": f"no reply, exit {code}"}
    if isinstance(reply, dict) or code not in (0, crashpoints.EXIT_CODE):
        raise AssertionError(f"the operation failed (exit {code}): {reply}")
    return ("crashed" if code == crashpoints.EXIT_CODE else "done"), reply



def connector(protocol: str, name: str) -> dict:
    if protocol == "iscsi":
        return {"initiator": f"iqn.2026-11.io.shareblock.crash:{name}", "host": name}
    return {"nqn": f"nqn.2014-08.io.shareblock.crash:{name}", "host": name}


def attach(cp, vid, protocol, name, mode="rw"):
    att = cp.attachment_create(vid, connector(protocol, name), mode=mode)
    cp.attachment_complete(att["id"])
    return att


# --- the operations: (setup(cp, t) -> ctx, op(cp, ctx)); t names the types ------
def _vol(cp, t, kind="ma"):
    return {"vid": cp.create(1, t[kind])["id"]}


def _with_a(cp, t):
    ctx = _vol(cp, t)
    attach(cp, ctx["vid"], t["protocol"], "a")
    return ctx


def _with_ab(cp, t):
    ctx = _with_a(cp, t)
    ctx["b"] = attach(cp, ctx["vid"], t["protocol"], "b")["id"]
    return ctx


def _with_a_rw_and_ro(cp, t):
    """One host, two attachments: rw (VM 1) and ro (VM 2)."""
    ctx = _with_a(cp, t)
    attach(cp, ctx["vid"], t["protocol"], "a", mode="ro")
    return ctx


def _guarded(cp, t):
    ctx = _vol(cp, t, "guard")
    for name in ("a", "b"):
        attach(cp, ctx["vid"], t["protocol"], name)
    drv = cp.driver(cp.show(ctx["vid"])["os-vol-host-attr:host"])
    device = drv.pool.device(ctx["vid"])
    # The target holds the loop device exclusively: format its backing file, then
    # drop the device's cached blocks so that the guard's probe reads the new ones.
    backing = str(drv.pool._file(ctx["vid"])) if hasattr(drv.pool, "_file") else device
    subprocess.run(["mkfs.ext4", "-q", "-F", backing], check=True, capture_output=True)
    if backing != device:
        subprocess.run(["blockdev", "--flushbufs", device], check=True)
    return ctx


def _detach(which):
    def op(cp, ctx):
        atts = cp.attachment_list(ctx["vid"])
        att = next(a for a in atts if a["connector"]["host"] == which)
        cp.attachment_delete(att["id"])
    return op


def _detach_mode(which, mode):
    def op(cp, ctx):
        att = next(a for a in cp.attachment_list(ctx["vid"])
                   if a["connector"]["host"] == which and a["attach_mode"] == mode)
        cp.attachment_delete(att["id"])
    return op


def _with_a_snapshot(cp, t):
    """An in-use volume (host a attached) with one snapshot."""
    ctx = _with_a(cp, t)
    ctx["sid"] = cp.snapshot_create(ctx["vid"])["id"]
    return ctx


def _revertible(cp, t):
    """An available volume, exported no more, whose latest snapshot is taken."""
    ctx = _vol(cp, t)
    ctx["sid"] = cp.snapshot_create(ctx["vid"])["id"]
    return ctx


def _with_ab_a_fenced(cp, t):
    ctx = _with_ab(cp, t)
    cp.fence("a")
    return ctx


def _guard_pass(cp, ctx):
    done = cp.guard_pass()
    assert [d["action"] for d in done] == ["demoted"], done


OPERATIONS = {
    "create": (lambda cp, t: {}, lambda cp, ctx: cp.create(1, ctx["t"]["ma"], name="crash")),
    "attach-first": (_vol, lambda cp, ctx: cp.attachment_create(
        ctx["vid"], connector(ctx["t"]["protocol"], "a"))),
    "attach-second-ro": (_with_a, lambda cp, ctx: cp.attachment_create(
        ctx["vid"], connector(ctx["t"]["protocol"], "b"), mode="ro")),
    # the same host's second attachment, ro: the host stays rw at the target
    "attach-ro-same-host": (_with_a, lambda cp, ctx: cp.attachment_create(
        ctx["vid"], connector(ctx["t"]["protocol"], "a"), mode="ro")),
    "detach-one": (_with_ab, _detach("b")),
    # the host's rw attachment goes, its ro one stays: ro at the target, live
    "detach-rw-keep-ro": (_with_a_rw_and_ro, _detach_mode("a", "rw")),
    "detach-last": (_with_a, _detach("a")),
    "retype": (_vol, lambda cp, ctx: cp.retype(ctx["vid"], ctx["t"]["plain"])),
    "guard-demote": (_guarded, _guard_pass),
    "delete": (_vol, lambda cp, ctx: cp.delete(ctx["vid"])),
    # snapshots: of an in-use volume (nobody detached), volumes made from them and
    # from volumes, a revert, a snapshot's delete
    "snapshot": (_with_a, lambda cp, ctx: cp.snapshot_create(ctx["vid"])),
    "from-snapshot": (_with_a_snapshot, lambda cp, ctx: cp.create(snapshot_id=ctx["sid"])),
    "clone": (_with_a, lambda cp, ctx: cp.create(source_volid=ctx["vid"])),
    "revert": (_revertible, lambda cp, ctx: cp.revert_to_snapshot(ctx["sid"])),
    "snapshot-delete": (_with_a_snapshot, lambda cp, ctx: cp.snapshot_delete(ctx["sid"])),
    # fencing at the target: node a cut off (b keeps its access), then readmitted
    "fence": (_with_ab, lambda cp, ctx: cp.fence("a")),
    "unfence": (_with_ab_a_fenced, lambda cp, ctx: cp.unfence("a")),
}

# The crash points each operation passes, in order: the step boundaries (both
# transports alike). Tests check that runs still pass exactly these.
TRAILS = {
    "create": "commit commit pool.create commit",  # creating, scheduled, made, available
    # "desired": the storage node's document written, configfs not yet changed
    # attaching at once (reserve and connect in one write), then the driver's steps
    "attach-first": "commit desired export desired admit commit",
    "attach-second-ro": "commit export desired admit commit",
    "attach-ro-same-host": "commit export admit commit",  # the document stays
    "detach-one": "commit desired revoke commit",
    "detach-rw-keep-ro": "commit desired mode commit",
    "detach-last": "commit desired revoke desired unexport commit",
    "retype": "commit",
    "guard-demote": "desired mode commit",
    "delete": "commit unexport pool.delete commit",
    "snapshot": "commit pool.snapshot commit",  # creating, taken, available
    "from-snapshot": "commit pool.create commit",
    "clone": "commit pool.create commit",
    "revert": "commit pool.revert commit",  # reverting and restoring in one write
    "snapshot-delete": "commit pool.delete commit",
    "fence": "commit desired admit",  # the record, then reconcile's batch path (one apply)
    "unfence": "commit desired admit",
}


def make_types(cp, protocol: str) -> dict:
    """Types that land on this protocol's backend; returns their names."""
    proto = "iSCSI" if protocol == "iscsi" else "NVMe-oF"
    t = {"protocol": protocol, "ma": f"ma-{protocol}", "plain": f"plain-{protocol}",
         "guard": f"guard-{protocol}"}
    existing = {x["name"] for x in cp.type_list()}
    for key, specs in (("ma", {"multiattach": "<is> True"}), ("plain", {}),
                       ("guard", {"multiattach": "<is> True", "shareblock:fs_guard": "enforce"})):
        if t[key] not in existing:
            cp.type_create(t[key])
            cp.type_key(t[key], "set", {**specs, "storage_protocol": proto})
    return t


def clean_up(cp) -> None:
    """Unfence, detach and delete everything: also proves the converged state is
    usable."""
    for fenced in cp.db.query("SELECT node FROM fences"):
        cp.unfence(fenced["node"])
    for att in cp.attachment_list():
        cp.attachment_delete(att["id"])
    for snap in cp.snapshot_list():
        cp.snapshot_delete(snap["id"])
    for vol in cp.volume_list():
        cp.delete(vol["id"])


def crash_case(make_cp, t: dict, operation: str, n: int, fork: bool,
               known: set[str], recrash: bool = False) -> dict:
    """One crash: set up, crash the operation at point n, reconcile, check, clean up.
    recrash: reconcile crashes too, at its 1st point, then the next one's 2nd, ...
    until one finishes. Returns what happened; `violations` lists what did not
    converge."""
    setup, op = OPERATIONS[operation]
    cp = make_cp()
    ctx = setup(cp, t)
    ctx["t"] = t
    outcome, trail = run_crashed(make_cp, lambda c: op(c, ctx), n, fork)
    m = 0
    while recrash and outcome == "crashed":
        m += 1
        if run_crashed(make_cp, lambda c: c.reconcile(), m, fork)[0] == "done":
            break
    cp = make_cp()
    known |= {r["id"] for r in cp.db.query("SELECT id FROM volumes UNION "
                                           "SELECT id FROM snapshots")}
    try:
        cp.reconcile()
        bad = violations(cp, known)
        if not bad:
            clean_up(cp)
            bad = [f"after clean-up: {v}" for v in violations(cp, known)]
    except Exception as e:  # reconcile or clean-up failing is not converging
        bad = [f"{type(e).__name__}: {e}"]
    if bad:  # leave the next case a clean slate if we can
        try:
            clean_up(cp)
        except Exception:  # noqa: S110  (already reported)
            pass
    return {"operation": operation, "n": n, "outcome": outcome, "reconcile_crashes": m,
            "point": trail[-1] if trail and outcome == "crashed" else None,
            "trail": trail, "violations": bad}


def points_of(make_cp, t, operation, fork, known) -> list[str]:
    """The crash points one uninterrupted run of the operation passes."""
    case = crash_case(make_cp, t, operation, 0, fork, known)
    assert case["outcome"] == "done" and not case["violations"], case
    return case["trail"]

