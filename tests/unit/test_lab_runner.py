import shlex
from pathlib import Path

import pytest

from shareblock.lab import kernel, runner

APT_CACHE = """linux-image-6.12-amd64
  Depends: linux-image-6.12.117+deb12-amd64
"""


def test_parse_depends_finds_the_versioned_image():
    assert kernel.parse_depends(APT_CACHE) == "linux-image-6.12.117+deb12-amd64"


def test_parse_depends_without_an_image_is_an_error():
    with pytest.raises(kernel.KernelError):
        kernel.parse_depends("linux-image-6.12-amd64\n")


def test_fetch_reuses_a_complete_unpack_and_ignores_partial(tmp_path, monkeypatch):
    done = tmp_path / "linux-image-x"
    (done / "boot").mkdir(parents=True)
    (done / "boot" / "vmlinuz-6.12.1").write_text("k")
    (done / ".complete").touch()
    (tmp_path / "linux-image-y.partial" / "boot").mkdir(parents=True)
    monkeypatch.setattr(kernel, "resolve_package", lambda meta: pytest.fail("no download"))
    assert kernel.fetch(tmp_path) == done / "boot" / "vmlinuz-6.12.1"


def test_command_script_keeps_arguments_and_only_passes_lab_variables():
    env = {"PATH": "/v/bin:/usr/bin", "SHAREBLOCK_X": "a b", "SECRET_TOKEN": "t", "HOME": "/h"}
    script = runner.command_script(["pytest", "-k", "a and b", "$(boom)"], "/w d", env)
    lines = script.splitlines()
    assert "export SHAREBLOCK_X='a b'" in lines
    assert not any("SECRET_TOKEN" in line or "HOME" in line for line in lines)
    assert lines[-2] == "cd '/w d'"
    assert shlex.split(lines[-1]) == ["pytest", "-k", "a and b", "$(boom)"]


def test_vm_command_boots_without_kvm_with_one_device_per_nvme_host(monkeypatch):
    monkeypatch.delenv("SHAREBLOCK_LAB_KVM", raising=False)
    cmd = runner.vm_command(Path("/k/boot/vmlinuz-6.12"), Path("/c/run-1"), "/work", "3G", 2)
    assert "--disable-kvm" in cmd and "--force-9p" in cmd
    assert cmd[cmd.index("--append") + 1] == "nvme_core.multipath=N"
    rwdirs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--rwdir"]
    assert rwdirs == ["/c/run-1", "/work"]
    assert cmd[-1].endswith("guest-init.sh /c/run-1/cmd.sh /c/run-1/rc")


def test_choose_mode(monkeypatch):
    monkeypatch.setattr(runner, "kernel_serves_targets", lambda: False)
    monkeypatch.delenv("SHAREBLOCK_LAB", raising=False)
    assert runner.choose_mode() == "vm"
    monkeypatch.setattr(runner, "kernel_serves_targets", lambda: True)
    assert runner.choose_mode() == "native"
    assert runner.choose_mode("vm") == "vm"
    with pytest.raises(SystemExit):
        runner.choose_mode("docker")


def test_run_returns_the_commands_exit_code_natively(tmp_path, monkeypatch):
    """Native mode through the real guest-init with a fake `bash` world is too much;
    instead run the command script the way guest-init does and check the rc file."""
    monkeypatch.setenv("SHAREBLOCK_LAB_CACHE", str(tmp_path))
    monkeypatch.setattr(runner, "GUEST_INIT", tmp_path / "init.sh")
    (tmp_path / "init.sh").write_text('bash "$1"; rc=$?; echo $rc > "$2"; exit $rc\n')
    assert runner.run(["sh", "-c", "exit 7"], mode="native") == 7
    assert runner.run(["true"], mode="native") == 0
    assert not list(tmp_path.glob("run-*")), "run folders are cleaned up"


def test_output_before_the_boot_survives_a_console_that_reopens_stdout(tmp_path):
    """QEMU opens /proc/self/fd/1 for its console: on a log file that truncated
    everything the caller had written before. The runner hands it a pipe."""
    import subprocess
    import sys
    log = tmp_path / "ci.log"
    script = ("import sys; from shareblock.lab import runner; print('before', flush=True); "
              "sys.exit(runner._run(['bash', '-c', 'exec 3>/proc/self/fd/1; echo vm >&3'], "
              "{'PATH': '/usr/bin:/bin'}, 30))")
    with open(log, "w") as out:
        assert subprocess.run([sys.executable, "-c", script], stdout=out).returncode == 0
    assert log.read_text() == "before\nvm\n"


def run_in_a_fake_vm(tmp_path, monkeypatch, boot) -> tuple[int, int]:
    """runner.run in vm mode with `boot(run_dir, attempt)` standing in for the VM:
    (its exit code, how many boots)."""
    monkeypatch.setenv("SHAREBLOCK_LAB_CACHE", str(tmp_path))
    monkeypatch.setattr(runner.kernel, "fetch", lambda cache: tmp_path / "vmlinuz")
    boots = []

    def vm(cmd, env, timeout):
        boots.append(cmd)
        return boot(Path(cmd[cmd.index("--rwdir") + 1]), len(boots))
    monkeypatch.setattr(runner, "_run", vm)
    return runner.run(["true"], mode="vm"), len(boots)


def test_a_vm_that_stops_before_the_command_boots_once_more(tmp_path, monkeypatch):
    def boot(run_dir, attempt):
        if attempt == 1:
            return 255  # died while booting: no marker, no rc
        (run_dir / "rc.started").touch()
        (run_dir / "rc").write_text("3\n")
        return 3
    assert run_in_a_fake_vm(tmp_path, monkeypatch, boot) == (3, 2)


def test_a_command_that_began_is_not_run_twice(tmp_path, monkeypatch):
    def boot(run_dir, attempt):
        (run_dir / "rc.started").touch()
        return 137  # the VM died under the command: no rc
    assert run_in_a_fake_vm(tmp_path, monkeypatch, boot) == (137, 1)


def test_the_backports_kernel_comes_from_this_machines_mirror(tmp_path):
    sources = tmp_path / "debian.sources"
    sources.write_text("Types: deb\nURIs: http://mirror.example/debian/\n"
                       "Suites: bookworm\n\nTypes: deb\nURIs: http://mirror.example/"
                       "debian-security\n")
    assert kernel.mirror(sources) == "http://mirror.example/debian"
    assert kernel.mirror(tmp_path / "missing") == kernel.DEFAULT_MIRROR


def test_each_lab_kernel_has_its_own_cache_and_a_bad_name_is_refused(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(kernel, "fetch", lambda cache: seen.append(cache) or cache)
    monkeypatch.setattr(kernel, "fetch_backports", lambda cache: seen.append(cache) or cache)
    kernel.fetch_kernel("default", tmp_path)
    kernel.fetch_kernel("backports", tmp_path)
    assert seen == [tmp_path / "kernel", tmp_path / "kernel-backports"]
    with pytest.raises(kernel.KernelError, match="default or backports"):
        kernel.fetch_kernel("7.3", tmp_path)


def test_a_complete_backports_unpack_is_reused(tmp_path, monkeypatch):
    done = tmp_path / "7.3.4+deb13-amd64"
    (done / "boot").mkdir(parents=True)
    (done / "boot" / "vmlinuz-7.3.4+deb13-amd64").write_text("k")
    (done / ".complete").touch()
    monkeypatch.setattr(kernel.subprocess, "run", lambda *a, **k: pytest.fail("no download"))
    assert kernel.fetch_backports(tmp_path) == done / "boot" / "vmlinuz-7.3.4+deb13-amd64"


def test_a_caller_at_a_terminal_gives_the_command_a_terminal():
    script = runner.command_script(["pytest", "-k", "a and b"], "/w", {}, tty=True)
    words = shlex.split(script.splitlines()[-1])
    assert words[:2] == ["script", "-qefc"] and words[-1] == "/dev/null"
    assert shlex.split(words[2]) == ["pytest", "-k", "a and b"]
