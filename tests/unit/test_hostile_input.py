"""Hostile input (issue 9): property tests on every identifier and name parser.

For any input: it is accepted as a safe name, or refused with the project's own
clear error; a refused input changes nothing (fake configfs tree, SQLite rows and
node's desired documents compared before and after); nothing reaches outside its configfs
folder; no shell ever sees an argument.
"""
import ast
import io
import json
import os
import shlex
from pathlib import Path

import pytest
from hypothesis import assume, event, example, given
from hypothesis import strategies as st

from shareblock.cli import main as cli
from shareblock.cli import remote as cli_remote
from shareblock.control import config
from shareblock.control.api import ControlError, ControlPlane
from shareblock.control.policy import PolicyNotAuthorized
from shareblock.host import control as host_control
from shareblock.targets import agent, credentials, names
from shareblock.targets import factory as factory_mod
from shareblock.targets.base import Credentials, Portal, TargetError
from shareblock.targets.configfs import ConfigfsError, Node
from shareblock.targets.lio import LioTarget
from shareblock.targets.nvmet import NvmetTarget
from shareblock.targets.remote import RemoteTarget
from shareblock.targets.desired import DesiredStore
from shareblock.targets.recorded import RecordedTarget
from tests.unit.fakes import (FakeDm, fake_driver, fake_kernel, fake_kernel_target,
                              fake_lio_export,
                              fake_lio_unexport, node_files, node_secrets, snapshot)
from tests.unit.hostile import (NASTY, VALID_EUI, VALID_IQN, VALID_NAA, VALID_NQN, VALID_TOKEN,
                                any_input, connector, counted, is_safe_name, json_value,
                                text_input)

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = ("cli", "control", "driver", "host", "lab", "targets")
TARGET_ERRORS = (names.InvalidName, TargetError)  # NotFound is a TargetError
CONTROL_ERRORS = (ControlError, PolicyNotAuthorized)
VOL = "vol-1"
DEV = "/dev/loop7"


def inside(root: Path) -> None:
    """Every entry below root, and every link's target, stays below root."""
    root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            assert path.resolve().is_relative_to(root), f"{path} points outside {root}"


# --- the parsers themselves -------------------------------------------------------------
PARSERS = {
    "iqn": names.iqn,
    "nqn": names.nqn,
    "token": lambda v: names.token("volume id", v),
    "chap_user": names.chap_user,
}


@pytest.mark.parametrize("parser", sorted(PARSERS))
@given(value=any_input())
@counted
def test_parsers_accept_only_safe_names(parser, value):
    try:
        out = PARSERS[parser](value)
    except names.InvalidName:
        return
    assert out == value and is_safe_name(out)
    assert len(out.encode()) <= 255
    child = Node("/sys/kernel/config/x") / out  # as a configfs name: one level down, no more
    assert child.path.parent == Path("/sys/kernel/config/x")


@given(iqn=st.one_of(VALID_IQN, VALID_EUI, VALID_NAA), nqn=VALID_NQN, tok=VALID_TOKEN)
@counted
def test_valid_names_are_accepted(iqn, nqn, tok):
    assume(len(iqn) <= names.ISCSI_MAX_NAME)
    assert names.iqn(iqn) == iqn
    assert names.nqn(nqn) == nqn
    assert names.token("volume id", tok) == tok


@given(value=st.one_of(VALID_IQN, VALID_EUI, VALID_NAA), at=st.integers(0, 300),
       bad=st.sampled_from(["/", "..", " ", "\n", "\x00", "é", "\t", "/.."]))
@counted
def test_a_valid_name_with_a_separator_spliced_in_is_refused(value, at, bad):
    spliced = value[:at] + bad + value[at:]
    with pytest.raises(names.InvalidName):
        names.iqn(spliced)
    with pytest.raises(names.InvalidName):
        names.nqn("nqn.2026-11.io.test:" + spliced)


@pytest.mark.parametrize("parser", [names.chap_secret, names.dhchap_key])
@given(value=st.one_of(st.sampled_from(NASTY), st.text(min_size=4, max_size=300)))
@counted
def test_secret_parsers_never_echo_the_value(parser, value):
    try:
        parser(value)
    except names.InvalidName as e:
        assert value not in str(e) or value in parser.__doc__


@given(a=VALID_TOKEN, b=text_input())
@counted
def test_distinct_volume_ids_never_share_a_target_name(a, b):
    """Two volumes must never meet in one target IQN, subsystem NQN or backstore."""
    assume(a != b)
    lio = LioTarget([Portal("127.0.0.1", 3260)], configfs="/nonexistent")
    nvmet = NvmetTarget([Portal("127.0.0.1", 4420)], configfs="/nonexistent", dm=FakeDm())
    for name in (lio.target_iqn, nvmet.volume_nqn, lio.backstore_name):
        try:
            assert name(a) != name(b), f"{a!r} and {b!r} both map to {name(a)}"
        except names.InvalidName:
            pass


# --- targets over a fake configfs tree -----------------------------------------------------
@pytest.fixture(params=["iscsi", "nvmet_tcp"])
def kit(request, tmp_path, monkeypatch):
    root = fake_kernel(monkeypatch, tmp_path / "configfs")
    if request.param == "iscsi":
        target = LioTarget([Portal("127.0.0.1", 3260)], configfs=root)
        target.export = lambda vol, dev: fake_lio_export(root, target, vol, dev)
        target.unexport = lambda vol: fake_lio_unexport(root, target, vol)
        good = credentials.random_chap("h1")
        host = "iqn.2026-11.io.test:h1"
    else:
        target = NvmetTarget([Portal("127.0.0.1", 4420)], configfs=root, dm=FakeDm())
        good = credentials.random_dhchap()
        host = "nqn.2014-08.org.nvmexpress:uuid:00000001-0000-4000-8000-000000000000"
    target.export(VOL, DEV)
    target.admit(VOL, host, "rw", good)  # the ports and shared folders exist from here on
    target.revoke(VOL, host)
    return target, root, good


def hostile_credentials():
    text = st.one_of(st.none(), text_input())
    return st.one_of(
        st.just(None),  # the kit's own valid credentials
        st.builds(Credentials, user=text, secret=text, mutual_user=text, mutual_secret=text),
        st.builds(Credentials,
                  dhchap_key=st.one_of(text, st.just(credentials.random_dhchap_secret())),
                  dhchap_ctrl_key=text))


HOSTS = st.one_of(VALID_IQN, VALID_NQN, any_input())
VOLUMES = st.one_of(st.just(VOL), any_input())
MODES = st.one_of(st.sampled_from(["rw", "ro"]), any_input())
TARGET_OPS = st.sampled_from(["admit", "set_mode", "revoke", "connection", "actual", "export",
                              "unexport"])


@given(host=HOSTS, volume=VOLUMES, mode=MODES, creds=hostile_credentials(), op=TARGET_OPS)
@counted
def test_target_operations_refuse_hostile_names_and_change_nothing(kit, host, volume, mode,
                                                                   creds, op):
    target, root, good = kit
    creds = creds or good
    before = snapshot(root)
    call = {"admit": lambda: target.admit(volume, host, mode, creds),
            "set_mode": lambda: target.set_mode(volume, host, mode),
            "revoke": lambda: target.revoke(volume, host),
            "connection": lambda: target.connection(volume, host),
            "actual": lambda: target.actual(volume),
            "export": lambda: target.export(volume, DEV),
            "unexport": lambda: target.unexport(volume)}[op]
    try:
        call()
    except TARGET_ERRORS as e:
        assert snapshot(root) == before, f"refused {op} changed configfs"
        for secret in (creds.secret, creds.mutual_secret, creds.dhchap_key,
                       creds.dhchap_ctrl_key):
            given = f"{host!r} {volume!r} {mode!r} {host} {volume} {mode}"
            if secret and len(secret) >= 8 and secret not in given:
                assert secret not in str(e), "a secret in an error message"
        return
    inside(root)
    # accepted: undo, so the next input starts from the same tree
    if op in ("admit", "set_mode"):
        target.revoke(volume, host)
    if op in ("export", "unexport") and volume != VOL:
        target.unexport(volume)
    if op == "unexport" and volume == VOL:
        target.export(VOL, DEV)
    assert snapshot(root) == before


# --- the driver: connector dicts -----------------------------------------------------------
@pytest.fixture(params=["iscsi", "nvmet_tcp"])
def driver(request, tmp_path, monkeypatch):
    root = fake_kernel(monkeypatch, tmp_path / "configfs")
    drv = fake_driver(root, tmp_path / "state", request.param, "sb1")
    volume = {"id": VOL, "size": 1, "multiattach": True, "volume_attachment": [],
              "volume_type": {"extra_specs": {}}}
    drv.create_export(None, volume)
    warm = {"initiator": "iqn.2026-11.io.test:w", "nqn": "nqn.2026-11.io.test:w"}
    drv.initialize_connection(volume, warm)  # ports and shared folders exist from here on
    drv.terminate_connection(volume, warm)
    return drv, root, volume


@given(conn=st.one_of(connector(), json_value()))
@counted
def test_driver_connectors_admit_a_valid_host_or_change_nothing(driver, conn):
    drv, root, volume = driver
    state = root.parent / "state"
    before, state_before = snapshot(root), node_files(state)
    try:
        info = drv.initialize_connection(volume, conn)
    except TARGET_ERRORS:
        assert snapshot(root) == before and node_files(state) == state_before
        return
    inside(root)
    host = drv.host_id(conn)
    assert info["data"]["access_mode"] in ("rw", "ro")
    assert host in drv.target.actual(VOL)[VOL].hosts
    drv.terminate_connection(volume, conn)
    assert snapshot(root) == before


# --- the control plane: names, types, extra specs, connectors -------------------------------
CONF_TEXT = """[DEFAULT]
enabled_backends = lio, nvme
state_path = {state}
[roles]
users = root:admin
[lio]
volume_backend_name = lio
target_protocol = iscsi
[nvme]
volume_backend_name = nvme
target_protocol = nvmet_tcp
"""


@pytest.fixture
def plane(tmp_path, monkeypatch):
    root = fake_kernel(monkeypatch, tmp_path / "configfs")
    state = tmp_path / "state"
    path = tmp_path / "shareblock.conf"
    path.write_text(CONF_TEXT.format(state=state))
    monkeypatch.setenv("SHAREBLOCK_CONFIG", str(path))
    monkeypatch.setattr(config, "current_user", lambda: "root")
    drivers = {name: fake_driver(root, state, proto, name)
               for name, proto in (("lio", "iscsi"), ("nvme", "nvmet_tcp"))}
    monkeypatch.setattr(ControlPlane, "drivers", lambda self: drivers)
    cp = ControlPlane(config.load(str(path)), user="root")
    cp.type_create("multiattach")
    cp.type_key("multiattach", "set", {"multiattach": "<is> True", "volume_backend_name": "lio"})
    cp.type_create("plain")
    cp.type_key("plain", "set", {"volume_backend_name": "lio"})
    cp.type_create("ma-nvme")
    cp.type_key("ma-nvme", "set", {"multiattach": "<is> True", "volume_backend_name": "nvme"})
    cp.create(1, "multiattach", "shared")
    cp.create(1, "plain", "single")
    cp.create(1, "ma-nvme", "nv")
    cp.attachment_create("single", {"initiator": "iqn.2026-11.io.test:owner", "host": "o"})
    return cp, root, state


def everything(cp, root: Path, state: Path) -> tuple:
    """The whole state: every SQLite row, the configfs tree and the node's documents."""
    rows = {t: sorted(map(tuple, cp.db.query(f"SELECT * FROM {t}")))  # noqa: S608
            for t in ("volume_types", "volumes", "attachments", "events")}
    return rows, snapshot(root), node_files(state)


def refs(extra):
    return st.one_of(st.sampled_from(["shared", "single", "nv", "multiattach", "plain",
                                      "ma-nvme"]), extra)


def control_call():
    text = text_input()
    specs = st.dictionaries(st.one_of(text, st.sampled_from(["multiattach",
                                                              "shareblock:fs_guard"])),
                            st.one_of(text, st.sampled_from(["<is> True", "warn"])), max_size=3)
    size = st.one_of(st.integers(-2, 3), st.integers(), st.sampled_from([2 ** 63, 2 ** 70]),
                     any_input())
    conn = st.one_of(connector(), json_value())
    mode = st.one_of(st.sampled_from(["rw", "ro"]), any_input())
    return st.one_of(
        st.tuples(st.just("type_create"), any_input()),
        st.tuples(st.just("type_key"), refs(text), st.sampled_from(["set", "unset", "x"]), specs),
        st.tuples(st.just("create"), size, refs(text), st.one_of(st.none(), any_input())),
        st.tuples(st.just("attachment_create"), refs(text), conn, mode,
                  st.one_of(st.none(), text)),
        st.tuples(st.just("attachment_update"), text, conn),
        st.tuples(st.just("extend"), refs(text), size),
        st.tuples(st.just("retype"), refs(text), refs(text)),
        st.tuples(st.just("show"), text),
    )


@given(call=control_call())
@example(call=("create", 2 ** 70, "plain", None))  # too big for SQLite: a clear refusal
@example(call=("extend", "nv", 2 ** 63))
@example(call=("attachment_create", "shared", {"initiator": "iqn.2026-11.io.test:a"}, "rw",
               None))
@counted
def test_control_plane_refuses_hostile_input_and_changes_nothing(plane, call):
    cp, root, state = plane
    before = everything(cp, root, state)
    try:
        getattr(cp, call[0])(*call[1:])
    except CONTROL_ERRORS:
        event(f"{call[0]} refused")
        assert everything(cp, root, state) == before, f"refused {call[0]} changed state"
        return
    event(f"{call[0]} accepted")
    inside(root)


# --- the CLI's JSON inputs ------------------------------------------------------------------
def connector_text():
    return st.one_of(st.text(max_size=60), json_value().map(json.dumps),
                     connector().map(json.dumps),
                     st.sampled_from(["{", "[]", "null", "1e999", '{"initiator": NaN}',
                                      "[" * 5000, '{"initiator": "iqn.2026-11.io.test:h1"}']))


@given(text=connector_text(), volume=refs(text_input()), mode=st.sampled_from(["rw", "ro"]))
@example(text='{"initiator": "iqn.2026-11.io.test:h1", "host": "h1"}', volume="shared",
         mode="rw")  # admitted: its output must still hold no secret
@counted
def test_cli_connector_json_is_refused_in_one_line_or_admits(plane, text, volume, mode):
    cp, root, state = plane
    before = everything(cp, root, state)
    # after `--`: a volume named like an option (`--help`) is still the volume
    rc, out, err = cli.run_captured(["--json", "attachment-create", "--connect", "true",
                                     f"--connector={text}", f"--mode={mode}", "--", volume])
    event("admitted" if rc == 0 else "refused")  # --hypothesis-show-statistics
    if rc == 0:
        shown = json.loads(out)
        assert shown["connector"] == json.loads(text)
        secrets = node_secrets(state)  # no --show-secrets: no secret printed
        assert secrets and not [v for v in secrets if v in out], \
            "a secret printed without --show-secrets"
        return
    assert "Traceback" not in err and out == ""
    assert err.startswith("shareblock: error:") or err.startswith("usage:")
    assert everything(cp, root, state) == before


# --- the SSH paths: argv lists and shell quoting ---------------------------------------------
class FakeChannel:
    def __init__(self, status=0):
        self.status = status

    def recv_exit_status(self):
        return self.status

    def shutdown_write(self):
        pass


class FakeStream(io.BytesIO):
    def __init__(self, data=b"", status=0):
        super().__init__(data)
        self.channel = FakeChannel(status)


class FakeSsh:
    """paramiko's SSHClient as the SSH paths use it; `answer(line, stdin)` replies."""

    def __init__(self, answer=lambda line, stdin: b"{}"):
        self.lines, self.answer = [], answer

    def exec_command(self, line, timeout=None):
        self.lines.append(line)
        client = self

        class Stdin(FakeStream):
            def __init__(self):
                super().__init__()
                self.text = ""

            def write(self, data):
                self.text += data

        stdin = Stdin()

        class Stdout(FakeStream):
            def read(self, *args):
                return client.answer(line, stdin.text)

            def readline(self, *args):  # a session: the request written since the last line
                request, stdin.text = stdin.text, ""
                return client.answer(line, request) + b"\n"

        return stdin, Stdout(), FakeStream()

    def close(self):
        pass


PARSER = cli.build_parser()


def remote_args(line: str, base: list[str]):
    """What the storage node's `shareblock` makes of the command line."""
    argv = shlex.split(line)
    assert argv[:len(base)] == base
    return PARSER.parse_args(argv[len(base):])


@given(volume=st.one_of(text_input(), st.text(min_size=1)), conn=connector(),
       mode=st.sampled_from(["rw", "ro"]), att=text_input())
@counted
def test_host_ssh_control_quotes_every_argument(monkeypatch, volume, conn, mode, att):
    assume("\x00" not in volume + att)  # no command line carries NUL
    fake = FakeSsh()
    monkeypatch.setattr(host_control.ssh, "connect", lambda *a, **k: fake)
    monkeypatch.delenv("SHAREBLOCK_REMOTE_COMMAND", raising=False)
    control = host_control.SshControl("ssh://root@node", config_file="/etc/sb $(x).conf")
    base = ["shareblock", "--config=/etc/sb $(x).conf"]
    control.attachment_create(volume, conn, mode)
    control.show(volume)
    control.attachment_complete(att)
    control.attachment_delete(att)
    create, show, complete, delete = (remote_args(line, base) for line in fake.lines)
    assert (create.command, create.volume, json.loads(create.connector), create.mode) == (
        "attachment-create", volume, conn, mode)
    assert (show.command, show.volume) == ("show", volume)
    assert complete.attachment == att and delete.attachments == [att]
    for args in (create, show, complete, delete):
        assert args.json and args.show_secrets and args.control is None


LOCAL_ONLY = ["--control", "--known-hosts", "--ssh-key"]


@given(tail=st.lists(st.one_of(text_input(), st.sampled_from(LOCAL_ONLY)), min_size=1,
                    max_size=4),
       command=st.sampled_from(["delete", "attachment-delete"]))
@counted
def test_cli_remote_passes_the_command_verbatim_and_keeps_local_options(monkeypatch, tail,
                                                                       command):
    assume(all("\x00" not in a for a in tail))
    tail = ["--", *tail]  # after --, even "--control" is a volume name
    argv = ["--control", "ssh://root@node", "--known-hosts=/k", "--ssh-key", "/key", "--json",
            command, *tail]
    local = PARSER.parse_args(argv)
    fake = FakeSsh()
    monkeypatch.setattr(cli_remote.ssh, "connect", lambda *a, **k: fake)
    monkeypatch.delenv("SHAREBLOCK_REMOTE_COMMAND", raising=False)
    assert cli_remote.run(local.control, argv, None, None) == 0
    remote = remote_args(fake.lines[0], ["shareblock"])
    assert remote.control is None and remote.known_hosts is None and remote.ssh_key is None
    assert vars(remote) == {**vars(local), "control": None, "known_hosts": None,
                            "ssh_key": None}


@pytest.fixture(params=["iscsi", "nvmet_tcp"])
def remote_kit(request, tmp_path, monkeypatch):
    """A RemoteTarget whose SSH reaches the real agent code over a fake configfs tree."""
    protocol = request.param
    root = fake_kernel(monkeypatch, tmp_path / "configfs")
    portals = [Portal("127.0.0.1", 3260 if protocol == "iscsi" else 4420)]

    monkeypatch.setenv("SHAREBLOCK_NODE_DIR", str(tmp_path / "node"))

    def local_target(proto, portals, prefix=None, state_dir=None):
        if proto not in ("iscsi", "nvmet_tcp"):
            return factory_mod.local_target(proto, portals, prefix)
        kernel = fake_kernel_target(root, proto, portals, prefix)
        return RecordedTarget(kernel, DesiredStore(state_dir)) if state_dir else kernel

    monkeypatch.setattr(agent, "local_target", local_target)
    kit = local_target(protocol, portals)
    kit.export(VOL, DEV)
    creds = credentials.random_chap("h") if protocol == "iscsi" else credentials.random_dhchap()
    warm = "iqn.2026-11.io.test:w" if protocol == "iscsi" else "nqn.2026-11.io.test:w"
    kit.admit(VOL, warm, "rw", creds)  # ports and shared folders exist from here on
    kit.revoke(VOL, warm)
    session = {}  # the agent's targets, kept across requests as in one SSH session
    fake = FakeSsh(lambda line, stdin: json.dumps(agent.answer(stdin, session)).encode())
    monkeypatch.setattr("shareblock.targets.ssh.connect", lambda *a, **k: fake)
    target = RemoteTarget("ssh://root@node", protocol, portals, kit.prefix,
                          agent_command="shareblock-target-agent")
    return target, root, creds, fake


AGENT_REQUESTS = st.one_of(
    json_value(),
    st.fixed_dictionaries({
        "op": st.one_of(st.sampled_from(sorted(agent.OPS)), any_input()),
        "protocol": st.sampled_from(["iscsi", "nvmet_tcp", "fc"]),
        "portals": st.one_of(st.just([{"address": "127.0.0.1", "port": 3260}]),
                             st.just([{"address": "127.0.0.1", "port": 4420}]), json_value()),
        "prefix": st.one_of(st.none(), text_input()),
        "args": st.one_of(json_value(), st.fixed_dictionaries(
            {"volume_id": st.one_of(st.just(VOL), text_input()),
             "host": st.one_of(VALID_IQN, VALID_NQN, text_input()),
             "mode": st.sampled_from(["rw", "ro", "x"])}))}))


@given(host=HOSTS, volume=VOLUMES, mode=MODES, req=AGENT_REQUESTS)
@counted
def test_remote_target_sends_json_on_stdin_and_the_agent_refuses_cleanly(remote_kit, host,
                                                                        volume, mode, req):
    """RemoteTarget -> JSON on stdin -> the agent -> a target on a fake configfs tree."""
    target, root, creds, fake = remote_kit
    before = snapshot(root)
    try:
        target.admit(volume, host, mode, creds)
    except TARGET_ERRORS:
        assert snapshot(root) == before
    else:
        inside(root)
        target.revoke(volume, host)
        assert snapshot(root) == before
    assert fake.lines and set(fake.lines) == {"shareblock-target-agent"}, \
        "names and secrets travel on stdin, never on the command line"

    # the agent on its own: any JSON request gets a JSON answer, refusals change nothing
    if isinstance(req, dict) and req.get("op") == "probe":
        return  # probe reads a device; it writes nothing
    before = snapshot(root)
    stdin, stdout = io.StringIO(json.dumps(req)), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stdin", stdin)
        mp.setattr("sys.stdout", stdout)
        status = agent.main([])
    reply = json.loads(stdout.getvalue())
    assert reply["ok"] is (status == 0)
    if not reply["ok"]:
        assert reply["error"] in ("InvalidName", "TargetError", "NotFound", "KeyError",
                                  "TypeError", "ValueError") and reply["message"]
        assert snapshot(root) == before, "a refused request changed configfs"


# --- no shell, anywhere ----------------------------------------------------------------------
def package_files():
    for folder in PACKAGE_DIRS:
        yield from sorted((REPO / folder).rglob("*.py"))


def is_string(node) -> bool:
    """A command given as a string (a shell would be needed to split it)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp):  # "cmd " + x, "cmd %s" % x; list + list is fine
        return isinstance(node.op, ast.Mod) or is_string(node.left) or is_string(node.right)
    return False


def test_no_shell_anywhere_in_the_package():
    """No shell=True, os.system or os.popen; every subprocess gets an argv list; SSH
    command lines are built by shlex.join or are a fixed command."""
    found = []
    for path in package_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = ast.unparse(node.func)
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if any(k.arg == "shell" for k in node.keywords):
                found.append(f"{where} passes shell=")
            if func in ("os.system", "os.popen", "subprocess.getoutput",
                        "subprocess.getstatusoutput"):
                found.append(f"{where} calls {func}")
            if func.startswith("subprocess.") and node.args and is_string(node.args[0]):
                found.append(f"{where} gives {func} a string, not an argv list")
            if func.endswith("exec_command"):
                arg = ast.unparse(node.args[0])
                if arg not in ("line", "self.agent_command"):
                    found.append(f"{where} exec_command({arg})")
    assert not found, found
    assert list(package_files()), "the package folders moved"


def test_ssh_command_lines_are_built_with_shlex_join():
    """The two `line`s exec_command runs are shlex.join of an argv list."""
    for rel in ("cli/remote.py", "host/control.py"):
        tree = ast.parse((REPO / rel).read_text())
        assigns = [ast.unparse(n.value) for n in ast.walk(tree)
                   if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "line"]
        assert assigns and all(a.startswith("shlex.join(") for a in assigns), (rel, assigns)


def test_configfs_node_refuses_every_escape():
    root = Node("/sys/kernel/config/nvmet")
    for bad in ("", ".", "..", "a/b", "../x", "/"):
        with pytest.raises(ConfigfsError):
            root / bad
    with pytest.raises(ConfigfsError):
        Node("/sys/kernel/config/nvmet/../target", Path("/sys/kernel/config/nvmet"))
