"""HTTP serving of a verified artifact (FastAPI app on uvicorn).

Endpoints:

* ``POST /predict`` -- body ``{"rows": [{feature: value, ...}, ...]}`` answers
  ``{"predictions": [{"class": name, "probabilities": {name: p}}, ...]}``; body
  ``{"row": {...}}`` answers ``{"prediction": {...}}``.
* ``GET /health`` -- ``{"status": "ok", ...}``.
* ``GET /metadata`` -- the verified manifest plus how it was verified.

Every malformed request (non-JSON body, wrong shape, missing/extra feature, wrong
type, NaN or infinity, unknown categorical level, more than ``max_batch`` rows) gets
HTTP 422 with ``{"detail": [{"loc": [...], "field": "rows[2].age", "msg": ...}]}``; a
body over the byte limit gets 413; an unexpected server-side failure gets 500. None of
them stops the server. The app is built only from an artifact that verifies, so a
tampered artifact stops the server from starting.

The predict route is a plain Starlette route inside the FastAPI app (no per-row
pydantic models): request validation is the preprocessor's, which names fields the
same way for offline and HTTP use.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

from lepton_fed.data.preprocess import RowError
from lepton_fed.serving.runtime import Predictor, load_artifact

__all__ = ["create_app", "serve"]

log = logging.getLogger(__name__)

_FIELD_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _loc(field: str) -> list[str | int]:
    """``rows[2].age`` -> ``["body", "rows", 2, "age"]``."""
    parts: list[str | int] = ["body"]
    for name, index in _FIELD_PART.findall(field):
        parts.append(int(index) if index else name)
    return parts


def _require_fastapi() -> None:
    from lepton_fed.compression.quantize import require_serve_extra

    require_serve_extra("fastapi", "uvicorn")


class _Invalid(Exception):
    def __init__(self, field: str, msg: str, status: int = 422) -> None:
        super().__init__(msg)
        self.field, self.msg, self.status = field, msg, status


def _parse_body(body: bytes, max_batch: int) -> tuple[list[Any], bool]:
    """Return ``(rows, single)`` from a request body, or raise :class:`_Invalid`."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as e:  # includes UnicodeDecodeError
        raise _Invalid("body", f"body is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise _Invalid("body", "expected a JSON object with 'rows' (a list) or 'row'")
    keys = set(obj)
    if keys == {"row"}:
        return [obj["row"]], True
    if keys == {"rows"}:
        rows = obj["rows"]
        if not isinstance(rows, list):
            raise _Invalid("rows", "must be a list of objects")
        if not rows:
            raise _Invalid("rows", "must hold at least one row")
        if len(rows) > max_batch:
            raise _Invalid(
                "rows", f"batch of {len(rows)} rows exceeds max_batch={max_batch}"
            )
        return rows, False
    if "row" in keys and "rows" in keys:
        raise _Invalid("body", "give either 'rows' or 'row', not both")
    extra = sorted(keys - {"row", "rows"})
    if extra:  # an empty key is named as the body (H5 fuzz: the field was '')
        raise _Invalid(
            extra[0] or "body", f"unknown key {extra[0]!r}; expected 'rows' or 'row'"
        )
    raise _Invalid("rows", "missing; expected 'rows' (a list) or 'row' (an object)")


def create_app(
    artifact_dir: str | os.PathLike[str],
    *,
    max_batch: int = 1024,
    trusted_public_key: Any = None,
    threads: int = 1,
    max_body_bytes: int | None = None,
    predictor: Predictor | None = None,
) -> Any:
    """Build the FastAPI app for a verified artifact.

    Args:
        artifact_dir: the artifact directory.
        max_batch: most rows per request (more -> 422).
        trusted_public_key: verify against this key instead of the embedded one.
        threads: ONNX Runtime intra-op threads.
        max_body_bytes: request body limit (more -> 413); default scales with
            ``max_batch`` and the number of features.
        predictor: an already loaded predictor (skips loading; for tests).

    Raises:
        ArtifactError: the artifact fails verification (the app is not built).
        MissingExtra: the ``lepton-fed[serve]`` extra is missing.
    """
    _require_fastapi()
    from fastapi import FastAPI
    from starlette.requests import Request
    from starlette.responses import Response

    if int(max_batch) < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    pred = predictor or load_artifact(
        artifact_dir, trusted_public_key=trusted_public_key, threads=threads
    )
    n_features = len(pred.preprocessor.features)
    limit = int(max_body_bytes or max(1 << 20, max_batch * (n_features + 1) * 64))
    manifest = pred.manifest
    verification = pred.verification
    metadata = json.dumps(
        {
            **manifest,
            "verification": None
            if verification is None
            else {
                "trusted_key": verification.trusted,
                "key_fingerprint": verification.key_fingerprint,
                "message": verification.message,
            },
        }
    ).encode()
    runtime = manifest.get("runtime", {})
    health = json.dumps(
        {
            "status": "ok",
            "runtime": runtime.get("engine"),
            "precision": runtime.get("precision"),
            "model_sha256": manifest.get("files", {})
            .get(runtime.get("file", ""), {})
            .get("sha256"),
        }
    ).encode()

    app = FastAPI(
        title="lepton-fed model server", docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.predictor = pred
    app.state.max_batch = int(max_batch)

    def _json(body: bytes, status: int = 200) -> Response:
        return Response(body, status_code=status, media_type="application/json")

    def _error(field: str, msg: str, status: int = 422) -> Response:
        detail = {"loc": _loc(field), "field": field, "msg": msg, "type": "value_error"}
        return _json(json.dumps({"detail": [detail]}).encode(), status)

    async def _read(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _Invalid("body", f"body of {declared} bytes exceeds {limit}", 413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _Invalid("body", f"body exceeds {limit} bytes", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    async def predict(request: Request) -> Response:
        try:
            rows, single = _parse_body(await _read(request), app.state.max_batch)
            try:
                out = pred.predict_rows(rows)
            except RowError as e:
                field = e.field.replace("rows[0]", "row", 1) if single else e.field
                return _error(field, str(e).split(": ", 1)[-1])
            body = {"prediction": out[0]} if single else {"predictions": out}
            return _json(json.dumps(body).encode())
        except _Invalid as e:
            return _error(e.field, e.msg, e.status)
        except Exception:  # never let one request take the server down
            log.exception("predict failed")
            return _json(b'{"detail": "internal error"}', 500)

    async def get_health(request: Request) -> Response:
        return _json(health)

    async def get_metadata(request: Request) -> Response:
        return _json(metadata)

    app.add_route("/predict", predict, methods=["POST"])
    app.add_route("/health", get_health, methods=["GET"])
    app.add_route("/metadata", get_metadata, methods=["GET"])
    return app


def serve(
    artifact_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    max_batch: int = 1024,
    trusted_public_key: Any = None,
    threads: int = 1,
    access_log: bool = False,
    log_level: str = "info",
) -> None:
    """Verify the artifact, then serve it with uvicorn (one worker) until interrupted.

    uvloop and httptools are used when installed (uvicorn's ``auto``); the access log is
    off by default because it costs a large share of the per-request time.

    Raises:
        ArtifactError: verification fails; nothing is started.
    """
    _require_fastapi()
    import uvicorn

    app = create_app(
        artifact_dir,
        max_batch=max_batch,
        trusted_public_key=trusted_public_key,
        threads=threads,
    )
    print(app.state.predictor.verification.message, flush=True)
    uvicorn.run(
        app,
        host=host,
        port=int(port),
        workers=1,
        loop="auto",
        http="auto",
        access_log=access_log,
        log_level=log_level,
    )
