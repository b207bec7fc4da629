"""The dashboard's routes: the list of runs, a run's page (progress, curves, leaderboard,
report, logs, cancel/resubmit behind a confirmation), the new-run form, and the JSON the
pages poll. Every POST carries the CSRF token; every name from a URL resolves inside the
runs directory (``security.child``)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..rundir import JOBS, Layout
from ..serve.limits import UploadCap
from ..util import CorruptFile
from . import newrun, security
from . import runs as view
from .security import Refused
from .svg import run_charts

HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'"
)
# a run's report.html is shown as written, sandboxed: its scripts (if any) get no cookie
REPORT_CSP = "sandbox allow-scripts; default-src 'none'; img-src data:; style-src 'unsafe-inline'"
ACTIONS = {"cancel": "Cancel every live job of", "resubmit": "Submit again"}


@dataclass
class Ui:
    """One dashboard: its roots, access secret, prefix, the scheduler cache and the local
    runs it started (so it can stop them and knows they live)."""

    runs: Path
    data: Path
    token: str | None
    prefix: str = ""
    cache: view.StatusCache = field(default_factory=view.StatusCache)
    started: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # the CSRF secret without a token (a Unix socket): random, so no other site can compute it
    secret: str = field(default_factory=security.new_token, repr=False)

    @property
    def csrf(self) -> str:
        return security.csrf_token(self.token or self.secret)

    def live_here(self, name: str) -> bool:
        proc = self.started.get(name)
        return proc is not None and proc.poll() is None


def _templates() -> Environment:
    return Environment(
        loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape(["html"])
    )


@dataclass
class Pages:
    """What every route group shares: the templates and the posted-form check of one ``Ui``."""

    ui: Ui
    env: Environment = field(default_factory=_templates)

    def page(
        self, request: Request, template: str, status: int = 200, **values: Any
    ) -> HTMLResponse:
        base = security.prefix_of(request, self.ui.prefix)
        html = self.env.get_template(template).render(base=base, csrf=self.ui.csrf, **values)
        return HTMLResponse(html, status_code=status)

    async def form_of(self, request: Request) -> dict[str, str]:
        """The posted form after the CSRF check (a file or an odd value is refused)."""
        form = await request.form(max_files=0, max_fields=40)  # a file: Starlette's 400
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        if not security.same(values.get("csrf"), self.ui.csrf):
            raise Refused("missing or wrong CSRF token: reload the page and try again")
        return values


def create_app(ui: Ui) -> FastAPI:
    """The app over ``ui``; ``main.py`` serves it (TCP with a token, or a Unix socket). The
    route groups are added in this order, which is the order routes are matched in."""
    app = FastAPI(title="xvhpc ui", docs_url=None, redoc_url=None, openapi_url=None,
                  root_path=ui.prefix)  # fmt: skip
    pages = Pages(ui)
    _guard(app, pages)
    _run_routes(app, pages)
    _action_routes(app, pages)
    _new_run_routes(app, pages)
    _static_routes(app)
    return app


def _guard(app: FastAPI, pages: Pages) -> None:
    """A refusal as a page, the security headers of every reply, the access gate (token,
    prefix, Host) and the cap on a request's body."""
    ui = pages.ui

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> HTMLResponse:
        return pages.page(request, "message.html", 400, title="Refused", message=str(exc))

    @app.middleware("http")
    async def headers(request: Request, call_next: security.Handler) -> Response:
        reply = await call_next(request)
        reply.headers.setdefault("Content-Security-Policy", CSP)
        reply.headers["X-Content-Type-Options"] = "nosniff"
        reply.headers["Referrer-Policy"] = "no-referrer"
        reply.headers.setdefault("Cache-Control", "no-store")
        return reply

    app.middleware("http")(security.gate(ui.token, ui.prefix))
    app.add_middleware(UploadCap, limit=security.MAX_BODY, shown=f"{security.MAX_BODY >> 10} KB")


def _run_routes(app: FastAPI, pages: Pages) -> None:
    """The list of runs and a run's page, each with the JSON its page polls, and its report."""
    ui, page = pages.ui, pages.page

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> HTMLResponse:
        found = [view.summary(r, ui.cache, ui.live_here(r.name)) for r in view.find_runs(ui.runs)]
        return page(request, "index.html", runs=found, runs_dir=str(ui.runs))

    @app.get("/api/runs")
    def api_runs() -> JSONResponse:
        found = [view.summary(r, ui.cache, ui.live_here(r.name)) for r in view.find_runs(ui.runs)]
        return JSONResponse({"runs": found})

    @app.get("/runs/{name}", response_class=HTMLResponse)
    def run_page(request: Request, name: str) -> HTMLResponse:
        root = _run(ui, name)
        board = view.leaderboard(root)
        return page(request, "run.html", run=_detail(ui, root), board=board,
                    logs=view.log_tails(root))  # fmt: skip

    @app.get("/api/runs/{name}")
    def api_run(name: str) -> JSONResponse:
        return JSONResponse(_detail(ui, _run(ui, name)))

    @app.get("/runs/{name}/report")  # before /runs/{name}/{action}: "report" is no action
    def report(name: str) -> Response:
        root = _run(ui, name)
        path = Layout(root).report
        if not security.inside(root, path) or not path.is_file():
            raise Refused(f"run {name}: no report yet (the report step writes it)")
        return FileResponse(path, media_type="text/html",
                            headers={"Content-Security-Policy": REPORT_CSP})  # fmt: skip


def _action_routes(app: FastAPI, pages: Pages) -> None:
    """Cancel and resubmit: a confirmation page (GET), then the POST that does it."""
    ui, page = pages.ui, pages.page

    @app.get("/runs/{name}/{action}", response_class=HTMLResponse)
    def confirm(request: Request, name: str, action: str) -> HTMLResponse:
        _run(ui, name)
        if action not in ACTIONS:
            raise Refused(f"{action[:40]!r}: not an action (valid: {', '.join(ACTIONS)})")
        return page(request, "confirm.html", name=name, action=action, what=ACTIONS[action])

    @app.post("/runs/{name}/{action}")
    async def act(request: Request, name: str, action: str) -> Response:
        await pages.form_of(request)
        root = _run(ui, name)
        if action == "cancel":
            said = _cancel(ui, root)
        elif action == "resubmit":
            said = _resubmit(ui, root)
        else:
            raise Refused(f"{action[:40]!r}: not an action (valid: {', '.join(ACTIONS)})")
        return page(request, "message.html", title=f"{action}: {name}", message=said, run=name)


def _new_run_routes(app: FastAPI, pages: Pages) -> None:
    """The new-run form: shown, checked (problems at their fields), then compiled and started."""
    ui, page = pages.ui, pages.page

    @app.get("/new", response_class=HTMLResponse)
    def new_form(request: Request) -> HTMLResponse:
        return page(request, "new.html", **_choices(ui), form={}, problems="", ok=False)

    @app.post("/new", response_class=HTMLResponse)
    async def new_post(request: Request) -> Response:
        form = await pages.form_of(request)
        asked = newrun.read_form(form, ui.runs, ui.data)
        spec, problems = newrun.validate(asked, ui.runs)
        if problems or form.get("action") != "start":
            return page(request, "new.html", 422 if problems else 200, **_choices(ui),
                        form=form, problems=problems, ok=not problems, spec=spec.name)  # fmt: skip
        proc = ui.started[asked.name] = newrun.start(spec, ui.runs / asked.name, asked.site)
        said = await asyncio.to_thread(newrun.wait_compiled, proc, ui.runs / asked.name)
        if said:
            return page(request, "new.html", 422, **_choices(ui), form=form, problems=said)
        base = security.prefix_of(request, ui.prefix)
        return RedirectResponse(f"{base}/runs/{asked.name}", status_code=303)


def _static_routes(app: FastAPI) -> None:
    """The pages' own script and style sheet (two names; anything else is a 404)."""

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        kinds = {"ui.js": "text/javascript", "ui.css": "text/css"}
        if name not in kinds:
            return Response(status_code=404)
        return Response((HERE / "static" / name).read_bytes(), media_type=kinds[name])


def _run(ui: Ui, name: str) -> Path:
    root = security.child(ui.runs, name)
    if not Layout(root).plan.is_file():
        raise Refused(f"run {name!r}: no compiled run directory of that name in {ui.runs}")
    return root


def _detail(ui: Ui, root: Path) -> dict[str, Any]:
    out = view.summary(root, ui.cache, ui.live_here(root.name))
    points = len(out["points"])
    out["charts"] = {p: run_charts(view.curves(root, p)) for p in range(points)}
    return out


def _choices(ui: Ui) -> dict[str, Any]:
    from ..registry import DEFAULT_TASK, task_infos

    return {
        "data_choices": newrun.data_choices(ui.data),
        "base_choices": newrun.base_choices(ui.data),
        "site_choices": newrun.site_choices(),
        # the default task first: what an untouched form (and the browser's first option) asks
        "task_choices": [DEFAULT_TASK, *(t for t in task_infos() if t != DEFAULT_TASK)],
        "data_root": str(ui.data),
    }


def _cancel(ui: Ui, root: Path) -> str:
    """Stop the local run this dashboard started (SIGTERM to its process group: training
    checkpoints), or cancel the run's scheduler jobs as ``xvhpc cancel`` does."""
    proc = ui.started.get(root.name)
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        return f"stopped the local run (process group {proc.pid}); rerun resumes it"
    from ..submit import cancel_run

    try:
        view.job_ids(root)  # refuses a jobs.json that is a link, a FIFO or names a non-id
    except CorruptFile as exc:
        raise Refused(str(exc)) from None
    said = io.StringIO()
    with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
        cancel_run(root)
    ui.cache.forget(root)  # the next view asks the scheduler afresh
    return said.getvalue().strip()


def _resubmit(ui: Ui, root: Path) -> str:
    """Start the run again from its own spec copy and site (a local run resumes where it
    stopped; a cluster run is submitted again unless jobs of it still live)."""
    if ui.live_here(root.name):
        raise Refused(f"run {root.name}: still running here; cancel it first")
    try:
        site = str(view.record(root / JOBS, {}).get("site") or "local")
    except (CorruptFile, AttributeError):
        raise Refused(f"run {root.name}: its {JOBS} is damaged; compile it again") from None
    if site not in newrun.site_choices():
        raise Refused(f"run {root.name}: its site {site!r} is not a known site")
    ui.started[root.name] = newrun.start(Layout(root).spec, root, site)
    return f"started again on {site}; its output: logs/{newrun.START_LOG}"
