"""A real one-node Pacemaker cluster (corosync, pacemakerd) for the fence tests.

Debian's pacemaker, started in the lab: corosync on 127.0.0.1 with one node,
pacemakerd in the foreground, both stopped after. Pacemaker's fencer finds fence
agents in /usr/sbin only; where /usr/sbin is read-only (the lab guest sees the
host's root), an overlay gives it fence_shareblock without touching the host.
"""
import os
import shutil
import subprocess
import time
from pathlib import Path

SBIN = Path("/usr/sbin")
COROSYNC_CONF = """totem {
    version: 2
    cluster_name: shareblock-lab
    transport: knet
    crypto_cipher: none
    crypto_hash: none
}
nodelist {
    node {
        ring0_addr: 127.0.0.1
        name: %(node)s
        nodeid: 1
    }
}
quorum {
    provider: corosync_votequorum
}
logging {
    to_logfile: yes
    logfile: %(log)s
    to_syslog: no
}
"""


def available() -> bool:
    return all(shutil.which(t) for t in ("corosync", "pacemakerd", "stonith_admin", "cibadmin"))


def run(*cmd: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)


class Cluster:
    def __init__(self, folder: Path, node: str = "lab-node"):
        self.folder = Path(folder)
        self.node = node
        self.procs: list[subprocess.Popen] = []
        self.mounted = False

    def install_agent(self, agent: str) -> None:
        target = SBIN / "fence_shareblock"
        if target.exists() and os.path.realpath(target) == os.path.realpath(agent):
            return
        if not os.access(SBIN, os.W_OK):
            upper, work = self.folder / "sbin-upper", self.folder / "sbin-work"
            upper.mkdir()
            work.mkdir()
            subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                            f"lowerdir={SBIN},upperdir={upper},workdir={work}", str(SBIN)],
                           check=True)
            self.mounted = True
        os.symlink(agent, target)

    def start(self, timeout: float = 300) -> None:
        Path("/etc/corosync").mkdir(exist_ok=True)
        Path("/etc/corosync/corosync.conf").write_text(
            COROSYNC_CONF % {"node": self.node, "log": self.folder / "corosync.log"})
        for folder in ("/var/lib/pacemaker/cib", "/var/lib/pacemaker/pengine",
                       "/var/lib/pacemaker/blackbox", "/var/lib/pacemaker/cores",
                       "/var/log/pacemaker", "/var/run/crm", "/var/lib/corosync"):
            Path(folder).mkdir(parents=True, exist_ok=True)
            shutil.chown(folder, "hacluster", "haclient")
        log = open(self.folder / "cluster.out", "w")
        self.procs.append(subprocess.Popen(["corosync", "-f"], stdout=log, stderr=log))
        self._wait(lambda: run("corosync-cfgtool", "-s").returncode == 0, "corosync", 60)
        env = dict(os.environ, PCMK_logfile=str(self.folder / "pacemaker.log"))
        self.procs.append(subprocess.Popen(["pacemakerd", "--foreground"], stdout=log,
                                           stderr=log, env=env))
        self._wait(lambda: f"Online: [ {self.node} ]" in run("crm_mon", "-1").stdout,
                   "pacemaker to bring the node online", timeout)
        self.crm_config("stonith-enabled", "true")

    def crm_config(self, name: str, value: str) -> None:
        res = run("crm_attribute", "--type", "crm_config", "--name", name, "--update", value)
        assert res.returncode == 0, res.stderr

    def add_stonith(self, rid: str, agent: str, params: dict, meta: dict) -> None:
        def pairs(kind, values):
            return "".join(f'<nvpair id="{rid}-{kind}-{k}" name="{k}" value="{v}"/>'
                           for k, v in values.items())
        xml = (f'<primitive id="{rid}" class="stonith" type="{agent}">'
               f'<instance_attributes id="{rid}-ia">{pairs("ia", params)}</instance_attributes>'
               f'<meta_attributes id="{rid}-meta">{pairs("meta", meta)}</meta_attributes>'
               "</primitive>")
        res = run("cibadmin", "--create", "-o", "resources", "--xml-text", xml)
        assert res.returncode == 0, res.stderr
        # the fencer learns the device from the CIB: wait until it lists it
        self._wait(lambda: rid in run("stonith_admin", "--list-registered").stdout,
                   f"the fencer to register {rid}", 300)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        for folder in ("/var/lib/pacemaker/cib", "/var/lib/pacemaker/pengine"):
            shutil.rmtree(folder, ignore_errors=True)  # the next cluster starts empty
        if self.mounted:
            subprocess.run(["umount", "-l", str(SBIN)], check=False)
            self.mounted = False

    def logs(self) -> str:
        out = []
        for name in ("cluster.out", "pacemaker.log"):
            path = self.folder / name
            if path.exists():
                out.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(out)

    def _wait(self, ready, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.logs()}")
            if any(p.poll() is not None for p in self.procs):
                raise AssertionError(f"a cluster daemon exited waiting for {what}:\n"
                                     f"{self.logs()}")
            time.sleep(2)
