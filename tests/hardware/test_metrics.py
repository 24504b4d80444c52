"""A real Prometheus (Debian's package) scrapes shareblock-exporter every second
while hosts attach, write, are demoted by the guard and detach; its HTTP API
answers with the series and values the state says (writes by host, a demotion
counted once, no host left admitted)."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from shareblock.control import config
from shareblock.control.api import ControlPlane
from shareblock.lab.hosts import Host
from tests import crashlib

MIB = 1 << 20
EXPORTER = os.path.join(os.path.dirname(sys.executable), "shareblock-exporter")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return reply.read()


def wait(ready, what: str, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = ready()
            if got:
                return got
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1)


@pytest.fixture
def monitored(tmp_path, unique):
    """The lab's control plane, its exporter, and a Prometheus scraping it."""
    assert shutil.which("prometheus"), "Debian's prometheus is missing: scripts/bootstrap.sh"
    path = crashlib.lab_conf(tmp_path, unique)
    exporter_port, web_port = free_port(), free_port()
    log = open(tmp_path / "daemons.log", "w")
    exporter = subprocess.Popen([EXPORTER, "--config", str(path), "--listen",
                                 f"127.0.0.1:{exporter_port}"], stdout=log, stderr=log)
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: shareblock\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{exporter_port}']\n")
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{web_port}"], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{web_port}"
    try:
        wait(lambda: b"shareblock_backend_up" in get(
            f"http://127.0.0.1:{exporter_port}/metrics"), "the exporter")
        wait(lambda: get(f"{base}/-/ready"), "Prometheus")
        yield path, base
    finally:
        for proc in (prometheus, exporter):
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        crashlib.clean_up(ControlPlane(config.load(str(path)), user="root"))


def query(base: str, expr: str) -> list:
    """An instant query through Prometheus' HTTP API: [(labels, value)]."""
    reply = json.loads(get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
    assert reply["status"] == "success", reply
    return [(r["metric"], float(r["value"][1])) for r in reply["data"]["result"]]


def until(base: str, expr: str, check, what: str, timeout: float = 180) -> list:
    last = []

    def ready():  # a tuple: an empty result can be the awaited one
        last[:] = [query(base, expr)]
        return (last[0],) if check(last[0]) else None
    try:
        return wait(ready, what, timeout)[0]
    except AssertionError:
        raise AssertionError(f"timed out waiting for {what}: {expr} is {last}") from None


def test_prometheus_sees_hosts_write_get_demoted_and_leave(monitored, unique):
    path, base = monitored
    cp = ControlPlane(config.load(str(path)), user="root")
    vid = cp.create(1, crashlib.make_types(cp, "iscsi")["guard"])["id"]
    a, b = Host("iscsi", f"ma-{unique}"), Host("iscsi", f"mb-{unique}")
    attachments = []
    try:
        for host in (a, b):
            if host is b:  # a single-host filesystem under a writer: b gets ro
                subprocess.run(["mkfs.ext4", "-q", "-F", str(a.device())], check=True)
            att = cp.attachment_create(vid, host.connector())
            cp.attachment_complete(att["id"])
            attachments.append(att["id"])
            host.attach(cp.attachment_show(att["id"])["connection_info"])
            if host is a:
                a.write(os.urandom(8 * MIB), offset_mb=64)
        sel = f'volume_id="{vid}"'
        got = until(base, f'shareblock_host_written_bytes_total{{{sel},host="{a.id}"}}',
                    lambda r: r and r[0][1] >= 8 * MIB, "a's writes")
        assert got[0][0]["backend"] and got[0][1] >= 8 * MIB
        until(base, f'shareblock_host_read_only{{{sel},host="{b.id}"}}',
              lambda r: r and r[0][1] == 1, "b read-only")
        until(base, f'shareblock_host_read_only{{{sel},host="{a.id}"}}',
              lambda r: r and r[0][1] == 0, "a writing")
        until(base, "shareblock_guard_demotions_total", lambda r: r and r[0][1] == 1,
              "one demotion")
        until(base, f'shareblock_volume_guard_last_decision_timestamp_seconds{{{sel}}}',
              lambda r: r and r[0][0]["action"] == "demoted"
              and r[0][0]["filesystem"] == "ext4", "the last decision")
        until(base, f'shareblock_volume_attachments{{{sel},status="attached"}}',
              lambda r: sum(v for _, v in r) == 2, "two attachments")
        for host, att in zip((a, b), attachments, strict=True):
            host.disconnect()
            cp.attachment_delete(att)
        until(base, f"shareblock_host_admitted{{{sel}}}", lambda r: r == [],
              "no host admitted", timeout=60)
        assert query(base, "shareblock_guard_demotions_total")[0][1] == 1, "counted once"
        up = query(base, "shareblock_backend_up")
        assert up and all(v == 1 for _, v in up), up
    finally:
        a.cleanup()
        b.cleanup()
