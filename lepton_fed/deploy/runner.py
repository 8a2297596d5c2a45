"""The node's ClientApp runner: Flower's SuperExec + ``flwr-clientapp``, with pinned code.

A SuperNode started with ``--isolation process`` runs no app code itself: it queues one
task per message on its local Runtime API (``127.0.0.1``), and some other process must
acquire the task, pull the message, context and app package (FAB), run the ClientApp and
push the reply. Flower's own ``flower-superexec`` starts ``flwr-clientapp`` per task,
which *installs the FAB and imports whatever ClientApp it names*. This runner does the
same protocol (the same Flower client functions) with one difference: it decides with
:func:`lepton_fed.deploy.fab_check.check_fab` what may run, before anything is imported:

* pinned FAB -> the lepton-fed ClientApp installed on this node runs, in this process
  (long-lived, so torch and the data stay loaded between messages);
* allowlisted FAB (operator-listed sha256) -> that FAB's ClientApp runs in a fresh
  child process, installed under the runner's work directory;
* anything else -> refused: an ``INVALID_FAB`` error reply, and the FAB's sha256 and the
  reason in this node's log.

Only this runner can take tasks: every ``AcquireTask`` call is HMAC-signed with the
SuperExec secret that ``lepton-fed node join`` gave the SuperNode and the runner.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

__all__ = ["Runner", "main"]

log = logging.getLogger("lepton_fed.runner")
_ACQUIRE = "/flwr.proto.Runtime/AcquireTask"


class Runner:
    """Polls a SuperNode's Runtime API and runs each ClientApp task (see module doc).

    Args:
        runtime_address: ``host:port`` of the SuperNode's Runtime API (loopback).
        auth_secret: the SuperExec shared secret (signs task acquisition), or None.
        allow_hashes: FAB sha256 digests whose own code may run.
        work_dir: where allowlisted FABs are installed.
        poll_interval: seconds between polls when idle.
    """

    def __init__(
        self,
        *,
        runtime_address: str,
        auth_secret: bytes | None,
        allow_hashes: Sequence[str] = (),
        work_dir: Path,
        poll_interval: float = 0.2,
    ) -> None:
        from lepton_fed.deploy.fab_check import normalize_hash

        self.address = runtime_address
        self.secret = auth_secret
        self.allow = [normalize_hash(h) for h in allow_hashes]
        self.work_dir = work_dir
        self.poll = poll_interval
        self._app: Callable[..., Any] | None = None
        self.handled = 0

    def _client(self, interceptors: list[Any]) -> Any:
        import httpx
        from flwr.supercore.retry import RetryInvoker, exponential
        from flwr.supercore.runtime import RuntimeHttpClient

        invoker = RetryInvoker(lambda: exponential(max_delay=2), httpx.TransportError,
                               max_tries=6, max_time=30.0)
        return RuntimeHttpClient.from_server_address(
            server_address=self.address, insecure=True, root_certificates=None,
            interceptors=interceptors, retry_invoker=invoker)

    def run_forever(self, stop: threading.Event) -> None:
        """Acquire and run tasks until ``stop`` is set."""
        import httpx
        from flwr.proto.runtime_pb2 import AcquireTaskRequest
        from flwr.supercore.constant import TaskType
        from flwr.supercore.interceptors import (
            RuntimeVersionHttpInterceptor,
            SuperExecAuthHttpInterceptor,
        )

        interceptors: list[Any] = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
        if self.secret:
            interceptors.append(SuperExecAuthHttpInterceptor(
                master_secret=self.secret, protected_methods=frozenset({_ACQUIRE})))
        client = self._client(interceptors)
        request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP.value])
        waiting = False
        try:
            while not stop.is_set():
                try:
                    res = client.AcquireTask(request)
                except httpx.HTTPError as e:
                    if not waiting:
                        log.info("waiting for the SuperNode's Runtime API at %s (%s)", self.address, e)
                        waiting = True
                    stop.wait(1.0)
                    continue
                waiting = False
                if res.HasField("task") and res.token:
                    self.handle(res.token)
                else:
                    stop.wait(self.poll)
        finally:
            client.close()

    def handle(self, token: str) -> None:
        """Run one acquired task (pull, check, execute, push); never raises."""
        from flwr.app import Error, Message
        from flwr.common.constant import ErrorCode, SubStatus
        from flwr.supercore.heartbeat import HeartbeatSender
        from flwr.supercore.interceptors import (
            RuntimeTokenHttpInterceptor,
            RuntimeVersionHttpInterceptor,
        )
        from flwr.supernode.runtime.run_clientapp import (
            pull_task_input,
            push_message,
            push_task_output,
        )

        from lepton_fed.deploy.fab_check import check_fab

        client = self._client([RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                               RuntimeTokenHttpInterceptor(token)])
        beat = HeartbeatSender(_heartbeat(client))
        beat.start()
        message = context = reply = None
        status, details = SubStatus.FAILED, "task failed before the message was read"
        try:
            message, context, run, fab = pull_task_input(client)
            verdict = check_fab(fab.content, allow_hashes=self.allow)
            if not verdict.accepted:
                details = (f"this node refused the app package of run {run.run_id}: FAB sha256 "
                           f"{verdict.sha256}: {verdict.reason}")
                log.error("REFUSED %s", details)
                reply = Message(Error(code=ErrorCode.INVALID_FAB, reason=details), reply_to=message)
            else:
                log.info("run %s: %s (%s) FAB sha256 %s", run.run_id, message.metadata.message_type,
                         verdict.mode, verdict.sha256[:16])
                if verdict.mode == "pinned":
                    reply = self._pinned()(message=message, context=context)
                else:
                    reply, context = self._allowlisted(fab.content, verdict.sha256, run, message, context)
                status, details = SubStatus.COMPLETED, ""
        except Exception as ex:  # noqa: BLE001 - report to the server, keep serving
            log.exception("ClientApp task failed")
            details = f"{type(ex).__name__}: {ex}"
            if message is not None:
                reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details),
                                reply_to=message)
        finally:
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
                push_task_output(client, context, status, details)
            except Exception:  # noqa: BLE001
                log.exception("could not push the reply to the SuperNode")
            beat.stop()
            client.close()
            self.handled += 1

    def _pinned(self) -> Callable[..., Any]:
        if self._app is None:
            from lepton_fed.client.app import app

            self._app = app
        return self._app

    def _allowlisted(self, content: bytes, digest: str, run: Any, message: Any,
                     context: Any) -> tuple[Any, Any]:
        from flwr.supercore.task_identity import TaskIdentity

        ids = (TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id)
        payload = pickle.dumps((content, digest, run.fab_id, run.fab_version, message, context,
                                ids, str(self.work_dir / "flwr_home")))
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            out = pool.submit(_run_fab_app, payload).result()
        reply, new_context = pickle.loads(out)
        return reply, new_context


def _heartbeat(client: Any) -> Callable[[], bool]:
    """Task heartbeat that reports failure instead of signalling this process."""
    import httpx
    from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest

    def beat() -> bool:
        try:
            return bool(client.SendTaskHeartbeat(SendTaskHeartbeatRequest()).success)
        except httpx.HTTPError:
            return False

    return beat


def _run_fab_app(payload: bytes) -> bytes:
    """In a fresh child process: install an allowlisted FAB and run its ClientApp."""
    content, digest, fab_id, fab_version, message, context, ids, home = pickle.loads(payload)
    os.environ["FLWR_HOME"] = home
    from flwr.cli.install import install_from_fab
    from flwr.clientapp.utils import get_load_client_app_fn
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = ids
    install_from_fab(content, skip_prompt=True)
    app = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)(
        fab_id, fab_version, digest)
    reply = app(message=message, context=context)
    return pickle.dumps((reply, context))


def main(argv: list[str] | None = None) -> int:
    """``python -m lepton_fed.deploy.runner``: started by ``lepton-fed node join``."""
    p = argparse.ArgumentParser(prog="lepton-fed-runner", description=__doc__.splitlines()[0])
    p.add_argument("--runtime-api-address", required=True)
    p.add_argument("--superexec-auth-secret-file", type=Path)
    p.add_argument("--allow-fab-hash", action="append", default=[])
    p.add_argument("--work-dir", type=Path, required=True)
    p.add_argument("--parent-pid", type=int)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s [lepton-fed runner] %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if a.parent_pid:
        _watch_parent(a.parent_pid, stop)
    secret = a.superexec_auth_secret_file.read_bytes() if a.superexec_auth_secret_file else None
    runner = Runner(runtime_address=a.runtime_api_address, auth_secret=secret,
                    allow_hashes=a.allow_fab_hash, work_dir=a.work_dir)
    log.info("serving ClientApp tasks from %s (pinned app: %s; allowlisted FABs: %d)",
             a.runtime_api_address, "lepton_fed.client.app:app", len(runner.allow))
    runner.run_forever(stop)
    return 0


def _watch_parent(pid: int, stop: threading.Event) -> None:
    def watch() -> None:
        while not stop.wait(0.5):
            if os.getppid() != pid:
                stop.set()

    threading.Thread(target=watch, daemon=True).start()


if __name__ == "__main__":
    raise SystemExit(main())
