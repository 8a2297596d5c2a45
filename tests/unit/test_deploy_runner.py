"""The runner's allowlisted path: a listed FAB's own ClientApp runs, installed, in a child process."""

from __future__ import annotations

import hashlib
import os
from types import SimpleNamespace

import pytest
from flwr.cli.build import build_fab_from_disk

from lepton_fed.deploy.runner import Runner
from lepton_fed.deploy.submit import write_app

CLIENT = """\
import os
from pathlib import Path
from flwr.app import Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()

@app.query()
def query(msg, context):
    Path({marker!r}).write_text("ran")
    return Message(RecordDict({{"metrics": MetricRecord({{"pid": os.getpid()}})}}), reply_to=msg)
"""


@pytest.fixture
def identity():
    from flwr.supercore.task_identity import TaskIdentity

    old = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 11, 22, 33
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = old


def test_allowlisted_fab_runs_its_own_clientapp_in_a_child(tmp_path, identity):
    from flwr.app import Context, Message, RecordDict

    marker = tmp_path / "marker"
    app = write_app(tmp_path / "custom")
    py = app / "pyproject.toml"
    py.write_text(py.read_text().replace('clientapp = "lepton_fed.client.app:app"',
                                         'clientapp = "custom_pkg.client:app"'))
    (app / "custom_pkg").mkdir()
    (app / "custom_pkg" / "__init__.py").write_text("")
    (app / "custom_pkg" / "client.py").write_text(CLIENT.format(marker=str(marker)))
    content = build_fab_from_disk(app)
    digest = hashlib.sha256(content).hexdigest()

    msg = Message(RecordDict(), dst_node_id=33, message_type="query")
    msg.metadata.__dict__["_message_id"] = msg.object_id
    ctx = Context(run_id=22, node_id=33, node_config={}, state=RecordDict(), run_config={})
    run = SimpleNamespace(fab_id="lepton-fed/lepton-fed-app", fab_version="0.1.0")
    runner = Runner(runtime_address="127.0.0.1:1", auth_secret=None, allow_hashes=[digest],
                    work_dir=tmp_path / "work")
    reply, _ = runner._allowlisted(content, digest, run, msg, ctx)

    assert marker.read_text() == "ran"
    assert int(reply.content["metrics"]["pid"]) != os.getpid()  # not in the runner's process
    assert any((tmp_path / "work" / "flwr_home" / "apps").iterdir())  # installed under work_dir


def test_pinned_path_is_the_installed_clientapp():
    import lepton_fed.client.app as installed

    runner = Runner(runtime_address="127.0.0.1:1", auth_secret=None, work_dir=None)  # type: ignore[arg-type]
    assert runner._pinned() is installed.app
