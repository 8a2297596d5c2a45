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

import numpy as np
import pytest
import torch

from lepton_fed.data.datasets import load_dataset
from lepton_fed.data.preprocess import FeatureStats, Preprocessor, Scaler
from lepton_fed.models import build_model
from lepton_fed.serving import export_artifact, load_artifact

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_run(path: Path) -> list[dict[str, float]]:
    """A run directory with a small MLP trained on digits; returns raw test rows."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    data = load_dataset("digits")
    idx = np.random.default_rng(0).permutation(len(data.y))
    tr, te = idx[:1400], idx[1400:]
    scaler = Scaler.from_stats([FeatureStats.of(data.X[tr])])
    spec = {"name": "mlp", "num_features": 64, "num_classes": 10, "hidden": [32]}
    net = build_model(spec)
    X, y = torch.from_numpy(scaler.transform(data.X[tr])), torch.from_numpy(data.y[tr])
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(5):
        for i in range(0, len(X), 128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(
                net(X[i : i + 128]), y[i : i + 128]
            ).backward()
            opt.step()
    path.mkdir()
    save_file(net.eval().state_dict(), str(path / "model.safetensors"))
    pre = Preprocessor(data.features, scaler, data.class_names, spec, "multiclass")
    (path / "preprocess.json").write_text(json.dumps(pre.to_dict()))
    np.savez(path / "heldout.npz", X=scaler.transform(data.X[te]), y=data.y[te])
    (path / "summary.json").write_text(
        json.dumps(
            {
                "rounds_completed": 2,
                "num_clients": 3,
                "final": {"accuracy": 0.9, "loss": 0.4},
                "privacy": {"mode": "none", "epsilon": None, "delta": None},
                "secagg": {"enabled": False},
            }
        )
    )
    return [
        {f.name: float(v) for f, v in zip(data.features, r, strict=True)}
        for r in data.X[te]
    ]


@pytest.fixture(scope="module")
def artifact(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[dict[str, float]]]:
    base = tmp_path_factory.mktemp("serving")
    rows = _write_run(base / "run")
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
