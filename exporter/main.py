"""`shareblock-exporter`: shareblock's state as Prometheus metrics, over HTTP.

It opens the control plane in-process as the CLI does (`--config`), so its
backends are reached as the CLI reaches them: locally, or on a storage node over
SSH through the target agent. Each scrape reads the state anew (metrics.py).
"""
import argparse
import ipaddress
import logging
import signal
import sys
import threading

from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from shareblock.control import config
from shareblock.control.api import ControlPlane
from shareblock.exporter.metrics import ShareblockCollector

DEFAULT_LISTEN = "127.0.0.1:9740"


def parse_listen(text: str) -> tuple[str, int]:
    """ADDR:PORT, [IPv6]:PORT, or :PORT (every address)."""
    addr, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"--listen {text!r}: ADDR:PORT, e.g. {DEFAULT_LISTEN}")
    addr = addr.strip("[]") or "0.0.0.0"
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--listen {text!r}: {addr!r} is not an IP "
                                         "address") from None
    return addr, int(port)


def registry_for(plane) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ShareblockCollector(plane))
    return registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shareblock-exporter", description=__doc__
                                     .split("\n")[0].strip("`").split("`: ")[-1])
    parser.add_argument("--listen", type=parse_listen, default=DEFAULT_LISTEN,
                        metavar="ADDR:PORT", help=f"where to serve /metrics "
                        f"(default {DEFAULT_LISTEN})")
    parser.add_argument("--config", help="shareblock.conf (default $SHAREBLOCK_CONFIG or "
                                         "/etc/shareblock/shareblock.conf)")
    parser.add_argument("--once", action="store_true",
                        help="print one scrape on stdout and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        plane = ControlPlane(config.load(args.config))
    except Exception as e:
        print(f"shareblock-exporter: error: {e}", file=sys.stderr)
        return 2
    registry = registry_for(plane)
    if args.once:
        sys.stdout.write(generate_latest(registry).decode())
        return 0
    addr, port = args.listen
    try:
        server, _ = start_http_server(port, addr=addr, registry=registry)
    except OSError as e:
        print(f"shareblock-exporter: error: cannot listen on {addr}:{port}: {e.strerror}",
              file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
