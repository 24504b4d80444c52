"""What `shareblock-exporter` shows Prometheus: one collector, read at each scrape.

A scrape reads the control plane's SQLite state (volumes with their attachments,
types, one aggregate of the event log) and, per backend, the target's view of
shareblock's own exports once (`driver.exports(hosts_only=True)`: its objects
found by name, never a walk of all of configfs; per host its mode, session and
counters, nothing else) and its pool's stats. Names follow Prometheus'
rules: `shareblock_` first, base units (bytes, seconds), `_total` on counters.
"""
import logging
import threading
import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from shareblock.control.records import moment

LOG = logging.getLogger("shareblock.exporter")
MIB = 1 << 20
GIB = 1 << 30
# the event log's actions that metrics count (the control plane's event names)
COUNTED = {"demoted": ("shareblock_guard_demotions_total",
                       "hosts the filesystem guard made read-only at the target"),
           "warned": ("shareblock_guard_warnings_total",
                      "second writers the guard warned of (warn mode, or no read-only possible)"),
           "fenced": ("shareblock_fences_total", "nodes fenced at the target"),
           "unfenced": ("shareblock_unfences_total", "nodes unfenced")}


def epoch(stamp: str | None) -> float | None:
    """The control plane's timestamps as epoch seconds."""
    when = moment(stamp)
    return None if when is None else when.timestamp()


class ShareblockCollector(Collector):
    def __init__(self, plane):
        self.plane = plane
        self._one = threading.Lock()  # scrapes arrive on server threads: one at a time

    def collect(self):
        with self._one:
            yield from self._collect()

    def _collect(self):
        started = time.perf_counter()
        cp = self.plane
        volumes = cp.volume_list()
        yield from self._volumes(cp, volumes)
        yield from self._targets(cp)
        yield from self._events(cp)
        took = GaugeMetricFamily("shareblock_exporter_scrape_duration_seconds",
                                 "time this scrape took to read the control plane and targets")
        took.add_metric([], time.perf_counter() - started)
        yield took

    @staticmethod
    def _volumes(cp, volumes):
        info = GaugeMetricFamily("shareblock_volume_info", "a volume (always 1)",
                                 labels=["volume_id", "name", "status", "volume_type",
                                         "backend"])
        size = GaugeMetricFamily("shareblock_volume_size_bytes", "a volume's size",
                                 labels=["volume_id"])
        multi = GaugeMetricFamily("shareblock_volume_multiattach",
                                  "1 when the volume may hold several attachments",
                                  labels=["volume_id"])
        atts = GaugeMetricFamily("shareblock_volume_attachments",
                                 "a volume's attachments by status and mode",
                                 labels=["volume_id", "status", "mode"])
        guard = GaugeMetricFamily("shareblock_volume_guard_mode",
                                  "the filesystem guard's mode for the volume (1 for its mode)",
                                  labels=["volume_id", "mode"])
        specs = {t["name"]: t.get("extra_specs") or {} for t in cp.type_list()}
        for vol in volumes:
            vid = vol["id"]
            info.add_metric([vid, vol["name"] or "", vol["status"], vol["volume_type"] or "",
                             vol.get("os-vol-host-attr:host") or ""], 1)
            size.add_metric([vid], vol["size"] * GIB)
            multi.add_metric([vid], int(vol["multiattach"]))
            counted: dict[tuple, int] = {}
            for att in vol["attachments"]:
                key = (att["attach_status"], att["attach_mode"] or "rw")
                counted[key] = counted.get(key, 0) + 1
            for (status, mode), n in sorted(counted.items()):
                atts.add_metric([vid, status, mode], n)
            backend = vol.get("os-vol-host-attr:host")
            if backend and vol["multiattach"]:
                typed = {"volume_type": {"extra_specs": specs.get(vol["volume_type"], {})}}
                try:
                    guard.add_metric([vid, cp.driver(backend).guard_mode(typed)], 1)
                except Exception as e:  # its backend is down: shareblock_backend_up says so
                    LOG.debug("no guard mode for %s: %s", vid, e)
        yield from (info, size, multi, atts, guard)

    @staticmethod
    def _targets(cp):
        labels = ["backend", "volume_id", "host"]
        admitted = GaugeMetricFamily("shareblock_host_admitted",
                                     "1 for each host the target admits to a volume", labels=labels)
        read_only = GaugeMetricFamily("shareblock_host_read_only",
                                      "1 when the target refuses the host's writes", labels=labels)
        sessions = GaugeMetricFamily("shareblock_host_sessions",
                                     "the host's live sessions to the volume (LIO)", labels=labels)
        read = CounterMetricFamily("shareblock_host_read_bytes",
                                   "bytes the host read, as the target counts them (MiB steps)",
                                   labels=labels)
        written = CounterMetricFamily("shareblock_host_written_bytes",
                                      "bytes the host wrote, as the target counts them "
                                      "(MiB steps)", labels=labels)
        commands = CounterMetricFamily("shareblock_host_commands",
                                       "commands (LIO) or requests (nvmet's per-host view) "
                                       "the host sent", labels=labels)
        pool_labels = ["backend", "pool"]
        capacity = GaugeMetricFamily("shareblock_pool_capacity_bytes", "a pool's size",
                                     labels=pool_labels)
        free = GaugeMetricFamily("shareblock_pool_free_bytes", "a pool's free space",
                                 labels=pool_labels)
        provisioned = GaugeMetricFamily("shareblock_pool_provisioned_bytes",
                                        "the sizes of a pool's volumes, summed",
                                        labels=pool_labels)
        up = GaugeMetricFamily("shareblock_backend_up",
                               "1 when the backend's target and pool answered this scrape",
                               labels=["backend"])
        restored = GaugeMetricFamily("shareblock_last_restore_timestamp_seconds",
                                     "when the storage node's boot-time restore last ran",
                                     labels=["backend"])
        for backend in cp.conf.enabled_backends:
            try:
                drv = cp.driver(backend)
                exports = drv.exports(hosts_only=True)
                stats = drv.get_volume_stats(refresh=True)
                last = drv.last_restore()
            except Exception as e:  # one backend down never hides the others
                LOG.warning("backend %s did not answer the scrape: %s", backend, e)
                up.add_metric([backend], 0)
                continue
            up.add_metric([backend], 1)
            for vid, export in sorted(exports.items()):
                for host, seen in sorted(export.hosts.items()):
                    key = [backend, vid, host]
                    admitted.add_metric(key, 1)
                    read_only.add_metric(key, int(seen.mode == "ro"))
                    if seen.logged_in is not None:
                        sessions.add_metric(key, int(seen.logged_in))
                    counters = seen.counters or {}
                    if "read_mbytes" in counters:
                        read.add_metric(key, counters["read_mbytes"] * MIB)
                    if "write_mbytes" in counters:
                        written.add_metric(key, counters["write_mbytes"] * MIB)
                    if "num_cmds" in counters:
                        commands.add_metric(key, counters["num_cmds"])
            for pool in stats.get("pools") or []:
                key = [backend, pool.get("pool_name", backend)]
                capacity.add_metric(key, pool.get("total_capacity_gb", 0) * GIB)
                free.add_metric(key, pool.get("free_capacity_gb", 0) * GIB)
                provisioned.add_metric(key, pool.get("provisioned_capacity_gb", 0) * GIB)
            if last and last.get("at") is not None:
                restored.add_metric([backend], last["at"])
        yield from (admitted, read_only, sessions, read, written, commands, capacity, free,
                    provisioned, up, restored)

    @staticmethod
    def _events(cp):
        summary = cp.event_summary()
        actions = summary["actions"]
        for action, (name, doc) in COUNTED.items():
            family = CounterMetricFamily(name.removesuffix("_total"), doc)
            family.add_metric([], actions.get(action, {}).get("count", 0))
            yield family
        refused = CounterMetricFamily("shareblock_attach_refusals",
                                      "attaches refused, by reason (fenced, in_use, "
                                      "invalid_input, not_found, policy, mode_unsupported, "
                                      "conflict, backend_failed)", labels=["reason"])
        for reason, n in sorted(cp.refusal_counts().items()):
            refused.add_metric([reason], n)
        yield refused
        repairs = CounterMetricFamily("shareblock_reconcile_repairs",
                                      "what reconcile runs repaired, by kind", labels=["kind"])
        for kind, n in sorted(summary["repairs"].items()):
            repairs.add_metric([kind], n)
        yield repairs
        runs = CounterMetricFamily("shareblock_reconcile_runs", "reconcile runs")
        runs.add_metric([], actions.get("reconciled", {}).get("count", 0))
        yield runs
        last = GaugeMetricFamily("shareblock_last_reconcile_timestamp_seconds",
                                 "when reconcile last ran")
        at = epoch(actions.get("reconciled", {}).get("last_at"))
        if at is not None:
            last.add_metric([], at)
        yield last
        verdict = GaugeMetricFamily("shareblock_volume_guard_last_decision_timestamp_seconds",
                                    "when the guard last decided on the volume, with what "
                                    "(demoted or warned) and on which filesystem",
                                    labels=["volume_id", "action", "filesystem"])
        for vid, d in sorted(summary["last_guard"].items()):
            at = epoch(d["at"])
            if vid and at is not None:
                verdict.add_metric([vid, d["action"], d["filesystem"] or ""], at)
        yield verdict
