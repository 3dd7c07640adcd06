"""The train stage's session: start or resume the run, log every epoch to dvclive, write the outputs.

The stage script parses its arguments, loads validated params and the prepared data,
and hands them here; everything between (the resume store's lock, the resume decision,
dvclive, Ctrl-C or SIGTERM, publishing the checkpoints and the final model) lives in
this one function, so the stage's behaviour can be read, and reused, in the library.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..config import RESULT_NEUTRAL_TRAIN_KEYS, Params, load_params
from ..data.arrays import ImageSet
from ..distributed import process_rank, shutdown
from ..errors import UserError
from ..provenance import describe_change, digests
from .loop import EpochResult, fit
from .progress import EpochPrinter
from .resume import ResumeStore, run_key
from .run import StartedRun, start_run


@dataclass(frozen=True)
class TrainOutputs:
    """Where the stage writes: the paths dvc.yaml declares, and the resume store (not a DVC output)."""

    model: Path  # final weights: the best or the last epoch's (train.final_model)
    config: Path  # the final model's architecture config (JSON)
    baseline: Path  # weights before the first update
    summary: Path  # model summary metrics (JSON)
    checkpoints: Path  # the finished run's best.pt, last.pt, epoch_NNN.pt
    live: Path  # dvclive folder
    resume: Path  # an unfinished run's checkpoints


@dataclass(frozen=True)
class RunSources:
    """What the run is made of besides its params, for the resume key: code files and data files."""

    code: list[Path]  # the stage script's import closure
    data: list[Path]
    code_root: Path  # code digests are keyed by paths relative to it
    params_file: Optional[Path] = None  # the params.yaml `params` came from, read again before publishing


# The params sections a trained model depends on: those dvc.yaml's train stage declares (train
# less its result-neutral keys), and data, which shapes the prepared data it reads (as in run_key).
TRAINED_FROM = ("seed", "data", "model", "train")


def log_to_live(live, result: EpochResult) -> None:
    """One epoch's curves, then dvclive's next_step (summary written, DVC Studio / VS Code updated).

    The summary (dvclive/metrics.json, no DVC metric: the evaluate stage's headline
    metrics.json takes best.val_acc from it) keeps results, not curve ends: the best
    validation accuracy so far and its epoch, but not the learning rate, whose last value
    is a near-zero schedule end in every run.
    """
    for name, value in result.measured().items():
        live.log_metric(name, value)
    live.summary.pop("lr", None)
    best = live.summary.get("best", {})
    # NaN (no val split) never is greater; a spiked validation's accuracy is no best either.
    if result.epoch > 0 and not result.val_spiked and result.val_acc > best.get("val_acc", -1.0):
        live.summary["best"] = {"val_acc": result.val_acc, "epoch": result.epoch}
    live.next_step()


def train_resumably(params: Params, classes: list[str], train_set: ImageSet, val_set: ImageSet,
                    outputs: TrainOutputs, sources: RunSources) -> None:
    """Train as `params` ask, resuming an interrupted run of the same key, and write every output.

    Rank 0 holds the resume store before writing anything: a second trainer is refused untouched.
    """
    store = ResumeStore(outputs.resume)
    with store.exclusive() if process_rank() == 0 else contextlib.nullcontext():
        started = start_run(params, train_set, val_set, classes, outputs.baseline, outputs.summary)
        key = run_key(params, sources.code, sources.data, sources.code_root)
        if not started.run.dist_info.is_main:  # rank 0 logs and writes; the other replicas only train
            fit(started.run, store.folder, resume=store.resumable(key)[0])
            return shutdown(started.run.dist_info)
        _train_and_publish(params, started, store, key, outputs, sources)


def _train_and_publish(params: Params, started: StartedRun, store: ResumeStore, key: dict[str, Any],
                       outputs: TrainOutputs, sources: RunSources) -> None:
    """The main process: fit with dvclive logging and a line per epoch, then publish the outputs."""
    from dvclive import Live  # heavy: imported once the cheap checks have passed

    resume, decision = store.resumable(key)
    if resume is None:
        store.clear()
    print(f"{started.description}; {decision}", flush=True)
    printer = EpochPrinter(params.train.epochs, first_trained=resume["epoch"] + 1 if resume else 1)
    with Live(str(outputs.live), dvcyaml=False, save_dvc_exp=False) as live:
        # Live starts empty and every epoch, restored ones first, is logged once, in order:
        # the curves never duplicate or miss an epoch, however the last run ended.
        def log_epoch(result: EpochResult) -> None:
            log_to_live(live, result)
            print(printer.line(result), flush=True)

        try:
            outcome = fit(started.run, store.folder, {"model_config": started.model_config, "key": key}, log_epoch, resume)
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM or the parent's death (errors.run_stage)
            last = store.resumable(key)[0]
            done = f"after epoch {last['epoch']}" if last else "before the first epoch"
            raise UserError(f"interrupted {done}; run `dvc repro` again to resume") from None
        shutdown(started.run.dist_info)
        check_unchanged(params, key, sources, store)
        store.publish(outputs.checkpoints)
        started.save_final(outputs.checkpoints / f"{params.train.final_model}.pt", outputs.model, outputs.config)
        live.log_artifact(str(outputs.model), type="model", name="cifar-resnet", cache=False,
                          desc=f"{params.model.arch} trained on {params.data.dataset}",
                          labels=[params.model.arch, params.data.dataset])
    last = outcome.history[-1].epoch
    kept = outcome.best_epoch if params.train.final_model == "best" else last
    print(f"{outcome.stop_reason} after epoch {last}; best epoch {outcome.best_epoch}; epoch {kept} -> {outputs.model}")


def check_unchanged(params: Params, key: dict[str, Any], sources: RunSources, store: ResumeStore) -> None:
    """Refuse to publish a run whose params file, code or data changed while it trained.

    DVC records a stage's params and deps in dvc.lock (and its run-cache) when the stage
    ends, reading them from the workspace then: a second `dvc exp run` that rewrote
    params.yaml meanwhile would have this model recorded under its params. The finished
    checkpoints stay in the resume store, so a run with the params it started with
    publishes them without training again.
    """
    changed = _changed_params(params, sources.params_file)
    now = {"params": key["params"], "code": digests(sources.code, sources.code_root), "data": digests(sources.data)}
    sources_change = describe_change(key, now)
    if changed or sources_change:
        what = f"{sources.params_file} changed" if changed else "the train stage's code or data changed"
        details = "; ".join(filter(None, [changed, sources_change]))
        raise UserError(
            f"{what} while training ({details}): outputs not written (the checkpoints stay in {store.folder}); "
            "run one experiment at a time in a workspace, or queue them: `dvc exp run --queue`, then `dvc queue start`"
        )


def _changed_params(params: Params, params_file: Optional[Path]) -> Optional[str]:
    """The keys of TRAINED_FROM that `params_file` now sets otherwise than `params`, in a few words."""
    if params_file is None:
        return None
    try:
        now = load_params(params_file)
    except UserError as err:
        return f"now unreadable: {err}"
    keys = _differing_keys(_trained_from(params), _trained_from(now))
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "") if keys else None


def _trained_from(params: Params) -> dict[str, Any]:
    """The params a trained model depends on: TRAINED_FROM, less the result-neutral train keys
    (not dvc.yaml deps either, so DVC records the run the same whatever they are now)."""
    return params.model_dump(include=set(TRAINED_FROM), exclude={"train": set(RESULT_NEUTRAL_TRAIN_KEYS)})


def _differing_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the leaves that differ between two nested dicts."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [prefix]
    return [key for name in sorted(old.keys() | new.keys())
            for key in _differing_keys(old.get(name), new.get(name), f"{prefix}.{name}" if prefix else name)]
