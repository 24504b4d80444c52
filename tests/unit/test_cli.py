"""The CLI: commands, --json contract, one-line errors and exit codes, masking."""
import json
import shlex

import pytest

from shareblock.cli import main as cli
from shareblock.cli import output, remote
from tests.unit.test_control import cli_plane, env  # noqa: F401  (fixtures)


@pytest.fixture
def conf(tmp_path, monkeypatch):
    path = tmp_path / "shareblock.conf"
    path.write_text(f"[DEFAULT]\nenabled_backends = lio\nstate_path = {tmp_path}/state\n"
                    "[lio]\ntarget_protocol = iscsi\nvolume_backend_name = lio\n"
                    f"shareblock_pool = file:{tmp_path}/vols\n")
    monkeypatch.setenv("SHAREBLOCK_CONFIG", str(path))
    monkeypatch.setattr("shareblock.control.config.current_user", lambda: "root")
    return path


def sb(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_type_commands_as_cinderclient(conf, capsys):
    rc, out, _ = sb(capsys, "--json", "type-create", "multiattach")
    assert rc == 0 and json.loads(out)["name"] == "multiattach"
    rc, out, _ = sb(capsys, "--json", "type-key", "multiattach", "set",
                    "multiattach=<is> True", "shareblock:fs_guard=warn")
    assert json.loads(out)["extra_specs"] == {"multiattach": "<is> True",
                                              "shareblock:fs_guard": "warn"}
    rc, out, _ = sb(capsys, "extra-specs-list")
    assert rc == 0 and "<is> True" in out and out.startswith("+")
    rc, out, _ = sb(capsys, "--json", "type-key", "multiattach", "unset", "shareblock:fs_guard")
    assert json.loads(out)["extra_specs"] == {"multiattach": "<is> True"}


@pytest.mark.parametrize("argv,code,text", [
    (["show", "nope"], 3, "not found"),
    (["type-create", "../etc"], 2, "volume type name"),
    (["attachment-create", "x", "--connector", "{not json"], 2, "not JSON"),
    (["attachment-create", "x", "--connect", "true"], 2, "needs --connector"),
    (["type-key", "t", "set", "novalue"], 2, "key=value"),
])
def test_errors_are_one_line_with_exit_codes(conf, capsys, argv, code, text):
    rc, out, err = sb(capsys, *argv)
    assert rc == code and text in err and len(err.strip().splitlines()) == 1 and out == ""


def test_missing_config_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SHAREBLOCK_CONFIG", str(tmp_path / "missing.conf"))
    rc, _, err = sb(capsys, "list")
    assert rc == 1 and "no configuration" in err


def test_policy_refusal_exit_code(conf, capsys, monkeypatch):
    monkeypatch.setattr("shareblock.control.config.current_user", lambda: "mallory")
    rc, _, err = sb(capsys, "type-create", "x")
    assert rc == 5 and "policy does not allow" in err


def test_secrets_are_masked_unless_asked():
    info = {"connection_info": {"data": {"auth_password": "s3cret", "target_iqn": "iqn.x",
                                         "dhchap_secret": "DHHC-1:00:abc:"}}}
    masked = output.mask(info)
    assert "s3cret" not in json.dumps(masked) and "DHHC" not in json.dumps(masked)
    assert masked["connection_info"]["data"]["target_iqn"] == "iqn.x"
    assert output.mask(info, show_secrets=True) == info


def test_connector_flags():
    args = cli.build_parser().parse_args(["attachment-create", "v", "--initiator",
                                          "iqn.2026-11.io.x:h", "--host", "h1"])
    assert cli.connector_from(args) == {"initiator": "iqn.2026-11.io.x:h", "host": "h1"}
    args = cli.build_parser().parse_args(["attachment-create", "v", "--connector",
                                          '{"nqn": "nqn.2026-11.io.x:h"}'])
    assert cli.connector_from(args) == {"nqn": "nqn.2026-11.io.x:h"}


def test_remote_command_line_is_quoted_and_drops_local_options():
    argv = ["--control", "ssh://root@n", "--known-hosts=/k", "--json", "create", "1",
            "--name", "a; rm -rf / $(reboot)", "--volume-type", "t"]
    line = shlex.join(["shareblock", *remote.remote_argv(argv)])
    assert shlex.split(line) == ["shareblock", "--json", "create", "1", "--name",
                                 "a; rm -rf / $(reboot)", "--volume-type", "t"]


def test_local_options_after_the_command_stay_local_up_to_a_double_dash():
    argv = ["show", "v", "--json", "--control", "ssh://root@n", "--ssh-key", "/k",
            "--config", "--control", "--", "--control"]
    assert remote.remote_argv(argv) == ["show", "v", "--json", "--config", "--control",
                                        "--", "--control"]
    args = cli.build_parser().parse_args(["--config", "/a", "show", "v", "--json"])
    assert (args.config, args.json, args.debug) == ("/a", True, False)
    args = cli.build_parser().parse_args(["show", "v", "--config", "/b"])
    assert (args.config, args.json) == ("/b", False)


def test_attachments_read_as_a_person_reads_them():
    atts = [{"attachment_id": "a1b2c3d4e5", "host_name": "host-a", "attach_mode": "rw",
             "attach_status": "attached"},
            {"attachment_id": "f6e5d4c3b2", "host_name": None, "attach_mode": "ro",
             "attach_status": "attaching"}]
    assert output.cell(atts) == "host-a rw attached, f6e5d4c3 ro attaching"


def test_events_since_a_time_or_an_age_and_tables_in_local_time(cli_plane, capsys,  # noqa: F811
                                                                 monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Berlin")
    import time
    time.tzset()
    try:
        cli_plane.reconcile()  # one event, now
        old = "2020-01-01T10:00:00.000000"
        with cli_plane.db.transaction() as db:
            db.execute("INSERT INTO events (at, action, detail) VALUES (?, 'fenced', 'x')",
                       (old,))
        rc, out, _ = sb(capsys, "--json", "events", "--since", "1h")
        assert rc == 0 and [e["action"] for e in json.loads(out)] == ["reconciled"]
        rc, out, _ = sb(capsys, "events", "--json", "--since", "2020-01-01 11:00")
        assert [e["action"] for e in json.loads(out)] == ["reconciled", "fenced"], \
            "a time without a zone is local: 11:00 in Berlin is 10:00 UTC"
        rc, out, _ = sb(capsys, "events", "--since", "2020-01-01 11:00:01")
        assert "fenced" not in out
        rc, out, _ = sb(capsys, "events")
        assert "2020-01-01 11:00:00 CET" in out, "tables show local time with its zone"
        rc, out, _ = sb(capsys, "--json", "events")
        assert old in out, "JSON keeps the log's UTC time"
        with pytest.raises(SystemExit) as bad:
            cli.main(["events", "--since", "last tuesday"])
        assert bad.value.code == 2 and "an age (30m, 2h, 1d)" in capsys.readouterr().err
        with pytest.raises(Exception, match="UTC time"):
            cli_plane.events(since="yesterday")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
