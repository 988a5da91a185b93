"""Serve the public app: take or choose a photo, learn which fruit it is within seconds.

  fruits app [--host 127.0.0.1] [--port 8000]

The app lands each photo where the stream reads (`--source`: a local landing folder, or
s3://BUCKET/PREFIX/ where the browser posts it with a presigned POST) and shows the answer the
stream writes to the answers store (`--answers`); /ops shows the stream's numbers over the last
hour. Run `fruits stream` on the same settings beside it. On S3 (the public deployment) the app
needs FRUITS_APP_SECRET (the key that signs its CSRF tokens); locally it makes one in the state dir.
Needs the `app` extra (pip install 'fruits[app]').
"""

from __future__ import annotations

import argparse
import signal
import socket

from cli.console import add_state_dir_flag, settings_from_args
from fruits.exceptions import FruitsError
from fruits.settings import default_location


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 behind a proxy)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument(
        "--forwarded-allow-ips",
        metavar="IPS",
        help="trust X-Forwarded-For/-Proto from these proxy addresses (comma-separated), so rate "
        "limits count the real client (default: none; the peer is the client)",
    )
    parser.add_argument(
        "--source",
        metavar="URI",
        help=f"where uploads land: the stream's --source (default {default_location('source')})",
    )
    parser.add_argument(
        "--answers",
        metavar="URI",
        help="the answers store the stream writes: sqlite:///PATH.db or dynamodb://TABLE (default <state>/answers.db)",
    )
    parser.add_argument("--checkpoint", metavar="URI", help="the stream's checkpoint, where /ops reads its progress")
    parser.add_argument(
        "--tracking-uri",
        dest="mlflow_tracking_uri",
        metavar="URI",
        help="MLflow registry: the model versions' known maps (default sqlite in the state dir)",
    )
    parser.add_argument("--endpoint-url", dest="s3_endpoint_url", metavar="URL", help="S3-compatible endpoint")
    add_state_dir_flag(parser)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise FruitsError(f"--port must be between 1 and 65535, got {args.port}")
    settings = settings_from_args(args)
    try:
        from app.main import create_app
        from app.serve import server
    except ImportError as exc:
        raise FruitsError(f"the app needs the `app` extra (pip install 'fruits[app]'): {exc}") from None
    check_can_listen(args.host, args.port)
    app = create_app(settings)
    print(f"Fruits! app on http://{args.host}:{args.port}/ (the team's numbers: /ops). Ctrl-C stops it.", flush=True)
    # uvicorn stops gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler it found: a
    # no-op here, so a stop asked for is a clean exit (0), as for `fruits stream`.
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, lambda *_: None)
    server(app, args.host, args.port, args.forwarded_allow_ips).run()
    return 0


def check_can_listen(host: str, port: int) -> None:
    """A one-line error now rather than uvicorn's log lines and exit later."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise FruitsError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise FruitsError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
