"""`fence_shareblock`: a Pacemaker fence agent that fences at the storage target.

Fabric fencing, as the fence agents' API names "disabling access at the SAN
itself from a given initiator": `off` cuts the node's hosts off at shareblock's
target (LIO ACLs, nvmet subsystems: live sessions end, no new login), `on`
readmits them; no `reboot`. The node is `plug` (or `port`, or `nodename`), as
the control plane knows it from its connectors' `host`.

Options come on stdin as `key=value` lines when the agent runs without
arguments (Pacemaker's way), else from the command line. Exit codes: 0 success,
1 failure, and `status` 2 when the node is fenced (off). The agent drives the
`shareblock` command: in-process on the storage node, or over SSH with
`control=ssh://user@node` (its host key known).
"""
import argparse
import json
import re
import sys
import time

from shareblock.cli import main as cli

ACTIONS = ("on", "off", "status", "list", "list-status", "monitor", "metadata", "manpage",
           "validate-all")
ALIASES = {"meta-data": "metadata", "enable": "on", "disable": "off"}
DEFAULT_CONFIG = "/etc/shareblock/shareblock.conf"
# stdin keys (either spelling of `-` and `_`) and what they set
KEYS = {"action": "action", "option": "action", "plug": "plug", "port": "plug",
        "nodename": "nodename", "config": "config", "control": "control",
        "known_hosts": "known_hosts", "ssh_key": "ssh_key", "volumes": "volumes",
        "verbose": "verbose", "delay": "delay"}

METADATA = """<?xml version="1.0" ?>
<resource-agent name="fence_shareblock"
 shortdesc="Fence agent for shareblock storage targets (fabric fencing)" >
<longdesc>fence_shareblock is a fabric fencing agent for volumes shared through
shareblock (LIO iSCSI, nvmet NVMe/TCP). The "off" action cuts the node's hosts off
at the storage target: their ACLs or subsystems go, which ends their sessions, and
no login of theirs is admitted until "on" readmits them with their modes and
credentials. It holds across a target reboot. It never power-cycles a node, so it
has no "reboot" action.</longdesc>
<vendor-url></vendor-url>
<parameters>
	<parameter name="action" unique="0" required="1">
		<getopt mixed="-o, --action=[action]" />
		<content type="string" default="off"  />
		<shortdesc lang="en">Fencing action</shortdesc>
	</parameter>
	<parameter name="plug" unique="0" required="1" obsoletes="port">
		<getopt mixed="-n, --plug=[nodename]" />
		<content type="string"  />
		<shortdesc lang="en">Name of the node to fence or unfence (its connectors' host)</shortdesc>
	</parameter>
	<parameter name="port" unique="0" required="1" deprecated="1">
		<getopt mixed="-n, --plug=[nodename]" />
		<content type="string"  />
		<shortdesc lang="en">Name of the node to fence or unfence (its connectors' host)</shortdesc>
	</parameter>
	<parameter name="config" unique="0" required="0">
		<getopt mixed="--config=[path]" />
		<content type="string" default="/etc/shareblock/shareblock.conf"  />
		<shortdesc lang="en">shareblock.conf of the control plane</shortdesc>
	</parameter>
	<parameter name="control" unique="0" required="0">
		<getopt mixed="--control=[ssh://user@node]" />
		<content type="string"  />
		<shortdesc lang="en">The storage node over SSH (default: this node)</shortdesc>
	</parameter>
	<parameter name="known_hosts" unique="0" required="0">
		<getopt mixed="--known-hosts=[path]" />
		<content type="string"  />
		<shortdesc lang="en">known_hosts holding the storage node's host key</shortdesc>
	</parameter>
	<parameter name="ssh_key" unique="0" required="0">
		<getopt mixed="--ssh-key=[path]" />
		<content type="string"  />
		<shortdesc lang="en">Private key for the SSH login</shortdesc>
	</parameter>
	<parameter name="volumes" unique="0" required="0">
		<getopt mixed="--volumes=[v1,v2]" />
		<content type="string"  />
		<shortdesc lang="en">Fence from these volumes only (default: all)</shortdesc>
	</parameter>
	<parameter name="verbose" unique="0" required="0">
		<getopt mixed="-v, --verbose" />
		<content type="boolean"  />
		<shortdesc lang="en">Verbose mode</shortdesc>
	</parameter>
	<parameter name="delay" unique="0" required="0">
		<getopt mixed="--delay=[seconds]" />
		<content type="second" default="0"  />
		<shortdesc lang="en">Wait X seconds before fencing is started</shortdesc>
	</parameter>
</parameters>
<actions>
	<action name="on" automatic="1"/>
	<action name="off" />
	<action name="status" />
	<action name="list" />
	<action name="list-status" />
	<action name="monitor" />
	<action name="metadata" />
	<action name="manpage" />
	<action name="validate-all" />
</actions>
</resource-agent>"""


class Failed(Exception):
    """The action failed: exit 1, the message on stderr."""


def parse_stdin(text: str) -> dict:
    """`key=value` lines; `#` lines and blanks skipped; the last value wins;
    unknown keys ignored with a warning (the fence agents' API)."""
    opts = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        value = re.sub(r'^"(.*)"$', r"\1", value)
        name = KEYS.get(key.strip().replace("-", "_"))
        if name is None:
            # the key only: an unknown option's value may be a secret
            print(f"WARNING: Parse error: Ignoring unknown option '{key.strip()}'",
                  file=sys.stderr)
            continue
        opts[name] = value
    return opts


def parse_argv(argv: list[str]) -> dict:
    p = argparse.ArgumentParser(prog="fence_shareblock", allow_abbrev=False,
                                description="Fence a node at the shareblock storage target.")
    p.add_argument("-o", "--action")
    p.add_argument("-n", "--plug")
    p.add_argument("--config")
    p.add_argument("--control")
    p.add_argument("--known-hosts", dest="known_hosts")
    p.add_argument("--ssh-key", dest="ssh_key")
    p.add_argument("--volumes")
    p.add_argument("-v", "--verbose", action="store_const", const="1")
    p.add_argument("--delay")
    p.add_argument("-V", "--version", action="version", version="fence_shareblock "
                   f"{cli.package_version()}")
    return {k: v for k, v in vars(p.parse_args(argv)).items() if v is not None}


def shareblock(opts: dict, *args) -> dict | list:
    """One `shareblock` command, its JSON answer; a failure raises Failed."""
    argv = ["--json"]
    if opts.get("config") or not opts.get("control"):  # over SSH: the node's own, unless given
        argv += ["--config", opts.get("config") or DEFAULT_CONFIG]
    for key, flag in (("control", "--control"), ("known_hosts", "--known-hosts"),
                      ("ssh_key", "--ssh-key")):
        if opts.get(key):
            argv += [flag, opts[key]]
    rc, out, err = cli.run_captured([*argv, *args])
    if opts.get("verbose") in ("1", "yes", "on", "true"):
        print(f"shareblock {' '.join(args)}: exit {rc}", file=sys.stderr)
    if rc != 0:
        raise Failed(err.strip().removeprefix("shareblock: error: ") or f"exit {rc}")
    return json.loads(out) if out.strip() else {}


def node_of(opts: dict) -> str:
    node = opts.get("plug") or opts.get("nodename")
    if not node:
        raise Failed("You have to enter plug number or machine identification")
    return node


def run(opts: dict) -> int:
    action = opts.get("action", "off").lower()
    action = ALIASES.get(action, action)
    if action not in ACTIONS:
        raise Failed(f"Unrecognised action '{action}'")
    if action in ("metadata", "manpage"):
        print(METADATA)
        return 0
    if action == "validate-all":  # Pacemaker sends a dummy plug: the options only
        if opts.get("delay") and not opts["delay"].isdigit():
            raise Failed(f"delay {opts['delay']!r} is not a number of seconds")
        if not opts.get("control"):
            try:
                with open(opts.get("config") or DEFAULT_CONFIG):
                    pass
            except OSError as e:
                raise Failed(f"validate-all failed: config: {e}") from e
        return 0
    if action in ("off", "on") and opts.get("delay"):
        time.sleep(float(opts["delay"]))
    if action == "monitor":
        shareblock(opts, "fence-list")
        return 0
    if action in ("list", "list-status"):
        for node in shareblock(opts, "fence-list"):
            tail = f",{node['status']}" if action == "list-status" else ""
            print(f"{node['node']},{tail}")
        return 0
    node = node_of(opts)
    if action == "status":
        state = shareblock(opts, "fence-status", node)["status"]
        print(f"Status: {state.upper()}")
        return 0 if state == "on" else 2
    volumes = [v for v in (opts.get("volumes") or "").split(",") if v.strip()]
    if action == "off":
        done = shareblock(opts, "fence", node, *[f"--volume={v.strip()}" for v in volumes])
        if done["status"] != "off":  # verified from configfs, not assumed
            raise Failed(f"the target still admits the node: {done['admitted']}")
        print("Success: Already OFF" if done.get("previous_status") == "off"
              else "Success: Powered OFF")
        return 0
    done = shareblock(opts, "unfence", node)
    if done["status"] != "on":
        raise Failed(f"the node is still fenced: {done}")
    print("Success: Powered ON")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = parse_argv(argv) if argv else parse_stdin(sys.stdin.read())
        return run(opts)
    except Failed as e:
        print(f"ERROR: Failed: {e}", file=sys.stderr)  # Pacemaker reads stderr
        return 1


if __name__ == "__main__":
    sys.exit(main())
