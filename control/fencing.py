"""Fencing at the target (fence_shareblock): a node cut off from its volumes.

A fence is one record: the node (its connectors' `host`), the host ids it had
when fenced, and the volumes it covers (all when none are named). The node's
attachments stay. Access is derived from the attachments less the fenced ones
(`Records.driver_volume`), so the revoke at fence, the refusal of a new attach,
keeping the node out through reconcile and a reboot's restore (the node's
documents are written without its hosts) and the readmission at unfence all
follow from that one record. Every fence and unfence is an event.
"""
import re

from shareblock.control import db as db_mod
from shareblock.control.errors import ControlError, InvalidInput, NotFound
from shareblock.control.records import now

# Pacemaker's node names (and a connector's `host` that names one): letters,
# digits, `_`, `-`, `.`
NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
# an attachment's node, as the attachments_node index (schema 5) has it
NODE_OF = "json_extract(connector, '$.host')"


def check_node(node) -> str:
    if not isinstance(node, str) or not NODE_RE.match(node):
        raise InvalidInput(f"node name {node!r} must be letters, digits, '_', '-', '.' "
                           "(as Pacemaker names nodes)")
    return node


class Fencing:
    def _node_attachments(self, node: str) -> list:
        """The node's attachments with a host: those whose connector names it (an
        indexed expression: the cost is the node's attachments, not everyone's)."""
        return self.db.query(f"SELECT * FROM attachments WHERE {NODE_OF} = ? "
                             "ORDER BY created_at", (node,))

    def fence(self, node: str, volumes: list[str] | None = None) -> dict:
        """Cut the node's hosts off at the target (from `volumes`, or all): their
        ACLs or subsystems go, which ends live sessions; no attach of theirs is
        admitted until unfence. Idempotent: fencing again widens the fence."""
        self.authorize("shareblock:fence")
        check_node(node)
        vids = None if not volumes else {self._volume_row(v)["id"] for v in volumes}
        try:
            previous = self.fence_status(node)["status"]
        except NotFound:  # nothing names the node yet: fenced ahead of its first attach
            previous = None
        atts = self._node_attachments(node)
        hosts = {a["host_id"] for a in atts if a["host_id"]}
        with self.db.transaction() as db:
            had = db.execute("SELECT * FROM fences WHERE node=?", (node,)).fetchone()
            if had is not None:
                hosts |= set(db_mod.loads(had["hosts"]))
                covered = db_mod.loads(had["volumes"])
                vids = None if vids is None or covered is None else vids | set(covered)
            row = (db_mod.dumps(sorted(hosts)),
                   None if vids is None else db_mod.dumps(sorted(vids)))
            if had is None or (had["hosts"], had["volumes"]) != row:  # else: as it was
                db.execute("INSERT OR REPLACE INTO fences VALUES (?,?,?,?)",
                           (node, *row, now()))
                self._event(db, None, node, None, "fenced",
                            f"hosts {', '.join(sorted(hosts)) or 'none'}; volumes "
                            f"{'all' if vids is None else ', '.join(sorted(vids))}")
        self._resync({a["volume_id"] for a in atts})
        shown = self.fence_status(node)
        if shown["status"] != "off":
            raise ControlError(f"node {node} is still admitted at the target "
                               f"({shown['admitted']}); run reconcile, then fence again")
        return {**shown, "previous_status": previous}

    def unfence(self, node: str) -> dict:
        """Readmit the node's hosts with their attachments' modes and their own
        (derived, unchanged) credentials."""
        self.authorize("shareblock:fence")
        check_node(node)
        with self.db.transaction() as db:
            had = db.execute("SELECT * FROM fences WHERE node=?", (node,)).fetchone()
            if had is not None:
                db.execute("DELETE FROM fences WHERE node=?", (node,))
                self._event(db, None, node, None, "unfenced",
                            f"hosts {', '.join(db_mod.loads(had['hosts'])) or 'none'}")
        self._resync({a["volume_id"] for a in self._node_attachments(node)})
        try:
            return self.fence_status(node)
        except NotFound:  # nothing names the node: nothing to readmit, and not fenced
            return {"node": node, "fenced": False, "status": "on", "hosts": [],
                    "admitted": [], "volumes": None, "fenced_at": None}

    def _resync(self, vids: set[str]) -> None:
        """The volumes' exports brought to their (fence-filtered) attachments, by
        reconcile's batch path: each volume's lock held, guard decisions recorded."""
        by_backend: dict[str, list[str]] = {}
        for vid in sorted(vids):
            row = self.db.query("SELECT backend FROM volumes WHERE id=?", (vid,))
            if row and row[0]["backend"]:
                by_backend.setdefault(row[0]["backend"], []).append(vid)
        report = {"admitted": [], "revoked": [], "unexported": []}
        for backend, ids in by_backend.items():
            drv = self.driver(backend)
            held, recorded = {}, {}
            for vid in ids:  # the fenced volumes' own, not every export's
                held.update(drv.exports(vid))
                recorded.update(drv.recorded_exports(vid))
            self._reconcile_batch(drv, ids, held, recorded, report)

    def fence_status(self, node: str) -> dict:
        """`off` when the node is fenced and the target (configfs) admits none of
        its hosts on the volumes the fence covers; `on` otherwise."""
        self.authorize("shareblock:fence")
        check_node(node)
        fence = self.db.query("SELECT * FROM fences WHERE node=?", (node,))
        fence = fence[0] if fence else None
        atts = self._node_attachments(node)
        if fence is None and not atts:
            raise NotFound(f"node {node!r} is not known: no attachment names it")
        hosts = {a["host_id"] for a in atts if a["host_id"]}
        covered = None
        if fence is not None:
            hosts |= set(db_mod.loads(fence["hosts"]))
            covered = None if fence["volumes"] is None else set(db_mod.loads(fence["volumes"]))
        admitted = []
        for vid in sorted({a["volume_id"] for a in atts}):
            if covered is not None and vid not in covered:
                continue
            backend = self._volume_row(vid)["backend"]
            if not backend:
                continue
            seen = self.driver(backend).exports(vid).get(vid)
            admitted += [{"volume_id": vid, "host": h} for h in sorted(seen.hosts)
                         if h in hosts] if seen else []
        return {"node": node, "fenced": fence is not None,
                "status": "off" if fence is not None and not admitted else "on",
                "hosts": sorted(hosts), "admitted": admitted,
                "volumes": None if covered is None else sorted(covered),
                "fenced_at": fence["at"] if fence else None}

    def fence_list(self) -> list[dict]:
        """Every node the control plane knows (its attachments name it, or it is
        fenced), with its status."""
        self.authorize("shareblock:fence")
        nodes = {r["node"] for r in self.db.query("SELECT node FROM fences")}
        for row in self.db.query(f"SELECT DISTINCT {NODE_OF} AS node FROM attachments "
                                 f"WHERE {NODE_OF} IS NOT NULL"):
            if isinstance(row["node"], str) and NODE_RE.match(row["node"]):
                nodes.add(row["node"])
        return [self.fence_status(n) for n in sorted(nodes)]
