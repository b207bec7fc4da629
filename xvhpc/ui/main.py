"""``xvhpc ui [RUNS_DIR]``: serve the dashboard on 127.0.0.1 with a random access token (the
address to open is printed, as Jupyter does), or on a Unix socket (mode 0600: only you can
connect, no token needed). ``--root-path`` serves it under a proxy's prefix (Open OnDemand:
``/node/<host>/<port>``)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from pathlib import Path

from ..util import at_least
from .security import PREFIX, new_token


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs_dir", nargs="?", default=".", help="folder of run directories")
    p.add_argument("--data-root", help="folder whose data folders the new-run form offers "
                   "(default: RUNS_DIR)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost)")
    p.add_argument("--port", type=at_least(0, 65535), default=0, help="0: a free port")
    p.add_argument("--socket", help="serve on this Unix socket (mode 0600) instead of TCP")
    p.add_argument("--root-path", default="", help="path prefix of a reverse proxy")
    p.add_argument(
        "--poll-seconds",
        type=at_least(1),
        default=15,
        help="ask the scheduler about a run at most this often, however many pages poll",
    )


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def private_socket(path: Path) -> socket.socket:
    """A listening Unix socket only its owner may connect to (made here, mode 0600 before it
    listens: uvicorn's own ``uds`` makes it 0666). A stale socket is replaced, a file is not."""
    if path.is_symlink() or (path.exists() and not path.is_socket()):
        raise SystemExit(f"xvhpc: error: {path} exists and is not a socket; choose another path")
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import Ui, create_app
    from .runs import StatusCache

    runs_dir = Path(args.runs_dir).resolve()
    if not runs_dir.is_dir():
        print(f"xvhpc: error: {runs_dir} is not a folder", file=sys.stderr)
        return 2
    prefix = args.root_path.rstrip("/")
    if not PREFIX.fullmatch(prefix):
        print(f"xvhpc: error: --root-path {args.root_path!r}: not a plain path", file=sys.stderr)
        return 2
    data = Path(args.data_root).resolve() if args.data_root else runs_dir
    token = None if args.socket else os.environ.get("XVHPC_UI_TOKEN") or new_token()
    ui = Ui(runs_dir, data, token, prefix, StatusCache(every=float(args.poll_seconds)))
    app = create_app(ui)
    if args.socket:
        print(f"xvhpc ui: {runs_dir} on unix socket {args.socket} (only you can connect)")
        sys.stdout.flush()
        with private_socket(Path(args.socket)) as sock:  # held open while uvicorn serves it
            uvicorn.run(app, fd=sock.fileno(), log_level="warning")
        return 0
    if not _loopback(args.host):
        print(f"xvhpc: warning: binding {args.host}: anyone who can reach it and has the "
              "token can act as you", file=sys.stderr)  # fmt: skip
    port = args.port or free_port(args.host)
    shown = "localhost" if _loopback(args.host) else args.host
    print(f"xvhpc ui: {runs_dir}\n  open http://{shown}:{port}{prefix}/?token={token}")
    sys.stdout.flush()
    uvicorn.run(app, host=args.host, port=port, log_level="warning", proxy_headers=False)
    return 0
