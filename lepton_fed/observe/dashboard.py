"""The live dashboard: a FastAPI app over a run or sweep directory.

``GET /`` serves one page (``static/index.html``, ``dashboard.js``, ``dashboard.css``,
written for this package: no CDN, no third-party script; it works offline). The page
polls ``GET /api/run`` and redraws its SVG charts as rounds arrive: accuracy/AUC and
loss (server and federated evaluation), epsilon per node against the run's budget,
participation and dropouts, bytes and round time per round; a node table; the privacy
statement; and for a sweep, the runs' comparison table (``lepton-fed report``'s
columns) and accuracy chart.

Read-only; it serves only files of the runs it discovered under the root. Bind it to
127.0.0.1 (the CLI's default): it shows per-node privacy spend and participation.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from lepton_fed.observe.runs import RunIndex

__all__ = ["COLUMNS", "STATIC_FILES", "create_app", "sweep_table"]

#: the sweep table's columns: those of ``lepton-fed report`` (a test keeps them equal)
COLUMNS = ("job", "overrides", "rounds", "accuracy", "loss", "auc", "epsilon", "privacy",
           "secagg", "bytes_up", "wall_seconds")

#: the page's files (package data under lepton_fed/observe/static)
STATIC_FILES = {"index.html": "text/html; charset=utf-8",
                "dashboard.js": "text/javascript; charset=utf-8",
                "dashboard.css": "text/css; charset=utf-8"}

_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _static(name: str) -> bytes:
    return resources.files("lepton_fed.observe").joinpath("static", name).read_bytes()


def _overrides(run_dir: Path) -> str:
    p = run_dir / ".hydra" / "overrides.yaml"
    if not p.is_file():
        return ""
    return " ".join(ln.strip()[2:] for ln in p.read_text().splitlines()
                    if ln.strip().startswith("- "))


def sweep_table(index: RunIndex) -> list[dict[str, Any]]:
    """One row per finished or running run: ``lepton-fed report``'s columns, plus id,
    status and rounds so far."""
    out = []
    for run_id, d in index.runs().items():
        s = index.summary(run_id) or {}
        rows = index.rows(run_id)
        last = rows[-1] if rows else {}
        fin = s.get("final") or {}
        meta = index.meta(run_id)
        row = {
            "job": run_id, "overrides": _overrides(d),
            "rounds": s.get("rounds_completed", len(rows)),
            "accuracy": fin.get("accuracy", last.get("accuracy")),
            "loss": fin.get("loss", last.get("loss")),
            "auc": fin.get("auc", last.get("auc")),
            "epsilon": (s.get("privacy") or {}).get("epsilon", last.get("epsilon")),
            "privacy": (s.get("privacy") or {}).get("mode", meta.get("privacy")),
            "secagg": (s.get("secagg") or {}).get("enabled", meta.get("secagg")),
            "bytes_up": (s.get("bytes") or {}).get("up", sum(r.get("bytes_up") or 0
                                                            for r in rows)),
            "wall_seconds": s.get("wall_seconds"),
        }
        out.append({k: row[k] for k in COLUMNS} | {
            "id": run_id, "finished": bool(s), "planned": meta.get("rounds_planned")})
    return out


def create_app(root: str | Path, *, poll_ms: int = 1000, ledger_dir: str | Path | None = None,
               index: RunIndex | None = None) -> Any:
    """The dashboard's ASGI app over ``root`` (a run or a sweep directory).

    Args:
        root: the directory to watch (runs may appear in it later).
        poll_ms: how often the page asks for new rounds.
        ledger_dir: a node's ledger directory, for the statement's ledger history.
        index: a prepared :class:`RunIndex` (tests); default one over ``root``.
    """
    from fastapi import FastAPI, HTTPException, Query
    from fastapi.responses import JSONResponse, Response

    idx = index or RunIndex(root)
    app = FastAPI(title="lepton-fed dashboard", docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.middleware("http")
    async def _headers(request: Any, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    def _run(run_id: str) -> str:
        if idx.dir(run_id) is None:
            raise HTTPException(404, f"no run {run_id!r} under the dashboard's directory")
        return run_id

    @app.get("/")
    def page() -> Response:
        return Response(_static("index.html"), media_type=STATIC_FILES["index.html"])

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC_FILES:
            raise HTTPException(404, "no such file")
        return Response(_static(name), media_type=STATIC_FILES[name])

    @app.get("/api/runs")
    def runs() -> JSONResponse:
        ids = list(idx.runs())
        return JSONResponse({"root": idx.root.name, "sweep": idx.is_sweep, "runs": ids,
                             "poll_ms": int(poll_ms),
                             "table": sweep_table(idx) if idx.is_sweep else []})

    @app.get("/api/run")
    def run(run: str = Query("."), since: int = Query(0, ge=0)) -> JSONResponse:
        rid = _run(run)
        rows = idx.rows(rid)
        return JSONResponse({"id": rid, "since": since, "rows": rows[since:],
                             "next": len(rows), "summary": idx.summary(rid),
                             "meta": idx.meta(rid), "age_s": idx.age_s(rid)})

    @app.get("/api/series")
    def series(key: str = Query("accuracy")) -> JSONResponse:
        if key not in ("accuracy", "loss", "auc", "epsilon"):
            raise HTTPException(422, "key must be accuracy, loss, auc or epsilon")
        return JSONResponse({rid: [[r.get("round"), r.get(key)] for r in idx.rows(rid)
                                   if r.get(key) is not None] for rid in idx.runs()})

    @app.get("/api/statement")
    def statement(run: str = Query("."), node: str | None = Query(None)) -> JSONResponse:
        from lepton_fed.errors import LeptonError
        from lepton_fed.observe.statement import build_statement, render_statement

        d = idx.dir(_run(run))
        try:
            st = build_statement(str(d), node=node or None, ledger_dir=ledger_dir)
        except LeptonError as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        return JSONResponse({"statement": st, "text": render_statement(st)})

    return app
