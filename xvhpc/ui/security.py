"""What makes the dashboard safe on a shared login node.

* Access: a random token printed at start (as Jupyter does): ``?token=`` once, then an
  HttpOnly, SameSite=Strict cookie; or ``Authorization: token T``. Other users of the node
  can reach 127.0.0.1 too, so the port alone is no protection. A Unix socket (mode 0600) may
  replace the token.
* Actions: every POST carries a CSRF token (an HMAC of the access secret) and is refused
  without it, so a page elsewhere cannot make the browser cancel or start a run.
* Paths: a name from a URL or a form is a plain name (no ``/``, no ``..``), and what it names
  must resolve inside the runs (or data) root and not be a symbolic link: nothing leaves it.
* Sizes: request bodies are capped while they stream (``serve/limits.UploadCap``) and each
  form value is capped in length.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

COOKIE = "xvhpc_ui"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a run, data folder or spec name
MAX_BODY = 64 << 10  # bytes of one request body: forms only, no uploads
MAX_VALUE = 200  # characters of one form value
PREFIX = re.compile(r"(/[A-Za-z0-9._~%+-]+)*")  # a proxy's path prefix, e.g. /node/cn12/8080


class Refused(Exception):
    """A request value the dashboard will not act on; ``str()`` says which and why."""


def new_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_token(secret: str) -> str:
    """The CSRF token of this server's forms: derived from the access secret, so it is the
    same for every page of one server and unknown to any other site."""
    return hmac.new(secret.encode(), b"xvhpc-ui-csrf", hashlib.sha256).hexdigest()


def same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def child(root: Path, name: str, what: str = "run") -> Path:
    """``root/name`` for a plain name that stays inside ``root`` (resolved; no link)."""
    if len(name) > 64 or not NAME.fullmatch(name) or name in (".", ".."):
        raise Refused(f"{what} {name[:64]!r}: not a plain name (letters, digits, _ . -)")
    path = root / name
    if path.is_symlink():
        raise Refused(f"{what} {name!r}: a symbolic link; the dashboard does not follow links")
    if not path.resolve().is_relative_to(root.resolve()):
        raise Refused(f"{what} {name!r}: outside {root}")
    return path


def inside(root: Path, path: Path) -> bool:
    """Whether ``path`` is a regular file or folder within ``root`` reached through no link."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return False
    here = root
    for part in rel.parts:
        here = here / part
        if here.is_symlink():
            return False
    return path.resolve().is_relative_to(root.resolve())


def prefix_of(request: Request, fixed: str) -> str:
    """The path prefix links carry: ``--root-path``, else a proxy's X-Forwarded-Prefix when it
    is a plain path (anything else is ignored, never echoed into a page)."""
    if fixed:
        return fixed
    header = request.headers.get("x-forwarded-prefix", "").rstrip("/")
    return header if len(header) < 200 and PREFIX.fullmatch(header) else ""


def visible_path(path: str, prefix: str) -> str:
    """The path the browser sees: a proxy that keeps its prefix in the path (OnDemand's
    ``/node/``) passes it whole, one that strips it (``/rnode/``) does not."""
    return path if prefix and path.startswith(prefix + "/") else prefix + path


def form_value(form: dict[str, str], key: str, default: str = "") -> str:
    value = form.get(key, default)
    if len(value) > MAX_VALUE:
        raise Refused(f"{key}: longer than {MAX_VALUE} characters")
    return value.strip()


Handler = Callable[[Request], Awaitable[Response]]


def local_host(request: Request) -> bool:
    """Whether the request names this machine (``localhost``, 127.x or ::1, any port) in its
    Host header. Without a token (a Unix socket, reached through ``ssh -L PORT:SOCKET``) this
    is the only check: a web page whose name is re-pointed at 127.0.0.1 (DNS rebinding) sends
    its own name, and is refused."""
    host = request.headers.get("host", "").lower()
    if host.startswith("["):  # [::1]:8080
        name = host[1 : host.find("]")] if "]" in host else ""
    else:
        name = host.split(":", 1)[0]
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def gate(token: str | None, fixed_prefix: str) -> Callable[[Request, Handler], Awaitable[Response]]:
    """The access check every request passes: the token, or without one (a Unix socket) a
    Host header naming this machine."""

    async def check(request: Request, call_next: Handler) -> Response:
        if token is None:
            return await call_next(request) if local_host(request) else denied()
        given = request.query_params.get("token")
        if given is not None:
            if not same(given, token):
                return denied()
            rest = [(k, v) for k, v in parse_qsl(request.url.query) if k != "token"]
            prefix = prefix_of(request, fixed_prefix)
            target = visible_path(request.scope["path"], prefix)
            reply = RedirectResponse(target + ("?" + urlencode(rest) if rest else ""), 303)
            path = prefix or "/"
            reply.set_cookie(COOKIE, token, httponly=True, samesite="strict", path=path)
            return reply
        header = request.headers.get("authorization", "")
        if same(request.cookies.get(COOKIE), token) or same(header.removeprefix("token "), token):
            return await call_next(request)
        return denied()

    return check


def denied() -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><title>xvhpc ui: token needed</title><p>Open the address "
        "<code>xvhpc ui</code> printed when it started (it ends in <code>?token=…</code>).",
        status_code=403,
    )
