"""The ``ovdiv`` command line.

Each command only parses its options, builds a config, calls ONE library function and renders the
result. No logic lives here. User errors (:class:`ovdiv.errors.OvdivError`) become one red line on
stderr and exit code 2 (``-v`` shows the traceback too).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from ovdiv.cli_output import EXIT_CODES_HELP, configure, console, emit_json, err_console, log_handler, progress_bar
from ovdiv.errors import NotAvailableError, OvdivError
from ovdiv.versions import __version__

log = logging.getLogger("ovdiv")


# ----------------------------------------------------------------------------------------------
# shared plumbing
# ----------------------------------------------------------------------------------------------
class _OvdivGroup(click.Group):
    """A click group that renders :class:`OvdivError` as one red line and exits 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OvdivError as exc:
            verbose = bool(ctx.find_root().params.get("verbose"))
            _fail(exc, verbose)
        except KeyboardInterrupt:
            err_console.print("interrupted", highlight=False)
            sys.exit(130)


def _fail(exc: OvdivError, verbose: bool) -> NoReturn:
    if verbose:
        err_console.print_exception()
    from rich.text import Text

    err_console.print(Text.assemble(("error:", "bold red"), f" {exc}"), highlight=False, soft_wrap=True)
    sys.exit(exc.exit_code)


def _setup_logging(verbose: int, log_file: Path | None) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose == 1 else logging.WARNING
    root = logging.getLogger("ovdiv")
    root.setLevel(logging.DEBUG if log_file else level)
    if verbose < 2:
        # third-party import-time chatter (nncf's torch-version notice, torch's CUDA_HOME notice) is noise here
        for name in ("nncf", "torch.utils.cpp_extension"):
            logging.getLogger(name).setLevel(logging.ERROR)
    handler = log_handler()
    handler.setLevel(level)
    root.addHandler(handler)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file, encoding="utf-8")
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)


def _not_available(what: str, issue: str) -> NoReturn:
    raise NotAvailableError(f"`ovdiv {what}` is not available yet in ovdiv {__version__}", f"tracked in {issue}")


def _csv_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


# ----------------------------------------------------------------------------------------------
# root
# ----------------------------------------------------------------------------------------------
@click.group(cls=_OvdivGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, "--version", prog_name="ovdiv")
@click.option("-v", "--verbose", count=True, help="More logging; -v also shows tracebacks of errors.")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), help="Write a DEBUG log here.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress on stderr (default: bars when stderr is a terminal, nothing otherwise).",
)
def cli(verbose: int, log_file: Path | None, progress: bool | None) -> None:
    """ovdiv: is an ensemble of deployed classifiers more resilient than its best member, and how diverse is it?

    Results go to stdout (--json: one JSON document and nothing else); logging, progress and errors go
    to stderr. Without a terminal, tables are printed at full width and colours are off (NO_COLOR is
    honoured everywhere).
    """
    configure(progress=progress)
    _setup_logging(verbose, log_file)


# ---- demo ------------------------------------------------------------------------------------
@cli.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo"), show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), help="Override the tiny recipes' epochs (faster, less accurate).")
@click.option("--eval-images", type=click.IntRange(min=10), default=400, show_default=True, help="Images per dataset.")
@click.option(
    "--train-images",
    type=click.IntRange(min=64),
    default=2500,
    show_default=True,
    help="Training images (fewer: smoke run).",
)
def demo(out: Path, epochs: int | None, eval_images: int, train_images: int) -> None:
    """Run the whole pipeline on the embedded synthetic data (CPU, minutes).

    Trains tiny members of different families (and a jointly trained GNCL pair), exports them to
    ONNX and OpenVINO IR (one INT8), evaluates every 3-member ensemble on the demo data and its four
    corruptions with saliency, checks a policy and writes report.html.
    """
    from rich.table import Table

    from ovdiv.demo import run_demo

    with progress_bar() as cb:
        summary = run_demo(out, epochs=epochs, eval_images=eval_images, train_images=train_images, progress=cb)
    table = Table(title="demo: best member vs best ensemble (top-1)", title_justify="left")
    for col in ("dataset", "best member", "best ensemble", "ensembles beating their best member"):
        table.add_column(col)
    for h in summary.headline:
        table.add_row(
            h["dataset"],
            f"{h['best_member_top1']:.3f}",
            f"{h['best_ensemble_top1']:.3f}",
            f"{h['ensembles_improving']}/{h['ensembles']}",
        )
    console.print(table)
    verdict = "[green]PASS[/]" if summary.passed else "[red]FAIL[/]"
    console.print(f"policy {verdict} ({summary.verdict})")
    console.print(f"members: {summary.out_dir / 'members'}")
    console.print(f"results: {summary.results}")
    console.print(f"[bold]report: {summary.report}[/]")
    console.print(f"took {sum(summary.timings.values()):.0f} s")


# ---- data ------------------------------------------------------------------------------------
@cli.group(cls=_OvdivGroup)
def data() -> None:
    """Dataset specs, prepared-data cache, contact sheets."""


@data.command("prepare")
@click.argument("specs", nargs=-1, required=True)
@click.option("--limit", type=click.IntRange(min=1), help="At most N images per dataset (a fixed subset).")
@click.option("--subset", type=click.Choice(["first", "random"]), help="Which N images (default: random for files).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help="Default $OVDIV_CACHE.")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), help="Default $OVDIV_DATA.")
@click.option("--seed", type=int, default=0, show_default=True, help="Dataset seed (per-image seeds derive from it).")
@click.option("--workers", type=click.IntRange(min=1), help="Decoding/corruption threads (default min(4, CPUs)).")
@click.option("--jpeg-quality", type=click.IntRange(1, 100), help="JPEG round-trip (85 mimics published C-bar).")
@click.option("--size", type=click.IntRange(min=16), help="Image side (files 224, demo 64).")
@click.option("--classes", type=click.Path(dir_okay=False, path_type=Path), help="imagefolder class list file.")
@click.option("--strict", is_flag=True, help="Fail on an unreadable image instead of skipping it.")
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: --workers threads; ray: one Ray task per chunk (same bytes).",
)
@click.option("--ray-address", help="Ray cluster for --executor ray (default: a running cluster, else a local Ray).")
def data_prepare(
    specs: tuple[str, ...],
    limit: int | None,
    subset: str | None,
    cache_dir: Path | None,
    data_root: Path | None,
    seed: int,
    workers: int | None,
    jpeg_quality: int | None,
    size: int | None,
    classes: Path | None,
    strict: bool,
    executor: str,
    ray_address: str | None,
) -> None:
    """Decode, resize, crop and corrupt SPECS once into the prepared-data cache (`cbar` expands to 50)."""
    from rich.table import Table

    from ovdiv.data import prepare_many

    with progress_bar() as progress:
        prepared = prepare_many(
            specs, limit=limit, subset=subset, cache_dir=cache_dir, data_root=data_root, seed=seed, workers=workers,
            jpeg_quality=jpeg_quality, size=size, classes=classes, strict=strict, progress=progress,
            executor=executor, ray_address=ray_address,
        )  # fmt: skip
    table = Table("spec", "images", "skipped", "manifest", "folder")
    for ds in prepared:
        m = ds.manifest
        table.add_row(ds.spec, str(len(ds)), str(m["skipped"]), ds.manifest_hash[:16], str(ds.path))
    console.print(table)


@data.command("show")
@click.argument("specs", nargs=-1, required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PNG to write.")
@click.option("--n", "n", type=click.IntRange(min=1), default=8, show_default=True, help="Images per row.")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), help="Default $OVDIV_DATA.")
@click.option("--seed", type=int, default=0, show_default=True)
def data_show(specs: tuple[str, ...], out: Path, n: int, data_root: Path | None, seed: int) -> None:
    """Write one contact sheet of SPECS: clean images, then the same images corrupted.

    Several specs share the sheet; `cbar:NAME@BASE` is one corruption at all five severities.
    """
    from ovdiv.data import write_contact_sheet

    info = write_contact_sheet(list(specs), out, n=n, data_root=data_root, seed=seed)
    console.print(f"wrote {info.path} ({len(info.rows)} row(s) x {info.n}: {', '.join(info.rows)})")


@data.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout instead of tables.")
def data_list(as_json: bool) -> None:
    """List dataset spec kinds and the available corruptions with their severities."""
    from rich.table import Table

    from ovdiv.data import catalog

    cat = catalog()
    if as_json:
        emit_json({"kinds": [{"spec": k, "meaning": m} for k, m in cat["kinds"]], "corruptions": cat["corruptions"]})
        return
    kinds = Table("spec", "meaning", title="dataset specs")
    for syntax, meaning in cat["kinds"]:
        kinds.add_row(syntax, meaning)
    console.print(kinds)
    corr = Table("corruption", "official C-bar", "severities (1..5 magnitudes)", title="corruptions")
    for row in cat["corruptions"]:
        sev = ", ".join(f"{m:g}" for m in row["severities"]) if row["severities"] else "any magnitude (0-10]"
        corr.add_row(row["name"], "yes" if row["official"] else "pool", sev)
    console.print(corr)


# ---- models ----------------------------------------------------------------------------------
@cli.group(cls=_OvdivGroup)
def models() -> None:
    """The architecture registry."""


@models.command("list")
@click.argument("pattern", required=False)
@click.option("--tiny/--full", "tiny", default=None, help="Only tiny CPU variants / only full-size models.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout instead of tables.")
def models_list(pattern: str | None, tiny: bool | None, as_json: bool) -> None:
    """List registered architectures (optionally matching a wildcard PATTERN, e.g. 'resnext*')."""
    from rich.table import Table

    from ovdiv.models import model_table

    rows = model_table(pattern, tiny=tiny)
    if as_json:
        emit_json(rows)
        return
    table = Table(title=f"ovdiv architectures ({len(rows)})")
    table.add_column("name", no_wrap=True)
    table.add_column("family", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("input", justify="right", no_wrap=True)
    table.add_column("tiny", no_wrap=True)
    table.add_column("description", overflow="fold")
    for r in rows:
        h, w = r["input_size"]
        params = f"{r['params'] / 1e6:.2f} M" if r["params"] >= 1e6 else f"{r['params'] / 1e3:.1f} k"
        table.add_row(r["name"], r["family"], params, f"{h}x{w}", "yes" if r["tiny"] else "", r["description"])
    console.print(table)


# ---- train -----------------------------------------------------------------------------------
def _train_data(data_root: Path | None, dataset: str | None) -> Path | str | None:
    if data_root is not None and dataset is not None:
        from ovdiv.errors import ConfigError

        raise ConfigError("pass either --data-root or --dataset, not both")
    return data_root if data_root is not None else dataset


def _train_summary(
    title: str, out: Path, records: list[dict[str, Any]], files: list[Path], exported: list[Any]
) -> None:
    from rich.table import Table

    last = records[-1] if records else {}
    table = Table(title=title)
    table.add_column("member", no_wrap=True)
    table.add_column("train loss", justify="right")
    table.add_column("val top-1", justify="right")
    table.add_column("checkpoint", overflow="fold")
    losses, top1 = last.get("train_member_loss", {}), last.get("val_member_top1", {})
    for name, path in zip(losses, files, strict=False):
        acc = top1.get(name)
        table.add_row(name, f"{losses[name]:.4f}", "-" if acc is None else f"{acc:.4f}", str(path))
    console.print(table)
    if "val_ensemble_top1" in last:
        console.print(
            f"ensemble val top-1 {last['val_ensemble_top1']:.4f}, disagreement {last.get('val_disagreement', 0):.4f}"
        )
    console.print(f"epochs {last.get('epoch', 0)}, steps {last.get('step', 0)}; log {out / 'metrics.jsonl'}")
    for art in exported:
        console.print(f"exported {art.path}")


_TRAIN_DATA_OPTIONS = [
    click.option(
        "--data-root", type=click.Path(file_okay=False, path_type=Path), help="ImageFolder root with train/, val/."
    ),
    click.option("--dataset", help="Dataset spec instead of a folder, e.g. demo:train (validation: demo)."),
    click.option("--epochs", type=click.IntRange(min=1), help="Override the number of epochs."),
    click.option("--max-steps", type=click.IntRange(min=1), help="Stop after this many optimizer steps (smoke runs)."),
    click.option("--device", type=click.Choice(["cuda", "cpu"]), help="Default: CUDA when available."),
    click.option("--no-resume", is_flag=True, help="Start over even if RUN/state.pt exists."),
    click.option("--export", "export_", is_flag=True, help="Export the members to ONNX + IR FP32 at the end."),
]


def _with_options(options: list[Any]) -> Any:
    def deco(fn: Any) -> Any:
        for opt in reversed(options):
            fn = opt(fn)
        return fn

    return deco


@cli.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Run folder (default runs/<recipe>).")
@click.option("--pretrained", type=click.Path(dir_okay=False, path_type=Path), help="Start from these weights.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="DataLoader workers.")
@click.option("--val-every", type=click.IntRange(min=0), default=1, show_default=True, help="Validate every N epochs.")
@click.option(
    "--backbone",
    type=click.Path(dir_okay=False, path_type=Path),
    help="DINO recipes: skip self-supervised training and use this backbone (official DINO .pth key layout).",
)
@click.option(
    "--backbone-cache",
    type=click.Path(file_okay=False, path_type=Path),
    help="DINO recipes: backbone cache (default <out>/../dino_backbones; shared backbones are trained once).",
)
@_with_options(_TRAIN_DATA_OPTIONS)
def train(
    recipe: Path,
    out: Path | None,
    pretrained: Path | None,
    workers: int,
    val_every: int,
    backbone: Path | None,
    backbone_cache: Path | None,
    data_root: Path | None,
    dataset: str | None,
    epochs: int | None,
    max_steps: int | None,
    device: str | None,
    no_resume: bool,
    export_: bool,
) -> None:
    """Train one member from a recipe (models/<id>.json); run again to resume. Multi-GPU: torchrun -m ovdiv train.

    DINO recipes ("kind": "dino") train a self-supervised backbone (cached by content), then a linear
    classifier on it frozen; --epochs applies to the classifier.
    """
    from ovdiv.errors import ConfigError
    from ovdiv.train import train_member
    from ovdiv.train.dino_recipe import recipe_kind

    if recipe_kind(recipe) == "dino":
        from ovdiv.train.dino import train_dino

        if pretrained is not None:
            raise ConfigError("--pretrained does not apply to DINO recipes", "use --backbone CKPT")
        with progress_bar() as progress:
            dres = train_dino(
                recipe, out_dir=out or Path("runs") / recipe.stem, data=_train_data(data_root, dataset),
                backbone=backbone, backbone_cache=backbone_cache, device=device, epochs=epochs, max_steps=max_steps,
                resume=not no_resume, workers=workers, val_every=val_every, export=export_, progress=progress,
            )  # fmt: skip
        if dres.is_main:
            console.print(f"DINO backbone ({dres.backbone_source}): {dres.backbone}", highlight=False)
            _train_summary(f"ovdiv train {recipe.name}", dres.out_dir, dres.metrics, [dres.checkpoint], dres.exported)
        return
    if backbone is not None or backbone_cache is not None:
        raise ConfigError(f"--backbone/--backbone-cache apply to DINO recipes only; {recipe} is a member recipe")
    with progress_bar() as progress:
        res = train_member(
            recipe,
            out_dir=out or Path("runs") / recipe.stem,
            data=_train_data(data_root, dataset),
            pretrained=pretrained,
            device=device,
            epochs=epochs,
            max_steps=max_steps,
            resume=not no_resume,
            workers=workers,
            val_every=val_every,
            export=export_,
            progress=progress,
        )
    if res.is_main:  # under torchrun only rank 0 reports
        _train_summary(f"ovdiv train {recipe.name}", res.out_dir, res.metrics, [res.checkpoint], res.exported)


# ---- ensemble --------------------------------------------------------------------------------
@cli.group(cls=_OvdivGroup)
def ensemble() -> None:
    """Joint, diversity-enforcing ensemble training."""


@ensemble.command("train")
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Run folder (default runs/<config>).")
@_with_options(_TRAIN_DATA_OPTIONS)
def ensemble_train(
    config: Path,
    out: Path | None,
    data_root: Path | None,
    dataset: str | None,
    epochs: int | None,
    max_steps: int | None,
    device: str | None,
    no_resume: bool,
    export_: bool,
) -> None:
    """Train an ensemble per models/ensembles/<name>.json; run again to resume.

    Heuristics: independent, gncl, gncl_masked, balanced, attribution_diversity (M members, one joint
    optimizer step), snapshot, prune_and_tune.
    """
    from ovdiv.train import train_ensemble

    with progress_bar() as progress:
        res = train_ensemble(
            config,
            out_dir=out or Path("runs") / config.stem,
            data=_train_data(data_root, dataset),
            device=device,
            epochs=epochs,
            max_steps=max_steps,
            resume=not no_resume,
            export=export_,
            progress=progress,
        )
    if res.is_main:  # under torchrun only rank 0 reports
        title = f"ovdiv ensemble train {config.name} ({res.heuristic})"
        _train_summary(title, res.out_dir, res.metrics, res.members, res.exported)


# ---- pool ------------------------------------------------------------------------------------
@cli.group(cls=_OvdivGroup)
def pool() -> None:
    """Pools of members: build a whole pool (e.g. the paper's 14) from one file."""


@pool.command("build")
@click.argument("pool_file", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Pool folder.")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), help="ImageFolder root (train/, val/).")
@click.option("--dataset", help="Dataset spec instead of a folder (e.g. demo:train).")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), help="Training device (default: CUDA when available).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="DataLoader workers.")
def pool_build(
    pool_file: Path, out: Path, data_root: Path | None, dataset: str | None, device: str | None, workers: int
) -> None:
    """Train / extract / export every member of POOL_FILE not yet complete; write OUT/members.txt.

    \b
    ovdiv pool build models/pools/paper14.json --data-root D --out POOL
    ovdiv evaluate --pool $(cat POOL/members.txt) --size 3 --dataset imagenet ...
    """  # noqa: D301 - click's \b (no-rewrap) marker must be a real backspace
    from ovdiv.pool import build_pool

    with progress_bar() as progress:
        res = build_pool(pool_file, out_dir=out, data_root=data_root, dataset=dataset, device=device,
                         workers=workers, progress=progress)  # fmt: skip
    console.print(
        f"{len(res.artifacts)} members: {len(res.built)} built, {len(res.skipped)} already complete", highlight=False
    )
    for p in res.artifacts:
        console.print(f"  {p}", highlight=False)
    console.print(f"[bold]members: {res.members_file}[/]")


# ---- supernet --------------------------------------------------------------------------------
@cli.group(cls=_OvdivGroup)
def supernet() -> None:
    """BootstrapNAS super-network: train, search, extract, info."""


@supernet.command("train")
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--data-root", type=click.Path(path_type=Path), help="ImageFolder root (train/, val/) for 'imagenet'.")
@click.option("--dataset", help="ovdiv dataset spec for training instead of the config's (e.g. demo:train).")
@click.option("--pretrained", help="torchvision resnet50 state_dict file, or 'torchvision' (needs the hub).")
@click.option("--allow-random-init", is_flag=True, help="Train without pretrained weights despite the config.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Run folder [supernet_runs/<name>].")
@click.option("--resume", is_flag=True, help="Continue from RUN/checkpoints/supernet_last.pth.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Override the config's device.")
@click.option("--max-epochs", type=click.IntRange(min=1), help="Stop after this many epochs (resume later).")
def supernet_train(
    config: Path,
    data_root: Path | None,
    dataset: str | None,
    pretrained: str | None,
    allow_random_init: bool,
    out: Path | None,
    resume: bool,
    device: str | None,
    max_epochs: int | None,
) -> None:
    """Train a ResNet-50 super-network with progressive shrinking (runs in its own process)."""
    from ovdiv.supernet import train as supernet_train_fn

    with progress_bar() as progress:
        res = supernet_train_fn(
            config,
            out=out,
            data_root=data_root,
            dataset=dataset,
            pretrained=pretrained,
            allow_random_init=allow_random_init,
            resume=resume,
            device=device,
            max_epochs=max_epochs,
            progress=progress,
        )
    last = res.get("last") or {}
    console.print(
        f"super-network [bold]{res['status']}[/]: {res['epochs_done']}/{res['total_epochs']} epochs, "
        f"{res['width_groups']} width groups, {res['skippable_blocks']} skippable blocks, device {res['device']}"
        f"{' (AMP)' if res['amp'] else ''}; supernet top-1 {last.get('supernet_top1', float('nan')):.2f}, "
        f"min subnet top-1 {last.get('min_top1', float('nan')):.2f} -> {res['run']}",
        highlight=False,
    )


@supernet.command("search")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--num-evals", type=click.IntRange(min=2), help="Subnet evaluations [config's search.num_evals].")
@click.option("--population", type=click.IntRange(min=2), help="NSGA2 population [config's search.population].")
@click.option("--dataset", help="Dataset spec for the validation subset (default: the run's).")
@click.option("--data-root", type=click.Path(path_type=Path), help="Data root (default: the run's).")
@click.option("--limit", type=click.IntRange(min=1), help="Validation images per evaluation [search_limit].")
@click.option("--ref-acc", type=float, help="Reference top-1 (%%); ImageNet: the pretrained model's (76.13).")
@click.option("--acc-delta", type=float, help="Accepted top-1 drop below --ref-acc (nncf caps it at 50).")
def supernet_search(
    run: Path,
    num_evals: int | None,
    population: int | None,
    dataset: str | None,
    data_root: Path | None,
    limit: int | None,
    ref_acc: float | None,
    acc_delta: float | None,
) -> None:
    """NSGA2 search over (MACs, top-1) of a trained super-network; CSV + plot + best subnet."""
    from ovdiv.supernet import search as supernet_search_fn

    with progress_bar() as progress:
        res = supernet_search_fn(
            run,
            num_evals=num_evals,
            population=population,
            dataset=dataset,
            data_root=data_root,
            limit=limit,
            ref_acc=ref_acc,
            acc_delta=acc_delta,
            progress=progress,
        )
    note = "" if res["satisfies_ref_acc"] else " (none within ref_acc - acc_delta: maximum subnet)"
    console.print(
        f"{res['evaluated']} subnets evaluated; best {res['best_macs_M']:.1f} MMACs, top-1 {res['best_top1']:.2f}"
        f"{note}; super-network {res['supernet_macs_M']:.1f} MMACs, top-1 {res['supernet_top1']:.2f}\n"
        f"  {res['csv']}\n  {res['plot']}\n  {res['best']}",
        highlight=False,
    )


@supernet.command("extract")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--subnet", help="B_0, nB_0..nB_3, dB_1a, dB_1b, wB_1a..wB_1c, min, max or best.")
@click.option("--config", "subnet_config", type=click.Path(path_type=Path), help="Subnet JSON instead of --subnet.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option("--format", "formats", default="onnx,ir", show_default=True, help="torch (always written), onnx, ir.")
@click.option("--name", help="Artifact base name [<config>_<subnet>].")
@click.option("--no-bn-adapt", is_flag=True, help="Keep the super-network's BN statistics (no data needed).")
def supernet_extract(
    run: Path,
    subnet: str | None,
    subnet_config: Path | None,
    out: Path,
    formats: str,
    name: str | None,
    no_bn_adapt: bool,
) -> None:
    """Extract a subnet as a plain torch model (no nncf needed) and export it to ONNX / IR with model cards."""
    from ovdiv.supernet import extract as supernet_extract_fn

    with progress_bar() as progress:
        res = supernet_extract_fn(
            run,
            out=out,
            subnet=subnet,
            config=subnet_config,
            name=name,
            formats=_csv_list(formats),
            bn_adapt=not no_bn_adapt,
            progress=progress,
        )
    console.print(
        f"{res['name']}: {res['macs_224'] / 1e9:.3f} GMACs @224, {res['params'] / 1e6:.2f} M params, "
        f"max |diff| vs super-network {res['max_abs_diff_vs_supernet']:.2g}",
        highlight=False,
    )
    console.print(f"  {res['checkpoint']}", highlight=False)
    for art in res["artifacts"]:
        console.print(f"  {art['path']}  (max |diff| {art['max_abs_diff_vs_supernet']:.2g})", highlight=False)


@supernet.command("info")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--input-size", type=int, default=224, show_default=True, help="Square input size for the counts.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (the full result) on stdout.")
def supernet_info(target: Path, input_size: int, as_json: bool) -> None:
    """Search space and MACs / params of min, max, named (and best) subnets of a RUN or CONFIG."""
    from rich.table import Table

    from ovdiv.supernet import info as supernet_info_fn

    with progress_bar() as progress:
        res = supernet_info_fn(target, input_size=(input_size, input_size), progress=progress)
    if as_json:
        emit_json(res)
        return
    console.print(
        f"{res['config']}: {len(res['width_groups'])} width groups, {len(res['blocks'])} skippable blocks "
        f"({', '.join(b['name'] for b in res['blocks'])}); counts at {input_size}x{input_size}",
        highlight=False,
    )
    table = Table("subnet", "GMACs", "conv+fc weights (M)", "params (M)", "blocks/stage", "nncf count equal")
    for label, s in res["subnets"].items():
        table.add_row(
            label,
            f"{s['macs'] / 1e9:.3f}",
            f"{s['weights'] / 1e6:.3f}",
            f"{s['params'] / 1e6:.3f}",
            str(s["summary"]["blocks_per_stage"]),
            "yes" if s["equal"] else "[red]NO[/]",
        )
    console.print(table)


# ---- export ----------------------------------------------------------------------------------
@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option("--format", "formats", default="onnx,ir", show_default=True, help="Comma list of: onnx, ir.")
@click.option(
    "--precision", "precisions", default="fp32", show_default=True, help="Comma list of: fp32, fp16, int8 (IR)."
)
@click.option("--calib", "calib_spec", help="Dataset spec of the INT8 calibration images, e.g. 'demo:train'.")
@click.option("--calib-size", type=int, default=300, show_default=True, help="Number of calibration images.")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), help="Root folder of the datasets.")
@click.option("--bake-preprocessing", is_flag=True, help="Artifacts take uint8 NHWC RGB (normalisation inside).")
@click.option("--name", help="Artifact base name (default: the checkpoint's file name).")
@click.option("--min-int8-agreement", type=float, default=0.9, show_default=True, help="INT8 vs FP32 top-1 floor.")
def export(
    checkpoint: Path,
    out: Path,
    formats: str,
    precisions: str,
    calib_spec: str | None,
    calib_size: int,
    data_root: Path | None,
    bake_preprocessing: bool,
    name: str | None,
    min_int8_agreement: float,
) -> None:
    """Export a torch checkpoint to ONNX / OpenVINO IR (FP32/FP16/INT8) with model cards; each artifact is checked."""
    import functools

    from rich.table import Table

    from ovdiv.export import export_model

    calib = None
    if calib_spec:
        from ovdiv.data import load

        calib = functools.partial(load, calib_spec, limit=calib_size, data_root=data_root)
    with progress_bar() as callback:
        artifacts = export_model(
            checkpoint,
            out,
            name=name,
            formats=_csv_list(formats),
            precisions=_csv_list(precisions),
            calib=calib,
            calib_size=calib_size,
            bake_preprocessing=bake_preprocessing,
            min_int8_agreement=min_int8_agreement,
            progress=callback,
        )
    table = Table(title=f"{checkpoint.name} -> {out}/")
    for col in ("artifact", "precision", "self-check vs torch", "sha256"):
        table.add_column(col, no_wrap=True)
    for a in artifacts:
        metric = a.check["metric"]
        if metric == "rel_err":
            check = f"rel err {a.check[metric]:.1e} <= {a.check['tolerance']:.0e}"
        else:
            check = f"top-1 agree {a.check[metric]:.3f} >= {a.check['min_agreement']:.2f}"
        table.add_row(a.path.name, a.precision, check, (a.card.sha256 or "")[:8])
    console.print(table)


# ---- evaluate --------------------------------------------------------------------------------
@cli.command(context_settings={"allow_interspersed_args": True})
@click.argument("more_members", nargs=-1, type=click.Path(path_type=Path), metavar="[MEMBERS]...")
@click.option(
    "--ensemble",
    "ensemble_paths",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Members of ONE ensemble (.xml/.onnx/checkpoint); shell globs work: --ensemble ir/*.xml.",
)
@click.option(
    "--pool",
    "pool_paths",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Members of a pool; with --size k every k-subset is scored from cached data.",
)
@click.option("--size", "subset_size", type=int, help="Subset size k for --pool.")
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    required=True,
    help="Dataset spec, repeatable or comma-separated (demo, lines1.6@demo, imagenet, ...).",
)
@click.option(
    "--consensus",
    multiple=True,
    default=("average",),
    show_default=True,
    type=click.Choice(["average", "average_probs", "majority", "median", "geometric"]),
    help="Consensus rule(s); rules other than average add ':rule' metric rows (ensemble_top1:majority).",
)
@click.option(
    "--attribution",
    default="saliency",
    show_default=True,
    type=click.Choice(["saliency", "ig", "smoothgrad", "input_x_gradient", "none"]),
)
@click.option(
    "--attribution-target", default="ensemble", show_default=True, type=click.Choice(["ensemble", "member", "label"])
)
@click.option("--attribution-norm", default="max", show_default=True, type=click.Choice(["max", "sum", "none"]))
@click.option("--attribution-samples", type=int, help="Attribution on the first N images (default: all).")
@click.option(
    "--gradient-check",
    default="quick",
    show_default=True,
    type=click.Choice(["quick", "full", "off"]),
    help="Check each member's gradient graph against finite differences of its own forward before attribution "
    "(full: also check every op's rule alone, naming a wrong one).",
)
@click.option("--cka-samples", type=int, default=256, show_default=True, help="CKA on the first N images (0: off).")
@click.option(
    "--limit",
    type=int,
    help="Use N images of each dataset (demo: the first N; image folders: a fixed seeded subset of N).",
)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--workers", type=int, help="Data-preparation workers.")
@click.option("--shard", help="i/n: compute this shard's chunks only (shards merge through the cache).")
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: this process; ray: the same work units on a Ray cluster (same results).",
)
@click.option("--ray-address", help="Ray cluster for --executor ray (default: a running cluster, else a local Ray).")
@click.option("--device", default="CPU", show_default=True, help="CPU, GPU or AUTO.")
@click.option("--precision", default="f32", show_default=True, type=click.Choice(["f32", "bf16", "f16", "model"]))
@click.option(
    "--backend",
    type=click.Choice(["openvino", "onnxruntime", "torch"]),
    help="Default: openvino for .xml/.onnx, torch for checkpoints.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--data-root", type=click.Path(path_type=Path))
@click.option("--cache-dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results"), show_default=True)
@click.option("--report/--no-report", "with_report", default=False, help="Also write report.html into --out.")
@click.option("--ci-level", type=float, default=0.95, show_default=True, help="Confidence level of the intervals.")
@click.option(
    "--bootstrap",
    type=int,
    default=2000,
    show_default=True,
    help="Paired-bootstrap resamples over images (seeded by --seed); 0 switches the bootstrap off.",
)
@click.option(
    "--ci-method",
    default="percentile",
    show_default=True,
    type=click.Choice(["percentile", "bca"]),
    help="Bootstrap interval.",
)
@click.option("--json", "as_json", is_flag=True, help="Print results.json's document on stdout instead of tables.")
def evaluate(
    more_members: tuple[Path, ...],
    ensemble_paths: tuple[Path, ...],
    pool_paths: tuple[Path, ...],
    subset_size: int | None,
    datasets: tuple[str, ...],
    consensus: tuple[str, ...],
    attribution: str,
    attribution_target: str,
    attribution_norm: str,
    attribution_samples: int | None,
    gradient_check: str,
    cka_samples: int,
    limit: int | None,
    batch_size: int,
    workers: int | None,
    shard: str | None,
    executor: str,
    ray_address: str | None,
    device: str,
    precision: str,
    backend: str | None,
    seed: int,
    data_root: Path | None,
    cache_dir: Path | None,
    out: Path,
    with_report: bool,
    ci_level: float,
    bootstrap: int,
    ci_method: str,
    as_json: bool,
) -> None:
    """Evaluate an ensemble (or every k-subset of a pool) of deployed members.

    \b
    ovdiv evaluate --ensemble ir/*.xml --dataset demo --dataset lines1.6@demo
    ovdiv evaluate --pool ir/*.xml --size 3 --dataset demo --attribution none
    """  # noqa: D301 - click's \b (no-rewrap) marker must be a real backspace
    from ovdiv.errors import ConfigError
    from ovdiv.evaluate import evaluate as run_evaluation

    if ensemble_paths and pool_paths:
        raise ConfigError("give either --ensemble or --pool, not both")
    if not (ensemble_paths or pool_paths):
        raise ConfigError("no members given", "use --ensemble A.xml B.xml ... or --pool P... --size k")
    if subset_size is not None and not pool_paths:
        raise ConfigError("--size needs --pool", "use --pool P... --size k")
    paths = [*(ensemble_paths or pool_paths), *more_members]
    specs = [s for d in datasets for s in _csv_list(d)]
    with progress_bar() as progress:
        res = run_evaluation(
            paths,
            specs,
            subset_size=subset_size,
            consensus=consensus,
            attribution=attribution,
            attribution_target=attribution_target,
            attribution_norm=attribution_norm,
            attribution_samples=attribution_samples,
            gradient_check=gradient_check,
            cka_samples=cka_samples,
            limit=limit,
            batch_size=batch_size,
            workers=workers,
            shard=shard,
            executor=executor,
            ray_address=ray_address,
            device=device,
            precision=precision,
            backend=backend,
            seed=seed,
            data_root=data_root,
            cache_dir=cache_dir,
            ci_level=ci_level,
            bootstrap=bootstrap,
            ci_method=ci_method,
            out=None,
            progress=progress,
        )
    if not res.complete:
        if as_json:
            emit_json(res.to_dict())
        else:
            console.print(f"shard {shard} done; run the remaining shards, then rerun without --shard to merge.")
        return
    res.save(out)
    report_path = None
    if with_report:
        from ovdiv.report import write_report

        report_path = write_report(out)
    if as_json:
        emit_json(res.to_dict())
        return
    from rich.table import Table

    for dataset, (header, body) in res.summary().items():
        table = Table(title=f"{dataset}", title_justify="left")
        for i, col in enumerate(header):
            table.add_column(col, justify="left" if i == 0 else "right")
        for row in body:
            table.add_row(*[c if isinstance(c, str) else "—" if c is None else f"{c:.4g}" for c in row])
        console.print(table)
    console.print(f"results: {out / 'results.json'}  {out / 'results.csv'}")
    if report_path is not None:
        console.print(f"report: {report_path}")


# ---- features --------------------------------------------------------------------------------
def _channel_list(value: str | None) -> list[int] | str | None:
    if value is None or value == "all":
        return value
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected 'all' or comma-separated channel indices") from None


@cli.command()
@click.argument("members", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--layer", help="stage1..stageK, penultimate, a graph node name or a torch module name.")
@click.option("--channels", help="Comma-separated channel indices, or 'all' [all].")
@click.option("--random", "random_k", type=click.IntRange(min=1), help="Visualise K random channels instead.")
@click.option("--minimize", is_flag=True, help="Minimise the channel's mean activation instead.")
@click.option("--steps", type=click.IntRange(min=1), default=1024, show_default=True, help="Adam steps.")
@click.option("--size", type=click.IntRange(min=28), help="Image side in px [the member's input size].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the initial images and transforms.")
@click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True, help="Channels per batch.")
@click.option(
    "--gradient",
    type=click.Choice(["auto", "vjp", "autograd"]),
    default="auto",
    show_default=True,
    help="auto: torch autograd for checkpoints, the VJP graph for IR/ONNX.",
)
@click.option("--device", default="CPU", show_default=True, help="Device (OpenVINO name; torch: CPU or GPU).")
@click.option(
    "--saliency-results",
    type=click.Path(path_type=Path),
    help="An `ovdiv evaluate --attribution smoothgrad --size 2` results folder for the saliency table.",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output folder [features/<layer>].")
@click.option("--list-layers", is_flag=True, help="Print the layers with channel counts and exit.")
def features(
    members: tuple[Path, ...],
    layer: str | None,
    channels: str | None,
    random_k: int | None,
    minimize: bool,
    steps: int,
    size: int | None,
    seed: int,
    batch: int,
    gradient: str,
    device: str,
    saliency_results: Path | None,
    out: Path | None,
    list_layers: bool,
) -> None:
    """Feature visualisation of the same neurons in sibling members (Lucid settings) + image-hash distances."""
    from ovdiv.report.features import member_layers, run_features

    if list_layers:
        from rich.table import Table

        for m in members:
            table = Table(title=str(m), title_justify="left")
            for col in ("layer", "channels", "shape"):
                table.add_column(col)
            for row in member_layers(m, gradient=gradient, device=device):
                table.add_row(row["name"], str(row["channels"]), "x".join(map(str, row["shape"])))
            console.print(table)
        return
    if not layer:
        raise click.UsageError("--layer is required (see --list-layers)")
    from ovdiv.attribution.features import FeatureVisConfig

    cfg = FeatureVisConfig(steps=steps, size=size, seed=seed, minimize=minimize, batch_size=batch)
    with progress_bar() as progress:
        res = run_features(
            members,
            layer=layer,
            out_dir=out or Path("features") / layer,
            channels=_channel_list(channels),
            random_k=random_k,
            config=cfg,
            gradient=gradient,
            device=device,
            saliency_results=saliency_results,
            progress=progress,
        )
    for method, d in res.summary["hash_distances"].items():
        for p in d["pairs"]:
            sem = "-" if p["sem"] is None else f"{p['sem']:.2f}"
            console.print(f"{method:9s} {p['a']} vs {p['b']}: {p['mean']:.2f} ± {sem} (of {d['bits']} bits)")
    console.print(f"features: {res.out_dir} (sheet {res.sheet_path.name}, report {res.report_path.name})")


# ---- report ----------------------------------------------------------------------------------
@cli.command()
@click.argument("results_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Default: RESULTS_DIR/report.html.")
def report(results_dir: Path, out: Path | None) -> None:
    """Write a self-contained report.html for an evaluation's results folder."""
    from ovdiv.report import write_report

    path = write_report(results_dir, out=out)
    console.print(f"report: {path}")


# ---- certify ---------------------------------------------------------------------------------
@cli.command()
@click.argument("results", type=click.Path(path_type=Path))
@click.option("--policy", "policy_path", type=click.Path(path_type=Path), required=True, help="Policy JSON file.")
@click.option("--verdict-out", type=click.Path(dir_okay=False, path_type=Path), help="Write the verdict JSON here.")
@click.option("--show-rows", is_flag=True, help="List every checked row, not only failing ones.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict JSON document on stdout instead of tables.")
def certify(results: Path, policy_path: Path, verdict_out: Path | None, show_rows: bool, as_json: bool) -> None:
    """Check RESULTS (results.json or its folder) against a policy: exit 0 pass, 1 fail, 2 bad input.

    Rules look like {"dataset": "lines1.6", "metric": "ensemble_top1", "min": 0.35}; see the policy
    schema in the documentation (docs/policy.md) or ovdiv/evaluate/example_policy.json for
    relative-to-baseline rules.
    """
    from ovdiv.evaluate.policy import Policy

    verdict = Policy.from_file(policy_path).check(results)
    if verdict_out is not None:
        verdict.to_json(verdict_out)
    if as_json:
        emit_json(verdict.to_dict())
    else:
        _render_verdict(verdict, show_rows)
    sys.exit(verdict.exit_code)


def _render_verdict(verdict: Any, show_rows: bool) -> None:
    from rich.table import Table

    table = Table(title=f"policy: {verdict.policy}", title_justify="left")
    for col in ("rule", "check", "rows", "verdict"):
        table.add_column(col)
    for r in verdict.rules:
        mark = "[green]PASS[/]" if r["passed"] else "[red]FAIL[/]"
        rows = f"{r['rows'] - r['failed_rows']}/{r['rows']} ok" if r["rows"] else "no rows"
        table.add_row(r["id"], r["description"], rows, mark)
    console.print(table)
    shown = [c for c in verdict.checks if show_rows or not c.passed]
    if shown:
        detail = Table(title="failing checks" if not show_rows else "checks", title_justify="left")
        for col in ("rule", "dataset", "ensemble / member", "estimate", "interval", "p", "bounds", "verdict", "note"):
            detail.add_column(col)
        for c in shown[:200]:
            bounds = " ".join(
                b
                for b in (f">={c.min:g}" if c.min is not None else "", f"<={c.max:g}" if c.max is not None else "")
                if b
            )
            if c.bound:
                bounds += f" ({c.bound} bound)"
            interval = ""
            if c.ci_low is not None and c.ci_high is not None:
                level = f"{100 * c.ci_level:g}% " if c.ci_level else ""
                interval = f"{level}[{c.ci_low:.4f}, {c.ci_high:.4f}]"
            mark = "[green]PASS[/]" if c.passed else "[red]FAIL[/]"
            if not c.passed and c.passed_on_estimate:
                mark = "[red]FAIL[/] (passes on estimate)"
            detail.add_row(
                c.rule,
                c.dataset or "",
                c.ensemble or c.member or "",
                _fmt(c.observed),
                interval,
                "" if c.p_value is None else f"{c.p_value:.3g}",
                bounds,
                mark,
                c.note,
            )
        console.print(detail)
    console.print("[bold green]PASS[/]" if verdict.passed else "[bold red]FAIL[/]")


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="ovdiv")


if __name__ == "__main__":
    main()
