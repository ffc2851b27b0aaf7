"""Connecting to Ray for ``--executor ray``: the shared plumbing of the evaluation and data-preparation executors.

Ray is an optional dependency (``pip install 'ovdiv[ray]'``); it is imported only inside these functions, so
``import ovdiv`` never imports it. What lives here is the part both executors share and that Ray does not do
by itself in the way ovdiv needs:

* :func:`connect` — join a running cluster (``--ray-address ADDR``, ``auto``/``$RAY_ADDRESS``) or start a
  quiet local Ray in this process when none is running; shut down only what it started.
* :func:`ray_get` — ``ray.get`` that turns a task's real :class:`~ovdiv.errors.OvdivError` back into that
  error (the same one line as the local engine) instead of Ray's wrapped traceback.
* :func:`is_lost` — whether an exception means lost infrastructure (a worker or node died, an object was
  lost), i.e. work to submit again, as opposed to an application error that must fail the run once.
* :func:`cluster_evidence` — nodes and CPUs of the cluster, for the results' ``metadata["executor"]``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ovdiv.errors import ConfigError, NotAvailableError, OvdivError

__all__ = ["EXECUTORS", "check_executor", "connect", "cluster_evidence", "import_ray", "is_lost", "ray_get"]

log = logging.getLogger("ovdiv.ray")

EXECUTORS = ("local", "ray")
INSTALL_HINT = "pip install 'ovdiv[ray]'"


def check_executor(executor: str | None, ray_address: str | None = None) -> str:
    """Validate ``--executor`` (``local`` or ``ray``) and ``--ray-address``; returns the executor name."""
    name = "local" if executor is None else str(executor).lower()
    if name not in EXECUTORS:
        raise ConfigError(f"--executor {executor!r} is not valid", f"choose one of {list(EXECUTORS)}")
    if ray_address is not None and name != "ray":
        raise ConfigError("--ray-address needs --executor ray", "add --executor ray or drop --ray-address")
    return name


def import_ray() -> Any:
    """The ``ray`` module, or one :class:`NotAvailableError` naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise NotAvailableError(
            f"--executor ray needs the Ray package, which is not installed ({exc})", INSTALL_HINT
        ) from None
    return ray


@dataclass
class RaySession:
    """A connection made by :func:`connect`.

    Attributes:
        ray: The ``ray`` module.
        address: What was asked for (``auto``, an address, or ``local`` for a Ray started in-process).
        started: True when :func:`connect` started Ray in this process (and shuts it down after).
    """

    ray: Any
    address: str
    started: bool


@contextlib.contextmanager
def connect(address: str | None = None) -> Iterator[RaySession]:
    """Join a Ray cluster, or start a local one in-process, for the duration of the block.

    Args:
        address: ``None``/``"auto"``: the cluster named by ``$RAY_ADDRESS`` or a running local cluster, else a
            new in-process Ray using this machine's CPUs; ``"local"``: always a new in-process Ray; anything
            else (``HOST:PORT``, ``ray://HOST:PORT``): that cluster, or a :class:`ConfigError`.

    Yields:
        A :class:`RaySession`. An already initialised Ray (e.g. a notebook's) is used as is and left running.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield RaySession(ray, "existing", started=False)
        return
    quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False, "configure_logging": True}
    asked = "auto" if address is None else str(address)
    started = False
    if asked == "local":
        _start_local(ray, quiet)
        started = True
    elif asked == "auto":
        try:
            ray.init(address="auto", **quiet)
        except ConnectionError:  # nothing running: a local Ray in this process
            log.info("no running Ray cluster found; starting a local one")
            _start_local(ray, quiet)
            started = True
    else:
        try:
            _probe(asked)  # ray.init retries an unreachable address for minutes: fail fast instead
            ray.init(address=asked, **quiet)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ConfigError(
                f"cannot connect to the Ray cluster at {asked!r} ({str(exc).splitlines()[0][:200]})",
                "start it with `ray start --head` or pass --ray-address auto",
            ) from None
    try:
        yield RaySession(ray, "local" if started and asked != "auto" else asked, started)
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()


def _probe(address: str, timeout: float = 5.0) -> None:
    """Raise :class:`ConnectionError` unless ``[ray://]HOST:PORT`` accepts a TCP connection within ``timeout``."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"not HOST:PORT: {address!r}")
    with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
        pass


def _start_local(ray: Any, quiet: dict[str, Any]) -> None:
    # Workers are children of this process and inherit its environment (PYTHONPATH included).
    ray.init(address="local", include_dashboard=False, **quiet)


def ray_get(ray: Any, refs: Any, timeout: float | None = None) -> Any:
    """``ray.get`` that re-raises a task's :class:`OvdivError` as itself (one line, as the local engine)."""
    try:
        return ray.get(refs, timeout=timeout)
    except ray.exceptions.RayTaskError as exc:
        cause = _root_cause(ray, exc)
        if isinstance(cause, OvdivError):
            raise cause from None
        raise


def _root_cause(ray: Any, exc: BaseException) -> BaseException:
    """The innermost cause of (nested) ``RayTaskError`` s: a task that failed because a task it waited on did."""
    seen = 0
    while isinstance(exc, ray.exceptions.RayTaskError) and getattr(exc, "cause", None) is not None and seen < 16:
        exc = exc.cause
        seen += 1
    return exc


def is_lost(ray: Any, exc: BaseException) -> bool:
    """True when ``exc`` means lost infrastructure (worth resubmitting), not an application error."""
    ex = ray.exceptions
    lost = (
        ex.RayActorError,
        ex.WorkerCrashedError,
        ex.NodeDiedError,
        ex.ObjectLostError,
        ex.OwnerDiedError,
        ex.ObjectFetchTimedOutError,
        ex.LocalRayletDiedError,
    )
    return isinstance(exc, lost) or isinstance(_root_cause(ray, exc), lost)


def cluster_evidence(ray: Any) -> dict[str, Any]:
    """``{"nodes": alive node count, "cpus": total CPUs, "gpus": total GPUs}`` of the connected cluster."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    res = ray.cluster_resources()
    return {
        "nodes": len(nodes),
        "cpus": float(res.get("CPU", 0.0)),
        "gpus": float(res.get("GPU", 0.0)),
        "node_cpus": sorted(float(n.get("Resources", {}).get("CPU", 0.0)) for n in nodes),
    }
