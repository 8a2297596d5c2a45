"""Fuzzing the HTTP ``/predict`` body (the FastAPI app of lepton_fed/serving/http.py on a
real signed artifact with numeric and categorical features, through Starlette's
TestClient): arbitrary bytes, mutated valid bodies and JSON documents built around valid
rows with missing, extra and wrongly typed fields, extreme numbers and bad levels.

Every body gets 200 exactly when an independent oracle finds it valid; otherwise a 4xx
whose ``field`` names one of the problems the oracle found, never a 500. A 200 is
strict JSON (no NaN) with finite probabilities that sum to 1, one prediction per row.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=1500, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
MAX_BATCH = 4
LEVELS = ("f", "m")
NUMERIC = ("age", "bp")
NAMES = ("age", "sex", "bp")
F32_MAX = float(np.finfo(np.float32).max)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The app of an exported artifact: logreg over age (numeric), sex (f/m), bp."""
    pytest.importorskip("fastapi")
    import torch
    from safetensors.torch import save_file

    from lepton_fed.data.preprocess import FeatureStats, Preprocessor, Scaler
    from lepton_fed.data.schema import FeatureSpec
    from lepton_fed.models import build_model
    from lepton_fed.serving import create_app, export_artifact

    base = tmp_path_factory.mktemp("fuzz_serving")
    run = base / "run"
    run.mkdir()
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(50, 10, 400), np.eye(2)[rng.integers(0, 2, 400)],
              rng.normal(120, 15, 400)].astype(np.float32)
    y = (X[:, 0] + rng.normal(0, 5, 400) > 50).astype(np.int64)
    scaler = Scaler.from_stats([FeatureStats.of(X)])
    spec = {"name": "logreg", "num_features": 4, "num_classes": 2}
    torch.manual_seed(0)
    save_file(build_model(spec).state_dict(), str(run / "model.safetensors"))
    feats = [FeatureSpec("age"), FeatureSpec("sex", "categorical", LEVELS), FeatureSpec("bp")]
    pre = Preprocessor(feats, scaler, ["no", "yes"], spec, "binary")
    (run / "preprocess.json").write_text(json.dumps(pre.to_dict()))
    np.savez(run / "heldout.npz", X=scaler.transform(X), y=y)
    (run / "summary.json").write_text(json.dumps({
        "rounds_completed": 1, "num_clients": 1, "final": {"accuracy": 0.5, "loss": 0.7},
        "privacy": {"mode": "none", "epsilon": None, "delta": None},
        "secagg": {"enabled": False}}))
    (run / "config.yaml").write_text("model: logreg\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEPTON_FED_HOME", str(base / "home"))
        art = export_artifact(run, base / "art", latency_seconds=0.02, max_accuracy_drop=1.0)
    with warnings.catch_warnings():  # starlette suggests httpx2; httpx works
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    with TestClient(create_app(Path(art), max_batch=MAX_BATCH), raise_server_exceptions=False) as c:
        yield c


# ------------------------------------------------------------------ the oracle
def _value_ok(name: str, v: Any) -> bool:
    if name == "sex":
        return isinstance(v, str) and v in LEVELS
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    try:
        fv = float(v)
    except OverflowError:  # an integer beyond any float
        return False
    return math.isfinite(fv) and abs(fv) <= F32_MAX


def oracle(obj: Any) -> set[str]:
    """Every field the body gets wrong (empty: a valid body)."""
    if not isinstance(obj, dict):
        return {"body"}
    keys = set(obj)
    if keys == {"row"}:
        rows, single = [obj["row"]], True
    elif keys == {"rows"}:
        rows, single = obj["rows"], False
        if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_BATCH:
            return {"rows"}
    else:
        return {"body", "rows"} | (keys - {"row", "rows"})
    bad: set[str] = set()
    for i, row in enumerate(rows):
        at = "row" if single else f"rows[{i}]"
        if not isinstance(row, dict):
            bad.add(at)
            continue
        bad |= {f"{at}.{k}" for k in set(row) - set(NAMES)}
        bad |= {f"{at}.{n}" for n in NAMES if n not in row or not _value_ok(n, row[n])}
    return bad


# ------------------------------------------------------------------ bodies
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**400, 10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.sampled_from(["f", "m", "F", " f", "f\x00", "1e999", "NaN"]),
    st.sampled_from([1e39, -1e300, 3.4e38, -3.5e38, 1e-320, 0.0, -0.0, 2**64, 10**400]))
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=3)
                           | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=6)
numbers = st.one_of(st.floats(-1e6, 1e6), st.integers(-1000, 1000))


@st.composite
def rows(draw) -> Any:
    row: dict[str, Any] = {"age": draw(numbers), "sex": draw(st.sampled_from(LEVELS)),
                           "bp": draw(numbers)}
    for _ in range(draw(st.integers(0, 2))):
        how = draw(st.sampled_from(["drop", "extra", "value", "extreme", "whole"]))
        name = draw(st.sampled_from(NAMES))
        if how == "drop":
            row.pop(name, None)
        elif how == "extra":
            row[draw(st.text(min_size=1, max_size=6))] = draw(json_values)
        elif how == "value":
            row[name] = draw(json_values)
        elif how == "extreme":
            row[draw(st.sampled_from(NUMERIC))] = draw(st.sampled_from(
                [1e39, -1e300, 3.4e38, -3.4e38, 10**400, -(10**40), math.nan, math.inf]))
        else:
            return draw(json_values)
    return row


documents = st.one_of(
    st.builds(lambda r: {"row": r}, rows()),
    st.builds(lambda rs: {"rows": rs}, st.lists(rows(), max_size=MAX_BATCH + 2)),
    st.builds(lambda rs, extra: {"rows": rs, **extra}, st.lists(rows(), max_size=2),
              st.dictionaries(st.sampled_from(["row", "x", "Rows"]), json_values, max_size=2)),
    st.builds(lambda v: {"rows": v}, json_values),
    json_values,
)


def _strict(text: str) -> Any:
    def refuse(const: str) -> None:
        raise ValueError(f"{const} in a response")

    return json.loads(text, parse_constant=refuse)


def _check_response(r: Any, bad: set[str] | None, n_rows: int | None) -> None:
    assert r.status_code != 500, r.text
    if r.status_code == 200:
        assert bad is None or not bad, (bad, r.text)
        body = _strict(r.text)
        preds = body["predictions"] if "predictions" in body else [body["prediction"]]
        assert n_rows is None or len(preds) == n_rows
        for p in preds:
            probs = list(p["probabilities"].values())
            assert all(math.isfinite(q) and 0 <= q <= 1 for q in probs)
            assert abs(sum(probs) - 1) < 1e-5 and p["class"] in ("no", "yes")
        event("200")
        return
    assert r.status_code in (413, 422), r.text
    (detail,) = _strict(r.text)["detail"]
    assert isinstance(detail["field"], str) and detail["field"] and detail["msg"]
    assert detail["loc"][0] == "body"
    if bad is not None:
        assert detail["field"] in bad, (detail, bad)
    event(f"{r.status_code} {detail['field'].split('.')[0].split('[')[0]}")


@FUZZ
@given(documents)
def test_every_json_body_is_answered_as_the_oracle_says(client, obj):
    body = json.dumps(obj).encode()  # NaN and Infinity as Python writes them
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    n = 1 if isinstance(parsed, dict) and set(parsed) == {"row"} else (
        len(parsed["rows"]) if isinstance(parsed, dict) and isinstance(parsed.get("rows"), list)
        else None)
    _check_response(client.post("/predict", content=body),
                    oracle(parsed) if parsed is not None else {"body"}, n)


VALID = json.dumps({"rows": [{"age": 51.5, "sex": "m", "bp": 130},
                             {"age": 40, "sex": "f", "bp": 110.25}]}).encode()


@st.composite
def mutated_bodies(draw) -> bytes:
    data = bytearray(VALID)
    how = draw(st.sampled_from(["flip", "cut", "splice", "any"]))
    if how == "flip":
        for _ in range(draw(st.integers(1, 3))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    elif how == "cut":
        del data[draw(st.integers(0, len(data) - 1)):]
    elif how == "splice":
        i = draw(st.integers(0, len(data)))
        data[i:i + draw(st.integers(0, 8))] = draw(st.binary(max_size=8))
    else:
        return draw(st.binary(max_size=200))
    return bytes(data)


@FUZZ
@given(mutated_bodies())
def test_mutated_and_arbitrary_bytes_never_get_a_500(client, body):
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        parsed = None
    bad = oracle(parsed) if parsed is not None else {"body"}
    _check_response(client.post("/predict", content=body), bad, None)


def test_the_valid_body_is_answered(client):
    r = client.post("/predict", content=VALID)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2


@pytest.mark.parametrize("value, msg", [
    (10**400, "must be within"), (1e300, "must be within"), (-3.5e38, "must be within"),
    ("NaN", "must be a number")])
def test_numbers_beyond_float32_are_refused_naming_the_field(client, value, msg):
    body = json.dumps({"row": {"age": 50, "sex": "f", "bp": value}}).encode()
    r = client.post("/predict", content=body)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "row.bp"
    assert msg in r.json()["detail"][0]["msg"]


def test_a_body_over_the_limit_gets_413_naming_the_body(client):
    r = client.post("/predict", content=b"[" + b" " * (2 << 20) + b"]")
    assert r.status_code == 413 and r.json()["detail"][0]["field"] == "body"
