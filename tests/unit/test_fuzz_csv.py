"""Fuzzing a node's CSV file against the federation's schema: read as a real node reads it
(``_read_table``), then ``FederationSchema.encode``. 0 crashes: the file is encoded into a
model-ready matrix, or refused with SchemaMismatch naming columns (never a value)."""

import csv
import io

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lepton_fed.data.contract import FederationSchema, SchemaMismatch
from lepton_fed.data.datasets import _read_table

SCHEMA = FederationSchema.from_dict({
    "label": "outcome", "classes": ["no", "yes"],
    "features": ["age", {"name": "sex", "kind": "categorical", "levels": ["f", "m"]}, "bp"],
})
COLUMNS = ["age", "sex", "bp", "outcome", "extra"]
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

cells = st.one_of(
    st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["f", "m", "x", "yes", "no", "", "NA", "nan", "inf", "-inf", "1e999",
                     "0x10", "1,5", " 3 ", "TRUE", "null", '"quoted"', "None"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6))


@st.composite
def tables(draw):
    cols = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=6))
    if draw(st.sampled_from([True, True, False])):  # usually the schema's columns
        cols = draw(st.permutations(COLUMNS[:4] + draw(st.lists(st.just("extra"), max_size=1))))
    rows = draw(st.lists(st.lists(cells, min_size=len(cols), max_size=len(cols)),
                         min_size=0, max_size=8))
    plausible = draw(st.booleans())
    if plausible:  # values that fit, so encoding is reached often
        fit = {"age": st.integers(0, 99).map(str), "sex": st.sampled_from(["f", "m"]),
               "bp": st.floats(50, 200).map(repr), "outcome": st.sampled_from(["yes", "no"]),
               "extra": cells}
        rows = [[draw(fit[c]) for c in cols] for _ in range(draw(st.integers(1, 6)))]
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=draw(st.sampled_from([",", ";", "\t"])))
    w.writerow(cols)
    w.writerows(rows)
    return buf.getvalue()


def _encode(text, tmp_path):
    p = tmp_path / "node.csv"
    p.write_text(text)
    try:
        df = _read_table(str(p))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error) as exc:
        assert str(exc)  # pandas names the parse problem
        return None
    return df


@FUZZ
@given(tables())
def test_a_node_file_is_encoded_or_refused_naming_columns(tmp_path_factory, text):
    df = _encode(text, tmp_path_factory.mktemp("csv"))
    if df is None:
        return
    try:
        data = SCHEMA.encode(df)
    except SchemaMismatch as exc:
        assert exc.problems and str(exc)
        assert set(exc.columns) <= set(COLUMNS) | {str(c) for c in df.columns}
        return
    assert data.X.shape == (len(data.y), SCHEMA.num_encoded) and data.X.dtype == np.float32
    assert not np.isnan(data.X).any()  # rows with a missing value are dropped
    assert set(data.y.tolist()) <= {0, 1}
    onehot = data.X[:, 1:3]
    assert np.all(onehot.sum(1) == 1)  # exactly one declared level per row


def test_infinite_values_are_refused_naming_the_column(tmp_path):
    df = _encode("age,sex,bp,outcome\n1e999,f,120,yes\n40,m,130,no\n", tmp_path)
    with pytest.raises(SchemaMismatch, match="age"):
        SCHEMA.encode(df)
