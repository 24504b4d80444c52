"""Run a command where real LIO and nvmet exist: this kernel, or a lab VM.

One call is one boot: the hardware suite runs as one command inside one guest.
"""
import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from shareblock.lab import kernel

GUEST_INIT = Path(__file__).with_name("guest-init.sh")
# Variables a lab command inherits; everything else stays on the host.
PASS_ENV_PREFIXES = ("SHAREBLOCK_", "OSLO_", "PYTEST_")
PASS_ENV_NAMES = ("PATH", "VIRTUAL_ENV", "CI", "TERM", "LANG", "PYTHONPATH")
# One device per host identity: two host NQNs on one kernel must not merge.
KERNEL_ARGS = "nvme_core.multipath=N"


def cache_dir() -> Path:
    return Path(os.environ.get("SHAREBLOCK_LAB_CACHE", Path.cwd() / ".cache" / "lab"))


def kernel_serves_targets() -> bool:
    """True when this kernel has (or can load) configfs, LIO and nvmet."""
    cfg = Path("/sys/kernel/config")
    if (cfg / "target").is_dir() and (cfg / "nvmet").is_dir():
        return True
    modprobe = shutil.which("modprobe") or "/sbin/modprobe"
    try:
        res = subprocess.run([modprobe, "-n", "-q", "configfs", "target_core_mod", "nvmet"],
                             capture_output=True)
    except OSError:
        return False
    return res.returncode == 0 and Path("/proc/modules").exists()


def choose_mode(requested: str | None = None) -> str:
    mode = requested or os.environ.get("SHAREBLOCK_LAB", "auto")
    if mode not in ("auto", "native", "vm"):
        raise SystemExit(f"shareblock-lab: unknown mode {mode!r} (auto, native or vm)")
    if mode == "auto":
        mode = "native" if kernel_serves_targets() else "vm"
    return mode


def command_script(argv: list[str], cwd: str, env: dict[str, str], tty: bool = False) -> str:
    """The shell script the guest runs: the caller's environment, folder and command.
    `tty`: the caller sits at a terminal, so the command gets one too (a pty from
    util-linux's `script`; the guest's console is not one): progress lines show."""
    lines = ["# written by shareblock-lab"]
    for name in sorted(env):
        if name in PASS_ENV_NAMES or name.startswith(PASS_ENV_PREFIXES):
            lines.append(f"export {name}={shlex.quote(env[name])}")
    lines.append(f"cd {shlex.quote(cwd)}")
    command = shlex.join(argv)
    lines.append(f"script -qefc {shlex.quote(command)} /dev/null" if tty else command)
    return "\n".join(lines) + "\n"


def vm_command(image: Path, run_dir: Path, cwd: str, memory: str, cpus: int) -> list[str]:
    vng = shutil.which("vng") or str(Path(sys.executable).with_name("vng"))
    cmd = [vng, "--run", str(image), "--force-9p", "-m", memory, "--cpus", str(cpus),
           "--rwdir", str(run_dir), "--append", KERNEL_ARGS,
           "--exec", f"bash {GUEST_INIT} {run_dir}/cmd.sh {run_dir}/rc"]
    if os.environ.get("SHAREBLOCK_LAB_KVM") != "1":
        cmd.insert(3, "--disable-kvm")  # see LAB-NOTES: stock kernels hang under this KVM
    if cwd != "/":
        cmd[cmd.index("--append"):cmd.index("--append")] = ["--rwdir", cwd]
    return cmd


def _relay(src, dst) -> None:
    while chunk := os.read(src.fileno(), 65536):
        dst.write(chunk)
        dst.flush()


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> int:
    # The VM's output comes through a pipe and is copied to ours: QEMU reopens
    # /proc/self/fd/1 for its console, which truncates a log file that our
    # caller redirected stdout to (everything before the boot was lost).
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    relay = threading.Thread(target=_relay, args=(proc.stdout, sys.stdout.buffer), daemon=True)
    relay.start()

    def stop(signum, frame):  # take the VM down with us
        os.killpg(proc.pid, signal.SIGKILL)
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        print(f"[lab] timed out after {timeout:.0f} s", file=sys.stderr, flush=True)
        return 124
    finally:
        relay.join(5)  # the rest of the VM's output, before ours
        for s, handler in previous.items():
            signal.signal(s, handler)


def run(argv: list[str], mode: str | None = None, memory: str = "3G", cpus: int = 2,
        timeout: float = 3600.0, kernel_name: str = "default") -> int:
    """Run argv in the lab; returns its exit code. `kernel_name`: which lab kernel
    a VM boots (kernel.KERNELS); the command sees it as $SHAREBLOCK_LAB_KERNEL."""
    mode = choose_mode(mode)
    env = dict(os.environ)
    env["SHAREBLOCK_LAB_KERNEL"] = kernel_name if mode == "vm" else "native"
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")  # vng needs virtme-run on PATH
    cwd = os.getcwd()
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=cache))
    tty = mode == "vm" and sys.stdout.isatty() and sys.stderr.isatty()
    (run_dir / "cmd.sh").write_text(command_script(argv, cwd, env, tty))
    started = time.monotonic()
    if mode == "native":
        print(f"[lab] native kernel {os.uname().release}: running directly", flush=True)
        cmd = ["bash", str(GUEST_INIT), str(run_dir / "cmd.sh"), str(run_dir / "rc")]
    else:
        image = kernel.fetch_kernel(kernel_name, cache)
        print(f"[lab] booting {image.name} under QEMU emulation (no KVM)", flush=True)
        cmd = vm_command(image, run_dir, cwd, memory, cpus)
    vm_rc = _run(cmd, env, timeout)
    rc_file = run_dir / "rc"
    if mode == "vm" and not rc_file.exists() and not (run_dir / "rc.started").exists():
        # The VM stopped before the command began (a boot that failed under
        # emulation, seen once in many): boot once more. A command that began is
        # never run twice.
        print(f"[lab] the VM stopped before the command began (exit {vm_rc}): "
              "booting once more", file=sys.stderr, flush=True)
        vm_rc = _run(cmd, env, timeout)
    if rc_file.exists():
        rc = int(rc_file.read_text().strip() or 125)
    else:
        print(f"[lab] the lab ended without a result (runner exit {vm_rc})",
              file=sys.stderr, flush=True)
        rc = vm_rc or 125
    shutil.rmtree(run_dir, ignore_errors=True)
    print(f"[lab] exit {rc} after {time.monotonic() - started:.0f} s", flush=True)
    return rc


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="shareblock-lab",
        description="Run a command in the hardware lab (this kernel if it has LIO and "
                    "nvmet, else Debian's 6.12 kernel under QEMU emulation).")
    sub = parser.add_subparsers(dest="action", required=True)
    p_run = sub.add_parser("run", help="run CMD in the lab and return its exit code")
    p_run.add_argument("--mode", choices=("auto", "native", "vm"), default=None,
                       help="default: $SHAREBLOCK_LAB or auto")
    p_run.add_argument("--memory", default=os.environ.get("SHAREBLOCK_LAB_MEMORY", "3G"))
    p_run.add_argument("--cpus", type=int, default=min(os.cpu_count() or 1, 2))
    p_run.add_argument("--timeout", type=float, default=3600.0)
    p_run.add_argument("--kernel", choices=kernel.KERNELS, default="default",
                       help="the VM's kernel: default (Debian 12's 6.12) or backports "
                            "(trixie-backports' 7.x, with nvmet reservations)")
    p_run.add_argument("command", nargs=argparse.REMAINDER)
    p_fetch = sub.add_parser("fetch", help="download and unpack a lab kernel")
    p_fetch.add_argument("--kernel", choices=kernel.KERNELS, default="default")
    sub.add_parser("mode", help="print whether the lab runs natively or in a VM")
    opts = parser.parse_args(args)
    if opts.action == "fetch":
        print(kernel.fetch_kernel(opts.kernel, cache_dir()))
        return 0
    if opts.action == "mode":
        print(choose_mode())
        return 0
    command = opts.command[1:] if opts.command[:1] == ["--"] else opts.command
    if not command:
        parser.error("run needs a command after --")
    return run(command, opts.mode, opts.memory, opts.cpus, opts.timeout, opts.kernel)


if __name__ == "__main__":
    sys.exit(main())
