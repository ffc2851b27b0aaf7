"""``ovdiv demo``: the whole pipeline on the embedded synthetic data, on a CPU, in minutes.

Steps (each reported through the progress callback, each skipped when its output already exists so
an interrupted demo resumes):

1. train two tiny members of different families independently (residual, fire-module) and a
   jointly trained GNCL pair (grouped-conv residual + inverted-residual; Eq. 2, λ = 0.2, averaging)
   on ``demo:train`` (the tiny ViT is left out: it needs far more CPU time to become useful);
2. export each to ONNX and OpenVINO IR FP32 (self-checked against torch), plus an INT8 IR of the
   first member (NNCF post-training quantization on ``demo:train`` images);
3. evaluate the pool of IRs (the INT8 one included) on ``demo`` and the paper's four corruptions at
   64 px with saliency attributions, scoring every 3-member ensemble (10 subsets of 5 members);
4. check the demo policy (``ovdiv/demo_policy.json``), write ``report.html``.

This module orchestrates the L2/L3 packages (training, export, evaluation, report) the way a user
would; it holds no algorithm of its own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovdiv.atomic import write_json
from ovdiv.types import Progress, ProgressCallback, no_progress

__all__ = ["DEMO_DATASETS", "DEMO_POLICY", "DemoSummary", "run_demo"]

log = logging.getLogger("ovdiv.demo")

DEMO_DATASETS = ("demo", "lines1.6@demo", "plasma4.0@demo", "checkerboard4.0@demo", "waterdrop7.0@demo")
DEMO_POLICY = Path(__file__).with_name("demo_policy.json")
_RECIPES = Path(__file__).resolve().parent / "_recipes"  # the repository's models/ (a link; a copy in wheels)
_INDEPENDENT = ("tiny_resnet", "tiny_squeezenet")
_JOINT = ("tiny_resnext", "tiny_mnasnet")


@dataclass
class DemoSummary:
    """Where the demo put everything, and its headline figures."""

    out_dir: Path
    report: Path
    results: Path
    verdict: Path
    passed: bool
    members: list[Path]
    timings: dict[str, float] = field(default_factory=dict)
    headline: list[dict[str, Any]] = field(default_factory=list)


def _stage(progress: ProgressCallback, name: str, i: int, n: int) -> float:
    progress(Progress("demo", i, n, name))
    log.info("demo step %d/%d: %s", i + 1, n, name)
    return time.perf_counter()


def run_demo(
    out_dir: str | Path = "demo",
    *,
    train_images: int = 2500,
    eval_images: int = 400,
    attribution_samples: int = 64,
    epochs: int | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> DemoSummary:
    """Run the demo end to end and return where its outputs are.

    Args:
        out_dir: Output folder: ``runs/`` (training), ``members/`` (ONNX/IR + cards), ``results/``
            (results.json/csv, extras, verdict.json, report.html), ``cache/``.
        train_images: Training images of ``demo:train`` per member.
        eval_images: Images of each evaluation dataset.
        attribution_samples: Images per dataset with saliency maps.
        epochs: Override of the tiny recipes' epochs (None = the recipes').
        seed: Seed of data and training.
        progress: Progress callback (task ``"demo"`` plus the sub-steps' own tasks).

    Returns:
        A :class:`DemoSummary`.
    """
    from ovdiv.evaluate import evaluate
    from ovdiv.evaluate.policy import Policy
    from ovdiv.export import export_model
    from ovdiv.models.recipes import load_recipe
    from ovdiv.report import write_report
    from ovdiv.train import DataSource, EnsembleConfig, train_ensemble, train_member

    progress = progress or no_progress
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    n_steps = 5
    data = DataSource(spec="demo:train", val_spec="demo", limit=train_images, val_limit=eval_images, seed=seed)

    # 1. members --------------------------------------------------------------------------------
    t0 = _stage(progress, "train independent members", 0, n_steps)
    checkpoints: dict[str, Path] = {}
    for name in _INDEPENDENT:
        recipe = load_recipe(_RECIPES / "tiny" / f"{name}.json")
        if epochs is not None:
            recipe = dataclasses.replace(recipe, epochs=epochs)
        run = out / "runs" / name
        checkpoints[name] = train_member(recipe, out_dir=run, data=data, device="cpu", progress=progress).checkpoint
    timings["train_independent"] = time.perf_counter() - t0

    t0 = _stage(progress, "train a GNCL pair jointly", 1, n_steps)
    raw = json.loads((_RECIPES / "ensembles" / "tiny" / "gncl_average.json").read_text(encoding="utf-8"))
    raw.update(name="demo_gncl_pair", members=[{"name": a, "arch": a} for a in _JOINT])
    cfg = EnsembleConfig.from_dict(raw, source="demo GNCL pair")
    joint = train_ensemble(
        cfg, out_dir=out / "runs" / "gncl_pair", data=data, device="cpu", epochs=epochs, progress=progress
    )
    for spec, path in zip(cfg.members, joint.members, strict=True):
        checkpoints[f"gncl_{spec.name}"] = path
    timings["train_joint"] = time.perf_counter() - t0

    # 2. export ---------------------------------------------------------------------------------
    t0 = _stage(progress, "export to ONNX + IR (one INT8)", 2, n_steps)
    from ovdiv.data import load

    calib = load("demo:train", limit=300, seed=seed + 1)[0]
    members: list[Path] = []
    member_dir = out / "members"
    for i, (name, ckpt) in enumerate(checkpoints.items()):
        precisions = ("fp32", "int8") if i == 0 else ("fp32",)
        xml = member_dir / f"{name}_fp32.xml"
        if not xml.is_file() or (i == 0 and not (member_dir / f"{name}_int8.xml").is_file()):
            export_model(
                ckpt,
                member_dir,
                name=name,
                formats=("onnx", "ir"),
                precisions=precisions,
                calib=calib,
                progress=progress,
            )
        members += sorted(member_dir.glob(f"{name}_*.xml"))
    timings["export"] = time.perf_counter() - t0

    # 3. evaluate -------------------------------------------------------------------------------
    t0 = _stage(progress, "evaluate every 3-member ensemble", 3, n_steps)
    results_dir = out / "results"
    result = evaluate(
        members,
        list(DEMO_DATASETS),
        attribution="saliency",
        subset_size=3,
        limit=eval_images,
        attribution_samples=attribution_samples,
        consensus=("average", "majority"),
        cka_samples=128,
        cache_dir=out / "cache",
        seed=seed,
        out=results_dir,
        progress=progress,
    )
    timings["evaluate"] = time.perf_counter() - t0

    # 4. certify + report -----------------------------------------------------------------------
    t0 = _stage(progress, "certify + report", 4, n_steps)
    verdict = Policy.from_file(DEMO_POLICY).check(result)
    verdict_path = verdict.to_json(results_dir / "verdict.json")
    report = write_report(results_dir, verdict=verdict.to_dict())
    timings["report"] = time.perf_counter() - t0
    progress(Progress("demo", n_steps, n_steps, "done"))
    write_json(out / "timings.json", timings)
    return DemoSummary(
        out_dir=out,
        report=report,
        results=results_dir / "results.json",
        verdict=verdict_path,
        passed=verdict.passed,
        members=members,
        timings=timings,
        headline=_headline(result.rows),
    )


def _headline(rows: Any) -> list[dict[str, Any]]:
    """Per dataset: best member top-1, best ensemble top-1 and how many ensembles beat their best member."""
    out = []
    rows = [r.to_dict() if hasattr(r, "to_dict") else dict(r) for r in rows]
    for ds in DEMO_DATASETS:
        members = [r["value"] for r in rows if r["dataset"] == ds and r["member"] and r["metric"] == "top1"]
        ens = [r["value"] for r in rows if r["dataset"] == ds and r["ensemble"] and r["metric"] == "ensemble_top1"]
        imp = [r["value"] for r in rows if r["dataset"] == ds and r["ensemble"] and r["metric"] == "improvement"]
        members = [v for v in members if v is not None]
        ens = [v for v in ens if v is not None]
        imp = [v for v in imp if v is not None]
        out.append(
            {
                "dataset": ds,
                "best_member_top1": max(members, default=float("nan")),
                "best_ensemble_top1": max(ens, default=float("nan")),
                "ensembles_improving": sum(v > 0 for v in imp),
                "ensembles": len(imp),
            }
        )
    return out
