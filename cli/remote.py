"""`shareblock --control ssh://user@node ...`: the same command on a storage node.

The arguments travel as one shell-quoted command line (shlex), so nothing in
them is interpreted by the remote shell; the caller's identity there is the
SSH user, mapped to roles by the node's configuration.
"""
import os
import shlex
import sys

from shareblock.targets import ssh

STRIP_WITH_VALUE = ("--control", "--known-hosts", "--ssh-key")
KEEP_WITH_VALUE = ("--config",)


def remote_argv(argv: list[str]) -> list[str]:
    """The command line without the options that only mean something here.

    They may come before or after the command (cinderclient's habit), so they
    are taken out wherever they stand, up to a `--`: everything after it is
    passed as it is (a volume named `--control` after `--` stays a name).
    """
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--":
            return out + argv[i:]
        if arg in STRIP_WITH_VALUE:
            skip = True
            continue
        if any(arg.startswith(opt + "=") for opt in STRIP_WITH_VALUE):
            continue
        out.append(arg)
        if arg in KEEP_WITH_VALUE:  # its value may look like an option: keep both
            out += argv[i + 1:i + 2]
            skip = True
    return out


def run(url: str, argv: list[str], known_hosts: str | None, key: str | None) -> int:
    command = os.environ.get("SHAREBLOCK_REMOTE_COMMAND", "shareblock")
    line = shlex.join([*shlex.split(command), *remote_argv(argv)])
    try:
        client = ssh.connect(url, known_hosts or os.environ.get("SHAREBLOCK_KNOWN_HOSTS"),
                             key or os.environ.get("SHAREBLOCK_SSH_KEY"))
    except Exception as e:
        print(f"shareblock: error: {e}", file=sys.stderr)
        return 1
    try:
        _, stdout, stderr = client.exec_command(line)
        out = stdout.read()
        err = stderr.read()
        status = stdout.channel.recv_exit_status()
    finally:
        client.close()
    sys.stdout.write(out.decode(errors="replace"))
    sys.stderr.write(err.decode(errors="replace"))
    return status
