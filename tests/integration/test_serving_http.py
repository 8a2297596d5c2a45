"""A real uvicorn server (``python -m lepton_fed.cli.serve``) on loopback.

Checks that /predict equals the offline Predictor, that malformed requests get 422
naming the field without hurting the server, and that a tampered artifact never
starts.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from run_dirs import write_run_dir

from lepton_fed.serving import export_artifact, load_artifact

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def artifact(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[dict[str, float]]]:
    base = tmp_path_factory.mktemp("serving")
    spec = {"name": "mlp", "hidden": [32]}
    rows = write_run_dir(base / "run", "digits", spec, train_rows=1400)["raw_rows"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEPTON_FED_HOME", str(base / "home"))
        art = export_artifact(base / "run", base / "art", latency_seconds=0.02)
    return art, rows


def _start(art: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lepton_fed.cli.serve", str(art), "--port", str(port),
         "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip


def _request(
    port: int, method: str, path: str, body: bytes | None = None
) -> tuple[int, Any]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request(method, path, body, {"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        c.close()


@pytest.fixture(scope="module")
def server(artifact: tuple[Path, Any]) -> Iterator[int]:
    port = _free_port()
    proc = _start(artifact[0], port)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"server exited early:\n{proc.stdout.read() if proc.stdout else ''}"
                )
            try:
                if _request(port, "GET", "/health")[0] == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("server did not start within 60 s")
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()  # our own child, by its handle
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_predict_equals_offline_predictor(
    server: int, artifact: tuple[Path, Any]
) -> None:
    # Prepare
    art, rows = artifact
    offline = load_artifact(art)
    batch = rows[:16]
    # Execute
    status, body = _request(
        server, "POST", "/predict", json.dumps({"rows": batch}).encode()
    )
    status1, body1 = _request(
        server, "POST", "/predict", json.dumps({"row": rows[0]}).encode()
    )
    # Assert
    assert status == 200 and body["predictions"] == offline.predict_rows(batch)
    assert status1 == 200 and body1["prediction"] == offline.predict_rows(rows[:1])[0]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b'{"row": {"px_0": 1}}', "row.px_1"),
        (b'{"rows": [{"px_0": "a"}]}', "rows[0].px_0"),
        (b'{"row": {"px_0": NaN}}', "row.px_0"),
        (b'{"rows": [' + b",".join([b"{}"] * 1025) + b"]}", "rows"),
    ],
)
def test_malformed_requests_get_422_naming_the_field(
    server: int, artifact: tuple[Path, Any], body: bytes, field: str
) -> None:
    if body.startswith(b'{"row": {"px_0": NaN'):
        row = dict(artifact[1][0])
        body = json.dumps({"row": row}).replace('"px_0": 0.0', '"px_0": NaN').encode()
    status, detail = _request(server, "POST", "/predict", body)
    assert status == 422
    assert detail["detail"][0]["field"] == field
    assert _request(server, "GET", "/health")[0] == 200


def test_metadata_is_the_manifest(server: int, artifact: tuple[Path, Any]) -> None:
    status, meta = _request(server, "GET", "/metadata")
    manifest = json.loads((artifact[0] / "manifest.json").read_text())
    assert status == 200 and meta["files"] == manifest["files"]
    assert meta["privacy"]["mode"] == "none"


def test_tampered_artifact_refuses_to_start(
    artifact: tuple[Path, Any], tmp_path: Path
) -> None:
    bad = Path(shutil.copytree(artifact[0], tmp_path / "bad"))
    p = bad / "model.int8.onnx"
    data = bytearray(p.read_bytes())
    data[-10] ^= 0xFF
    p.write_bytes(bytes(data))
    proc = _start(bad, _free_port())
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 6
    assert "refusing to serve" in out and "hash mismatch: model.int8.onnx" in out
