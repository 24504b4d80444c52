"""The shared-filesystem guard at run time: a pass over multiattach volumes."""
from shareblock.control.records import CONNECTED, now
from shareblock.driver import guard


class RuntimeGuard:
    def guard_pass(self) -> list[dict]:
        """Probe multiattach volumes that several hosts hold rw; where a single-host
        filesystem appeared, demote all writers but one to ro, live, at the target."""
        self.authorize("shareblock:guard")
        done = []
        for vol in self.db.query("SELECT * FROM volumes WHERE multiattach=1 AND status IN "
                                 "('attaching','in-use')"):
            order = []
            for att in self._attachments(vol["id"]):
                if (att["status"] in CONNECTED and att["attach_mode"] == "rw"
                        and att["host_id"] and att["host_id"] not in order):
                    order.append(att["host_id"])
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
                writes = {h: (s.counters or {}).get("write_mbytes")
                          for h, s in (seen.hosts.items() if seen else ())}
                writers = [h for h in order if seen and h in seen.hosts
                           and seen.hosts[h].mode == "rw"]
                for host, decision in guard.at_run_time(writers, writes, order, found.verdict,
                                                        found.filesystem, mode).items():
                    if decision.action == "demoted":
                        drv.set_host_mode(vol["id"], host, "ro")
                    with self.db.transaction() as db:
                        if decision.action == "demoted":
                            db.execute("UPDATE attachments SET attach_mode='ro', reason=?, "
                                       "updated_at=? WHERE volume_id=? AND host_id=?",
                                       (decision.reason, now(), vol["id"], host))
                        self._event(db, vol["id"], host, decision.filesystem, decision.action,
                                    decision.reason)
                    done.append({"volume_id": vol["id"], "host": host, "action": decision.action,
                                 "filesystem": decision.filesystem, "reason": decision.reason})
        return done
