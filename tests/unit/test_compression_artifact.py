"""Export -> signed artifact -> verify -> predict, for each model family; tampering; CLI.

The run directories are written by ``tests/run_dirs.py`` the way ``simulate`` writes
them.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from run_dirs import write_run_dir

from lepton_fed.data.preprocess import RowError
from lepton_fed.errors import ArtifactError, ConfigError
from lepton_fed.serving import export_artifact, load_artifact, verify_artifact
from lepton_fed.serving.signing import (
    canonical_json,
    load_or_create_signing_key,
    sign_manifest,
)

#: int8 may lose at most this much held-out accuracy against fp32 (1 point).
INT8_TOLERANCE = 0.01


#: summary.json of the runs: DP-SGD and secure aggregation (the manifest reports both).
SUMMARY = {
    "rounds_completed": 3,
    "num_clients": 4,
    "final": {"accuracy": 0.9, "loss": 0.3},
    "privacy": {"mode": "dpsgd", "epsilon": 2.5, "delta": 1e-5},
    "secagg": {"enabled": True},
}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private LEPTON_FED_HOME with a signing key, for the whole module."""
    h = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEPTON_FED_HOME", str(h))
        load_or_create_signing_key()
    return h


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    base = tmp_path_factory.mktemp("runs")
    mlp = {"name": "mlp", "hidden": [64, 32]}
    return {
        "logreg": write_run_dir(
            base / "logreg", "breast_cancer", {"name": "logreg"}, summary=SUMMARY
        ),
        "mlp": write_run_dir(base / "mlp", "digits", mlp, summary=SUMMARY),
        "cnn": write_run_dir(
            base / "cnn", "digits", {"name": "cnn"}, epochs=3, summary=SUMMARY
        ),
    }


@pytest.fixture(scope="module")
def artifacts(
    runs: dict[str, dict[str, Any]],
    home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("artifacts")
    key = home / "signing_key.pem"
    return {
        name: export_artifact(
            run["dir"], base / name, signing_key_path=key, latency_seconds=0.05
        )
        for name, run in runs.items()
    }


@pytest.fixture
def artifact_copy(artifacts: dict[str, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(artifacts["mlp"], tmp_path / "art"))


@pytest.mark.parametrize("family", ["logreg", "mlp", "cnn"])
def test_export_each_family_is_int8_accurate_and_complete(
    family: str, artifacts: dict[str, Path], runs: dict[str, dict[str, Any]]
) -> None:
    # Prepare
    art = artifacts[family]
    # Execute
    m = json.loads((art / "manifest.json").read_text())
    pred = load_artifact(art)
    # Assert: layout
    assert {p.name for p in art.iterdir()} == {
        "manifest.json", "manifest.sig", "signer.pub", "preprocess.json",
        "model.fp32.safetensors", m["runtime"]["file"],
    }  # fmt: skip
    assert m["runtime"] == m["runtime"] | {"engine": "onnxruntime", "precision": "int8"}
    assert m["runtime"]["file"] == "model.int8.onnx"
    # Assert: contents the manifest promises
    assert m["privacy"] == {"mode": "dpsgd", "epsilon": 2.5, "delta": 1e-5}
    assert m["training"]["rounds"] == 3 and m["training"]["num_clients"] == 4
    assert m["model"]["name"] == family and m["class_names"] == pred.class_names
    assert [f["name"] for f in m["input_schema"]["features"]] == list(
        runs[family]["raw_rows"][0]
    )
    acc = m["evaluation"]["accuracy"]
    assert acc["fp32"] > 0.85
    assert acc["fp32"] - acc["int8"] <= INT8_TOLERANCE
    assert set(m["evaluation"]["latency_us"]["served"]) == {"b1", "b64"}
    assert m["versions"]["onnxruntime"] and m["created"].endswith("+00:00")
    assert all(len(e["sha256"]) == 64 for e in m["files"].values())
    # Assert: predictions on raw rows match the manifest's accuracy
    out = pred.predict_rows(runs[family]["raw_rows"])
    hits = np.mean(
        [
            o["class"] == pred.class_names[t]
            for o, t in zip(out, runs[family]["y"], strict=True)
        ]
    )
    assert hits == pytest.approx(acc["int8"])
    assert all(abs(sum(o["probabilities"].values()) - 1) < 1e-6 for o in out)


@pytest.mark.parametrize("family", ["logreg", "mlp", "cnn"])
def test_plain_onnxruntime_session_takes_raw_rows(
    family: str, artifacts: dict[str, Path], runs: dict[str, dict[str, Any]]
) -> None:
    """What the README shows: onnxruntime alone, the manifest's column order, raw rows."""
    import onnxruntime as ort

    # Prepare
    art, rows = artifacts[family], runs[family]["raw_rows"]
    m = json.loads((art / "manifest.json").read_text())
    assert m["format_version"] == 2 and m["runtime"]["preprocessing"] == "graph"
    # Execute: nothing from lepton_fed
    sess = ort.InferenceSession(str(art / m["runtime"]["file"]))
    feed = {
        i["name"]: np.array(
            [[r[c] for c in i["columns"]] for r in rows],
            dtype=np.float32 if i["dtype"] == "float32" else object,
        )
        for i in m["runtime"]["inputs"]
    }
    logits = sess.run([m["runtime"]["output"]], feed)[0]
    # Assert: the manifest's accuracy, and the same classes as the verified predictor
    labels = [m["class_names"][k] for k in logits.argmax(axis=1)]
    truth = [m["class_names"][t] for t in runs[family]["y"]]
    hits = np.mean([a == b for a, b in zip(labels, truth, strict=True)])
    assert hits == pytest.approx(m["evaluation"]["accuracy"]["served"])
    assert labels == [o["class"] for o in load_artifact(art).predict_rows(rows)]


def test_int8_artifact_is_smaller_for_the_mlp(artifacts: dict[str, Path]) -> None:
    sizes = json.loads((artifacts["mlp"] / "manifest.json").read_text())["evaluation"][
        "size_bytes"
    ]
    assert sizes["served"] < sizes["fp32_onnx"]


def test_predict_rows_names_the_bad_field(artifacts: dict[str, Path], runs) -> None:
    pred = load_artifact(artifacts["mlp"])
    row = dict(runs["mlp"]["raw_rows"][0])
    row["px_3"] = float("nan")
    with pytest.raises(RowError) as e:
        pred.predict_rows([runs["mlp"]["raw_rows"][1], row])
    assert e.value.field == "rows[1].px_3"


def test_pruned_export_records_cost_and_shrinks(
    runs, home: Path, tmp_path: Path
) -> None:
    art = export_artifact(
        runs["mlp"]["dir"], tmp_path / "p", prune="structured:0.25",
        signing_key_path=home / "signing_key.pem", quantization="dynamic",
        latency_seconds=0.02,
    )  # fmt: skip
    m = json.loads((art / "manifest.json").read_text())
    assert m["model"]["hidden"] == [48, 24]
    assert m["pruning"]["neurons_removed"] == 24
    assert m["pruning"]["accuracy_cost"] == pytest.approx(
        m["pruning"]["accuracy_before"] - m["pruning"]["accuracy_after"]
    )
    assert [c["method"] for c in m["quantization"]["candidates"]] == ["dynamic"]
    assert load_artifact(art).predict_rows(runs["mlp"]["raw_rows"][:2])


def test_quantization_none_serves_fp32_onnx(runs, home: Path, tmp_path: Path) -> None:
    art = export_artifact(
        runs["logreg"]["dir"], tmp_path / "f", quantization="none",
        signing_key_path=home / "signing_key.pem", latency_seconds=0.02,
    )  # fmt: skip
    m = json.loads((art / "manifest.json").read_text())
    assert (
        m["runtime"]["file"] == "model.fp32.onnx" and not m["quantization"]["applied"]
    )
    assert m["evaluation"]["accuracy"]["int8"] is None


def test_torch_fallback_artifact_loads(runs, home: Path, tmp_path: Path) -> None:
    art = export_artifact(
        runs["mlp"]["dir"], tmp_path / "t", quantization="torch",
        signing_key_path=home / "signing_key.pem", latency_seconds=0.02,
    )  # fmt: skip
    m = json.loads((art / "manifest.json").read_text())
    assert m["runtime"] | {"engine": "torch", "file": "model.int8.pt"} == m["runtime"]
    # a torch model takes the scaled matrix: the predictor scales in Python
    assert m["runtime"]["preprocessing"] == "preprocess.json"
    assert "inputs" not in m["runtime"]
    out = load_artifact(art).predict_rows(runs["mlp"]["raw_rows"])
    names = m["class_names"]
    hits = np.mean(
        [o["class"] == names[t] for o, t in zip(out, runs["mlp"]["y"], strict=True)]
    )
    assert hits == pytest.approx(m["evaluation"]["accuracy"]["served"])


def _categorical_data(n: int, seed: int) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Rows whose label depends on a categorical level and a wide-range number."""
    rng = np.random.default_rng(seed)
    rows, y = [], []
    for _ in range(n):
        plan = str(rng.choice(["basic", "gold", "premium"]))
        spend = float(rng.normal(500, 150))
        rows.append({"spend": spend, "plan": plan, "noise": float(rng.normal())})
        y.append(int((plan != "basic") and spend > 450))
    return rows, np.asarray(y, np.int64)


def test_export_model_with_categorical_inputs(home: Path, tmp_path: Path) -> None:
    """The Python API path (no run directory); categorical levels go in as strings."""
    import onnxruntime as ort
    import torch

    from lepton_fed.data.preprocess import FeatureStats, Preprocessor, Scaler
    from lepton_fed.data.schema import FeatureSpec
    from lepton_fed.models import build_model
    from lepton_fed.serving import export_model

    # Prepare: train a small model on encoded, scaled rows
    feats = [
        FeatureSpec("spend"),
        FeatureSpec("plan", "categorical", ("basic", "gold", "premium")),
        FeatureSpec("noise"),
    ]
    spec = {"name": "mlp", "num_features": 5, "num_classes": 2, "hidden": [16]}
    rows, y = _categorical_data(600, 0)
    enc = Preprocessor(feats, Scaler.identity(5), ["no", "yes"]).encode_rows(rows)
    pre = Preprocessor(
        feats, Scaler.from_stats([FeatureStats.of(enc)]), ["no", "yes"], spec, "binary"
    )
    torch.manual_seed(0)
    net = build_model(spec)
    opt = torch.optim.Adam(net.parameters(), 0.03)
    Xs, yt = torch.from_numpy(pre.scaler.transform(enc)), torch.from_numpy(y)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(Xs), yt).backward()
        opt.step()
    test_rows, test_y = _categorical_data(200, 1)
    # Execute
    art = export_model(
        net, pre, pre.encode_rows(test_rows), test_y, tmp_path / "art",
        signing_key_path=home / "signing_key.pem", latency_seconds=0.02,
    )  # fmt: skip
    # Assert: the manifest names both inputs, their columns and the levels
    m = json.loads((art / "manifest.json").read_text())
    assert [i["name"] for i in m["runtime"]["inputs"]] == ["features", "categories"]
    assert m["runtime"]["inputs"][1]["levels"] == {"plan": ["basic", "gold", "premium"]}
    assert m["source"]["run"] is None and len(m["source"]["model_sha256"]) == 64
    assert m["evaluation"]["data"] == "given rows"
    assert m["evaluation"]["accuracy"]["served"] > 0.9
    # Assert: a plain session on raw rows agrees with the verified predictor
    sess = ort.InferenceSession(str(art / m["runtime"]["file"]))
    feed = {
        "features": np.array([[r["spend"], r["noise"]] for r in test_rows], np.float32),
        "categories": np.array([[r["plan"]] for r in test_rows], dtype=object),
    }
    plain = sess.run(None, feed)[0].argmax(axis=1)
    pred = load_artifact(art).predict_rows(test_rows)
    assert [m["class_names"][k] for k in plain] == [o["class"] for o in pred]
    assert np.mean(plain == test_y) == pytest.approx(
        m["evaluation"]["accuracy"]["served"]
    )
    # Assert: an unknown level is an error in the graph, and a named field offline
    feed["categories"][0, 0] = "platinum"
    with pytest.raises(Exception, match="Unknown Category"):
        sess.run(None, feed)
    with pytest.raises(RowError) as e:
        load_artifact(art).predict_rows([{**test_rows[0], "plan": "platinum"}])
    assert e.value.field == "rows[0].plan"


def test_export_model_refuses_rows_that_do_not_fit(
    runs: dict[str, dict[str, Any]], home: Path, tmp_path: Path
) -> None:
    from lepton_fed.data.preprocess import Preprocessor
    from lepton_fed.errors import IncompatibleModelError
    from lepton_fed.models import build_model
    from lepton_fed.serving import export_model

    d = runs["logreg"]["dir"]
    pre = Preprocessor.from_dict(json.loads((d / "preprocess.json").read_text()))
    net = build_model(pre.model)
    X = np.zeros((4, pre.model["num_features"]), np.float32)
    with pytest.raises(IncompatibleModelError, match="has 3 columns"):
        export_model(net, pre, X[:, :3], [0, 1, 0, 1], tmp_path / "a")
    with pytest.raises(ConfigError, match=r"labels must be integers in \[0, 2\)"):
        export_model(net, pre, X, [0, 1, 2, 1], tmp_path / "a")
    with pytest.raises(ConfigError, match="one label per row"):
        export_model(net, pre, X, [0, 1], tmp_path / "a")
    wrong = build_model({**pre.model, "name": "mlp", "hidden": [4]})
    with pytest.raises(IncompatibleModelError, match="do not fit the model spec"):
        export_model(wrong, pre, X, [0, 1, 0, 1], tmp_path / "a")
    assert not (tmp_path / "a").exists()


def _resign(art: Path, home: Path, manifest: dict[str, Any]) -> None:
    from lepton_fed.serving.signing import sha256_file

    manifest.pop("signer", None)
    manifest["files"] = {
        p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(art.iterdir())
        if p.name not in ("manifest.json", "manifest.sig", "signer.pub")
    }
    (art / "signer.pub").unlink()
    sign_manifest(art, manifest, load_or_create_signing_key(home / "signing_key.pem"))


def test_format_1_artifact_still_loads_and_unknown_formats_are_refused(
    runs: dict[str, dict[str, Any]], home: Path, tmp_path: Path
) -> None:
    """Format 1 graphs took the scaled matrix: the predictor scales for them."""
    from lepton_fed.compression.quantize import export_onnx
    from lepton_fed.serving.runtime import load_backend

    # Prepare: an fp32 format-2 artifact, then the same model as format 1
    rows = runs["logreg"]["raw_rows"]
    v2 = export_artifact(
        runs["logreg"]["dir"], tmp_path / "v2", quantization="none",
        signing_key_path=home / "signing_key.pem", latency_seconds=0.02,
    )  # fmt: skip
    v1 = Path(shutil.copytree(v2, tmp_path / "v1"))
    m = json.loads((v1 / "manifest.json").read_text())
    ref = load_backend(
        "torch", "fp32", (v1 / "model.fp32.safetensors").read_bytes(), m["model"]
    )
    export_onnx(ref.model, m["model"]["num_features"], v1 / "model.fp32.onnx")
    m["format_version"] = 1
    for k in ("preprocessing", "inputs", "output"):
        del m["runtime"][k]
    m["runtime"]["input"] = "features"
    _resign(v1, home, m)
    # Execute / Assert: same probabilities as the format-2 graph
    old = load_artifact(v1).predict_rows(rows)
    new = load_artifact(v2).predict_rows(rows)
    assert [o["class"] for o in old] == [o["class"] for o in new]
    for a, b in zip(old, new, strict=True):
        for k, p in a["probabilities"].items():
            assert b["probabilities"][k] == pytest.approx(p, abs=1e-5)
    # Assert: a future format is refused by name, after verification
    m["format_version"] = 3
    _resign(v1, home, m)
    with pytest.raises(ArtifactError, match="format_version 3"):
        load_artifact(v1)


# --- signature and hash tampering -------------------------------------------------


def test_verify_reports_embedded_key(artifacts: dict[str, Path], home: Path) -> None:
    v = verify_artifact(artifacts["logreg"])
    assert not v.trusted and "embedded signer.pub" in v.message
    v = verify_artifact(artifacts["logreg"], home / "signing_key.pem")
    assert v.trusted


def test_tampered_model_byte_is_a_hash_mismatch(artifact_copy: Path) -> None:
    p = artifact_copy / "model.int8.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="hash mismatch: model.int8.onnx"):
        load_artifact(artifact_copy)


def test_edited_manifest_is_a_signature_mismatch(artifact_copy: Path) -> None:
    p = artifact_copy / "manifest.json"
    m = json.loads(p.read_text())
    m["evaluation"]["accuracy"]["int8"] = 1.0
    p.write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="signature mismatch"):
        verify_artifact(artifact_copy)


def test_reformatted_manifest_still_verifies(artifact_copy: Path, home: Path) -> None:
    # Prepare: same content, different bytes (indentation)
    p = artifact_copy / "manifest.json"
    before = p.read_bytes()
    m = json.loads(before)
    p.write_text(json.dumps(m, indent=7))
    assert p.read_bytes() != before
    # Execute
    v = verify_artifact(artifact_copy, home / "signing_key.pem")
    # Assert: the signature covers the canonical content, not the bytes
    assert v.trusted and v.manifest == m


@pytest.mark.parametrize(
    "name", ["preprocess.json", "manifest.sig", "signer.pub", "model.fp32.safetensors"]
)
def test_missing_file_is_refused(artifact_copy: Path, name: str) -> None:
    (artifact_copy / name).unlink()
    with pytest.raises(ArtifactError, match=name.replace(".", r"\.")):
        verify_artifact(artifact_copy)


def test_extra_file_is_refused(artifact_copy: Path) -> None:
    (artifact_copy / "evil.onnx").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="evil.onnx"):
        verify_artifact(artifact_copy)


def test_corrupt_signature_is_refused(artifact_copy: Path) -> None:
    p = artifact_copy / "manifest.sig"
    sig = json.loads(p.read_text())
    raw = bytearray(base64.b64decode(sig["signature"]))
    raw[0] ^= 0xFF
    sig["signature"] = base64.b64encode(bytes(raw)).decode()
    p.write_text(json.dumps(sig))
    with pytest.raises(ArtifactError, match="signature mismatch"):
        verify_artifact(artifact_copy)
    p.write_text("not json")
    with pytest.raises(ArtifactError, match="malformed"):
        verify_artifact(artifact_copy)


def test_resigned_by_another_key_fails_only_against_the_trusted_key(
    artifact_copy: Path, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: an attacker swaps the model and re-signs with their own key
    monkeypatch.setenv("LEPTON_FED_HOME", str(tmp_path / "attacker"))
    attacker = load_or_create_signing_key()
    m = json.loads((artifact_copy / "manifest.json").read_text())
    del m["files"]["signer.pub"]
    (artifact_copy / "signer.pub").unlink()
    sign_manifest(artifact_copy, m, attacker)
    # Execute / Assert
    assert not verify_artifact(artifact_copy).trusted
    with pytest.raises(ArtifactError, match="trusted key"):
        verify_artifact(artifact_copy, home / "signing_key.pem")


def test_signature_covers_canonical_bytes() -> None:
    assert canonical_json({"b": 1, "a": [1.5, "é"]}) == '{"a":[1.5,"é"],"b":1}'.encode()
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_default_signing_key_is_created_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEPTON_FED_HOME", str(tmp_path / "h"))
    key = load_or_create_signing_key()
    path = tmp_path / "h" / "signing_key.pem"
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_signing_key().public_key() == key.public_key()
    with pytest.raises(ConfigError, match="does not exist"):
        load_or_create_signing_key(tmp_path / "nope.pem")


# --- run directory errors and the CLI ---------------------------------------------


def _cli(argv: list[str]) -> int:
    from lepton_fed.cli.main import main

    return main(argv)


def test_not_a_run_dir_names_every_missing_file(tmp_path: Path, runs) -> None:
    d = tmp_path / "run"
    shutil.copytree(runs["logreg"]["dir"], d)
    (d / "heldout.npz").unlink()
    (d / "summary.json").unlink()
    with pytest.raises(ConfigError) as e:
        export_artifact(d, tmp_path / "out")
    assert "not a run directory: missing heldout.npz, summary.json" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_cli_export_verify_and_serve_refusal(
    runs, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = str(home / "signing_key.pem")
    out = tmp_path / "art"
    export = ["export", str(runs["logreg"]["dir"]), "--out", str(out)]
    # export
    assert _cli([*export, "--signing-key", key]) == 0
    assert "model.int8.onnx" in capsys.readouterr().out
    # exporting over it again needs --overwrite
    assert _cli([*export, "--signing-key", key]) == 2
    assert "not empty" in capsys.readouterr().err
    # verify (embedded key, then trusted key)
    assert _cli(["export", "--verify", str(out)]) == 0
    assert capsys.readouterr().out.startswith("OK")
    assert _cli(["export", "--verify", str(out), "--public-key", key]) == 0
    # tamper, then verify and serve both refuse
    (out / "preprocess.json").write_text("{}")
    assert _cli(["export", "--verify", str(out)]) == 6
    assert "hash mismatch: preprocess.json" in capsys.readouterr().err
    assert _cli(["serve", str(out), "--port", "1"]) == 6
    assert "refusing to serve" in capsys.readouterr().err
    # not a run directory
    assert _cli(["export", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "not a run directory: missing model.safetensors" in capsys.readouterr().err


# --- the HTTP app in-process (the real server is tests/integration) ---------------


@pytest.fixture(scope="module")
def client(artifacts: dict[str, Path]) -> Any:
    import warnings

    from lepton_fed.serving import create_app

    with warnings.catch_warnings():  # starlette suggests httpx2; httpx works
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    with TestClient(create_app(artifacts["logreg"], max_batch=4)) as c:
        yield c


def test_http_predict_matches_offline(client: Any, artifacts, runs) -> None:
    rows = runs["logreg"]["raw_rows"][:3]
    r = client.post("/predict", json={"rows": rows})
    assert r.status_code == 200
    offline = load_artifact(artifacts["logreg"]).predict_rows(rows)
    assert r.json()["predictions"] == offline
    # one row alone: same class; probabilities equal up to dynamic int8's batch effect
    r = client.post("/predict", json={"row": rows[0]})
    single = r.json()["prediction"]
    assert single["class"] == offline[0]["class"]
    for name, p in offline[0]["probabilities"].items():
        assert single["probabilities"][name] == pytest.approx(p, abs=1e-3)
    assert single == load_artifact(artifacts["logreg"]).predict_rows(rows[:1])[0]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"[1, 2]", "body"),
        (b"{}", "rows"),
        (b'{"rows": []}', "rows"),
        (b'{"rows": {"a": 1}}', "rows"),
        (b'{"rows": [1]}', "rows[0]"),
        (b'{"rows": [{}, {}, {}, {}, {}]}', "rows"),
        (b'{"rows": [], "extra": 1}', "extra"),
        (b'{"foo": 1}', "foo"),
    ],
)
def test_http_malformed_body_is_422(client: Any, body: bytes, field: str) -> None:
    r = client.post("/predict", content=body)
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == field


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"mean radius": None}, "row.mean radius"),
        ({"mean radius": "12"}, "row.mean radius"),
        ({"mean radius": True}, "row.mean radius"),
        ({"bogus": 1.0}, "row.bogus"),
    ],
)
def test_http_bad_values_name_the_field(
    client: Any, runs, change: dict, field: str
) -> None:
    row = dict(runs["logreg"]["raw_rows"][0]) | change
    r = client.post("/predict", json={"row": row})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == field


def test_http_nan_and_missing_fields(client: Any, runs) -> None:
    row = dict(runs["logreg"]["raw_rows"][0])
    # JSON has no NaN, but Python's parser accepts the literal: it must still be refused
    bad = json.dumps({"rows": [row, {**row, "mean texture": 0}]}).replace(
        '"mean texture": 0', '"mean texture": NaN'
    )
    r = client.post("/predict", content=bad.encode())
    assert (
        r.status_code == 422
        and r.json()["detail"][0]["field"] == "rows[1].mean texture"
    )
    del row["worst area"]
    r = client.post("/predict", json={"rows": [row]})
    assert r.json()["detail"][0]["field"] == "rows[0].worst area"
    assert r.json()["detail"][0]["loc"] == ["body", "rows", 0, "worst area"]
    assert client.get("/health").json()["status"] == "ok"


def test_http_metadata_and_health(client: Any, artifacts) -> None:
    meta = client.get("/metadata").json()
    assert (
        meta["files"]
        == json.loads((artifacts["logreg"] / "manifest.json").read_text())["files"]
    )
    assert meta["verification"]["trusted_key"] is False
    assert client.get("/health").json()["precision"] == "int8"


def test_http_survives_hostile_bodies(client: Any) -> None:
    # deeply nested JSON: the parser's recursion limit becomes a 422, not a crash
    r = client.post("/predict", content=b"[" * 100_000)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body"
    # a body over the byte limit is refused before parsing
    r = client.post("/predict", content=b" " * (9 << 20))
    assert r.status_code == 413
    assert client.get("/health").status_code == 200
