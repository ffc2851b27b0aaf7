"""--executor ray on a real multi-process Ray cluster (head + one worker node on loopback, started with `ray start`).

Every run on the cluster is compared with the local engine: results.json (minus the fields that record when
and where it ran), results.csv and every cache file (bytes; .npz archives member by member, since numpy stamps
the zip entries with the write time) must be identical.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from ovdiv_tests_tiny_members import NaNNet, export_ir  # type: ignore[import-not-found]

from ovdiv.errors import ConfigError, MemberError, NotAvailableError
from ovdiv.evaluate import ArrayDataset, evaluate
from ovdiv.types import Progress

REPO = Path(__file__).resolve().parents[2]
VOLATILE = ("created", "timings", "executor")  # when and where a run happened; everything else must match
# (plus each gradient check's "seconds": its wall time, in results.json and in the cached check.json)
KW = dict(attribution="saliency", cka_samples=16, chunk_size=16, batch_size=8, bootstrap=50)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _raylet_pids() -> set[int]:
    pids = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if cmd.endswith(b"/raylet"):
                pids.add(int(p.name))
    return pids


def _ray_cli() -> str:
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.is_file() else "ray"


@pytest.fixture(scope="module")
def cluster():
    """A head node and one worker node (1 CPU each) on 127.0.0.1, torn down after the module.

    The worker node is started with ``OVDIV_RAY_NO_SHARED=1``: its actors behave as on a node without the
    shared data folder (prepared images reach them through the object store, the head's read the folder).
    """
    pytest.importorskip("ray")
    tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths must stay < 107 chars
    port = _free_port()
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_AUTH_MODE", "disabled")  # a throwaway loopback cluster: no token files to share with the driver
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    common += ["--object-store-memory", str(100 * 1024 * 1024)]
    ray_cli = _ray_cli()
    before = _raylet_pids()
    try:
        subprocess.run(
            [ray_cli, "start", "--head", "--port", str(port), "--include-dashboard=false", "--temp-dir", str(tmp),
             *common],
            env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        head_raylets = _raylet_pids() - before
        subprocess.run(
            [ray_cli, "start", "--address", f"127.0.0.1:{port}", *common],
            env={**env, "OVDIV_RAY_NO_SHARED": "1"}, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        worker_raylets = _raylet_pids() - before - head_raylets
        yield {"address": f"127.0.0.1:{port}", "worker_raylet": sorted(worker_raylets)}
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)
        mp.undo()


@pytest.fixture(scope="module")
def data(tiny_pool):
    return ArrayDataset(tiny_pool.images, tiny_pool.labels, name="tiny")


@pytest.fixture(scope="module")
def reference(tiny_pool, data, tmp_path_factory):
    """The local engine's run: out folder and cache."""
    root = tmp_path_factory.mktemp("local")
    paths = [tiny_pool.ir[n] for n in ("m1", "m2", "m4")]
    res = evaluate(paths, [data], cache_dir=root / "cache", out=root / "out", **KW)
    assert res.metadata["executor"] == {"kind": "local"}
    return root


def _tree(root: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        rel = str(p.relative_to(root))
        if p.name == "check.json":  # a gradient check's evidence records its wall time ("seconds")
            out[rel] = {k: v for k, v in json.loads(p.read_text()).items() if k != "seconds"}
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                out[rel] = {k: (z[k].dtype.str, z[k].shape, z[k].tobytes()) for k in z.files}
        else:
            out[rel] = p.read_bytes()
    return out


def _assert_identical(local: Path, other: Path, also: tuple[str, ...] = ()) -> None:
    a = json.loads((local / "out" / "results.json").read_text())
    b = json.loads((other / "out" / "results.json").read_text())
    for key in (*VOLATILE, *also):
        a["metadata"].pop(key, None)
        b["metadata"].pop(key, None)
    for doc in (a, b):
        for check in doc["metadata"]["gradient_check"].values():
            check.pop("seconds")
    for key in a["metadata"].keys() | b["metadata"].keys():
        assert a["metadata"].get(key) == b["metadata"].get(key), key
    assert a == b
    assert (local / "out" / "results.csv").read_bytes() == (other / "out" / "results.csv").read_bytes()
    ta, tb = _tree(local / "out" / "extras"), _tree(other / "out" / "extras")
    assert ta == tb
    ca, cb = _tree(local / "cache"), _tree(other / "cache")
    assert ca.keys() == cb.keys() and len(ca) >= 10
    for k in ca:
        assert ca[k] == cb[k], k


def test_evaluate_on_cluster_is_identical_to_local(cluster, tiny_pool, data, reference, tmp_path):
    paths = [tiny_pool.ir[n] for n in ("m1", "m2", "m4")]
    events: list[Progress] = []
    res = evaluate(
        paths, [data], cache_dir=tmp_path / "cache", out=tmp_path / "out", executor="ray",
        ray_address=cluster["address"], progress=events.append, **KW,
    )  # fmt: skip
    _assert_identical(reference, tmp_path)
    ex = res.metadata["executor"]
    assert ex["kind"] == "ray" and ex["nodes"] == 2 and ex["cpus"] == 2.0
    assert len(ex["per_node"]) == 2  # actors spread over both nodes (so losing one loses work in flight)
    placed = sorted(m["member"] for node in ex["per_node"] for m in node["members"])
    assert placed == ["m1", "m2", "m4"]
    assert all(m["inference_precision"] == "f32" for node in ex["per_node"] for m in node["members"])
    # 3 actors share 2 one-CPU nodes: each declares 1/3 CPU and compiles with 1 OpenVINO thread, not the node's
    assert ex["cpus_per_actor"] < 1 and ex["threads_per_actor"] == 1
    assert [m["threads"] for node in ex["per_node"] for m in node["members"]] == [1, 1, 1]
    # in-memory data: through the object store
    assert ex["data_transport"] == {
        data.manifest["spec"]: {"transport": "object-store", "shared_actors": 0, "actors": 3}
    }
    logits = [e for e in events if e.task.startswith("logits @ tiny (ray")]
    assert logits[-1].completed == logits[-1].total == 3 * 6  # one bar over every (member, chunk) unit
    # a rerun computes nothing: everything is read from the cache the driver wrote
    again = evaluate(paths, [data], cache_dir=tmp_path / "cache", executor="ray", ray_address=cluster["address"], **KW)
    assert again.metadata["cache"]["misses"] == {}


def test_data_prepare_on_cluster_is_identical(cluster, tmp_path):
    from ovdiv.data import prepare

    kw = dict(limit=40, seed=3, batch_size=8)
    local = prepare("lines1.6@demo", cache_dir=tmp_path / "l", **kw)
    on_ray = prepare("lines1.6@demo", cache_dir=tmp_path / "r", executor="ray", ray_address=cluster["address"], **kw)
    assert local.path.name == on_ray.path.name
    for f in ("images.npy", "labels.npy"):
        assert (local.path / f).read_bytes() == (on_ray.path / f).read_bytes()
    ma, mb = dict(local.manifest), dict(on_ray.manifest)
    ma.pop("created"), mb.pop("created")
    assert ma == mb


def test_prepared_data_shared_or_object_store_identical(cluster, tiny_pool, tmp_path, monkeypatch):
    """A prepared (memmapped) dataset: the actor on the head reads the shared folder, the one on the worker
    node, which cannot (``OVDIV_RAY_NO_SHARED``), gets the object store; the bytes are the local run's. An
    actor sent the folder but unable to read it (restarted elsewhere) makes the driver fall back, same bytes.
    (A folder the driver cannot vouch for and in-memory data never use the shared path: the tests above.)"""
    from ovdiv.data import prepare
    from ovdiv.evaluate.executor_ray import RayEvaluator, shared_images_of

    ds = prepare("lines1.6@demo", cache_dir=tmp_path / "data", limit=32, seed=3, batch_size=8)
    paths = [tiny_pool.ir[n] for n in ("m1", "m2")]
    kw = dict(KW, cka_samples=0, gradient_check="off", bootstrap=20)
    evaluate(paths, [ds], cache_dir=tmp_path / "l" / "cache", out=tmp_path / "l" / "out", **kw)
    res = evaluate(
        paths, [ds], cache_dir=tmp_path / "r" / "cache", out=tmp_path / "r" / "out", executor="ray",
        ray_address=cluster["address"], **kw,
    )  # fmt: skip
    _assert_identical(tmp_path / "l", tmp_path / "r")
    ex = res.metadata["executor"]
    assert [len(n["members"]) for n in ex["per_node"]] == [1, 1]  # one actor on the head, one on the worker
    assert ex["data_transport"] == {ds.spec: {"transport": "mixed", "shared_actors": 1, "actors": 2}}
    # pretend both actors can read the folder: the worker node's raises, the driver falls back and resubmits
    probed = RayEvaluator._sources

    def everyone_shared(self, d):
        sources = probed(self, d)
        for j in sources:
            sources[j] = shared_images_of(d)
        return sources

    monkeypatch.setattr(RayEvaluator, "_sources", everyone_shared)
    res = evaluate(
        paths, [ds], cache_dir=tmp_path / "f" / "cache", out=tmp_path / "f" / "out", executor="ray",
        ray_address=cluster["address"], **kw,
    )  # fmt: skip
    _assert_identical(tmp_path / "l", tmp_path / "f")
    assert res.metadata["executor"]["data_transport"][ds.spec]["fell_back_to_object_store"] is True


def test_real_errors_fail_once_with_the_local_message(cluster, tiny_pool, data, tmp_path):
    # raised inside a member actor (IG with an unknown integration method): the local ConfigError, unwrapped
    paths = [tiny_pool.ir[n] for n in ("m1", "m2")]
    kw = dict(KW, attribution="ig", attribution_params={"method": "bogus"}, gradient_check="off")
    with pytest.raises(ConfigError) as local:
        evaluate(paths, [data], cache_dir=tmp_path / "l", **kw)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as remote:
        evaluate(paths, [data], cache_dir=tmp_path / "r", executor="ray", ray_address=cluster["address"], **kw)
    assert type(remote.value) is ConfigError and str(remote.value) == str(local.value)
    assert time.perf_counter() - t0 < 60
    # a member with NaN logits: the local engine's one MemberError naming it
    nan = export_ir(NaNNet(), tmp_path / "nan.xml")
    with pytest.raises(MemberError) as local_nan:
        evaluate([tiny_pool.ir["m1"], nan], [data], cache_dir=tmp_path / "l", attribution="none", cka_samples=0)
    with pytest.raises(MemberError) as remote_nan:
        evaluate(
            [tiny_pool.ir["m1"], nan], [data], cache_dir=tmp_path / "r", attribution="none", cka_samples=0,
            executor="ray", ray_address=cluster["address"],
        )  # fmt: skip
    assert str(remote_nan.value) == str(local_nan.value) and "nan" in str(local_nan.value)


def test_shared_images_probe_and_read(tiny_pool, tmp_path, monkeypatch):
    """Without Ray: the actor body reads a prepared folder's rows itself, with the bytes of the memmap."""
    import dataclasses

    from ovdiv.data import prepare
    from ovdiv.evaluate.executor_ray import (
        MemberWorker,
        SharedDataUnavailable,
        SharedImages,
        open_shared,
        shared_images_of,
    )

    ds = prepare("lines1.6@demo", cache_dir=tmp_path, limit=24, seed=1, batch_size=8)
    src = shared_images_of(ds)
    assert src is not None and (src.start, src.stop) == (0, 24) and src.manifest_hash == ds.manifest_hash
    assert shared_images_of(ArrayDataset(np.asarray(ds.images), ds.labels)) is None  # in memory: no folder
    assert shared_images_of(dataclasses.replace(ds, path=tmp_path / "gone")) is None
    assert open_shared(dataclasses.replace(src, manifest_hash="0" * 64)) is None  # another dataset at that path
    assert open_shared(dataclasses.replace(src, nbytes=src.nbytes + 1)) is None
    monkeypatch.setenv("OVDIV_RAY_NO_SHARED", "1")
    assert open_shared(src) is None
    elsewhere = MemberWorker(str(tiny_pool.ir["m1"]), "m1", "CPU", "f32", "openvino", "saliency", 8)
    with pytest.raises(SharedDataUnavailable):  # an actor restarted on a node without the folder
        elsewhere.logits(src, 0)
    monkeypatch.delenv("OVDIV_RAY_NO_SHARED")
    w = MemberWorker(str(tiny_pool.ir["m1"]), "m1", "CPU", "f32", "openvino", "saliency", 8, threads=1)
    assert w.probe_shared(src)
    part = SharedImages(src.folder, src.manifest_hash, src.nbytes, 8, 24)
    rows = np.ascontiguousarray(ds.images[8:24])
    assert np.array_equal(w.logits(part, 8), w.logits(rows, 8))
    target = np.zeros(8, dtype=np.int64)
    assert np.array_equal(w.attribute(part, 4, 8, target, {}), w.attribute(rows, 4, 8, target, {}))
    assert w.member().compiled.get_property("INFERENCE_NUM_THREADS") == 1


@pytest.mark.slow  # ~30 s: node death detection + actor restart
def test_lost_node_mid_run_still_identical(cluster, tiny_pool, data, reference, tmp_path):
    """SIGKILL the worker node's raylet once the first units have landed: its units run again elsewhere."""
    assert len(cluster["worker_raylet"]) == 1
    paths = [tiny_pool.ir[n] for n in ("m1", "m2", "m4")]
    killed: list[int] = []

    def progress(p: Progress) -> None:
        if not killed and p.task.startswith("logits @") and p.completed >= 1 and p.detail != "cached":
            pid = cluster["worker_raylet"][0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    res = evaluate(
        paths, [data], cache_dir=tmp_path / "cache", out=tmp_path / "out", executor="ray",
        ray_address=cluster["address"], progress=progress, **KW,
    )  # fmt: skip
    assert killed
    _assert_identical(reference, tmp_path)
    assert len(res.metadata["executor"]["per_node"]) == 1  # every actor ended on the surviving node


@pytest.mark.slow
def test_interrupted_driver_resumes_from_cache(cluster, tiny_pool, data, reference, tmp_path):
    """The driver dies after a few units: a rerun reads them from the cache and ends identical to local."""
    paths = [tiny_pool.ir[n] for n in ("m1", "m2", "m4")]

    def interrupt(p: Progress) -> None:
        if p.task.startswith("logits @") and p.completed >= 4 and p.detail != "cached":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(
            paths, [data], cache_dir=tmp_path / "cache", executor="ray", ray_address=cluster["address"],
            progress=interrupt, **KW,
        )  # fmt: skip
    assert not (tmp_path / "out").exists()
    res = evaluate(
        paths, [data], cache_dir=tmp_path / "cache", out=tmp_path / "out", executor="ray",
        ray_address=cluster["address"], **KW,
    )  # fmt: skip
    assert res.metadata["cache"]["hits"]["logits"] >= 4
    _assert_identical(reference, tmp_path, also=("cache",))  # hit/miss counts differ on a resumed run, as locally


def test_without_ray_one_clear_error(monkeypatch, tiny_pool, data, tmp_path):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(NotAvailableError, match=r"pip install 'ovdiv\[ray\]'"):
        evaluate([tiny_pool.ir["m1"]], [data], cache_dir=tmp_path, executor="ray", attribution="none")
    from ovdiv.data import prepare

    with pytest.raises(NotAvailableError, match=r"pip install 'ovdiv\[ray\]'"):
        prepare("demo", limit=8, cache_dir=tmp_path, executor="ray")


def test_executor_options_are_checked(tiny_pool, data, tmp_path):
    with pytest.raises(ConfigError, match="--executor"):
        evaluate([tiny_pool.ir["m1"]], [data], cache_dir=tmp_path, executor="dask")
    with pytest.raises(ConfigError, match="--ray-address needs --executor ray"):
        evaluate([tiny_pool.ir["m1"]], [data], cache_dir=tmp_path, ray_address="auto")


def test_importing_ovdiv_does_not_import_ray():
    code = "import sys, ovdiv, ovdiv.evaluate, ovdiv.data, ovdiv.cli; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_cli_without_ray_is_one_line(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from ovdiv.cli import cli

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    args = ["data", "prepare", "demo", "--limit", "8", "--cache-dir", str(tmp_path), "--executor", "ray"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "pip install 'ovdiv[ray]'" in res.output
    res = CliRunner().invoke(cli, ["data", "prepare", "demo", "--executor", "dask"])
    assert res.exit_code == 2 and "dask" in res.output


def test_unreachable_ray_address_is_one_line_fast(tmp_path):
    """``ray.init`` retries an unreachable address for minutes; ovdiv probes it and fails at once (exit 2)."""
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "ovdiv", "data", "prepare", "demo", "--limit", "8", "--cache-dir", str(tmp_path),
           "--executor", "ray", "--ray-address", f"127.0.0.1:{port}"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"cannot connect to the Ray cluster at '127.0.0.1:{port}'" in proc.stderr
    assert "Traceback" not in proc.stderr and time.perf_counter() - t0 < 60
