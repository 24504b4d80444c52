"""The shared-filesystem guard at run time: a pass over multiattach volumes."""
import dataclasses

from shareblock.control.records import CONNECTED, now
from shareblock.driver import access, guard
from shareblock.targets.base import ModeUnsupported


class RuntimeGuard:
    def guard_pass(self, progress=None) -> list[dict]:
        """Probe multiattach volumes that several hosts hold rw; where a single-host
        filesystem appeared, demote all writers but one to ro, live, at the target.
        `progress(done, total)` hears of each volume looked at."""
        self.authorize("shareblock:guard")
        done = []
        shared = self.db.query("SELECT * FROM volumes WHERE multiattach=1 AND status IN "
                               "('attaching','in-use')")
        for seen, vol in enumerate(shared, start=1):
            if progress:
                progress(seen, len(shared))
            connected = [{"host": a["host_id"], "attach_mode": a["attach_mode"],
                          "instance_uuid": a["instance_uuid"]}
                         for a in self._attachments(vol["id"])
                         if a["status"] in CONNECTED and a["host_id"]]
            # the two ends of a live migration write as one: each group is one writer,
            # named by its first host; a decision on it is a decision on all its hosts
            groups = {g[0]: g for g in access.one_writer_groups(connected, lambda a: a["host"])}
            order = list(groups)
            if len(order) < 2:
                continue
            with self.locks.hold(vol["id"]):  # no attach changes the writers meanwhile
                drv = self.driver(vol["backend"])
                volume = self.driver_volume(vol["id"])
                mode = drv.guard_mode(volume)
                if mode == "off":
                    continue
                found = drv.probe(vol["id"])
                seen = drv.exports(vol["id"]).get(vol["id"])
                held = seen.hosts if seen else {}
                writes = {}
                for first, group in groups.items():
                    counted = [(held[h].counters or {}).get("write_mbytes") for h in group
                               if h in held]
                    counted = [c for c in counted if c is not None]
                    writes[first] = sum(counted) if counted else None
                writers = [first for first, group in groups.items()
                           if any(h in held and held[h].mode == "rw" for h in group)]
                for host, decision in guard.at_run_time(writers, writes, order, found.verdict,
                                                        found.filesystem, mode).items():
                    for member in groups[host]:
                        made = self._decided(drv, vol["id"], member, decision)
                        done.append({"volume_id": vol["id"], "host": member,
                                     "action": made.action,
                                     "filesystem": made.filesystem,
                                     "reason": made.reason})
        return done

    def _decided(self, drv, volume_id: str, host: str, decision) -> guard.Decision:
        """A run-time decision made at the target, then recorded. A target that
        cannot make this host read-only (an NVMe volume with shared reservations)
        turns the demotion into a warning that says so."""
        if decision.action == "demoted":
            try:
                drv.set_host_mode(volume_id, host, "ro")
            except ModeUnsupported as e:
                decision = dataclasses.replace(decision, mode="rw", action="warned",
                                               reason=f"{decision.reason}; not demoted: {e}")
        with self.db.transaction() as db:
            if decision.action == "demoted":
                db.execute("UPDATE attachments SET attach_mode='ro', reason=?, "
                           "updated_at=? WHERE volume_id=? AND host_id=?",
                           (decision.reason, now(), volume_id, host))
            self._event(db, volume_id, host, decision.filesystem, decision.action,
                        decision.reason)
        return decision
