"""One search trial: plan -> budget check -> student -> distillation, reported every epoch.

Runs inside a Ray Tune worker. Everything it needs arrives once through Ray's object store as a
:class:`TrialInputs` (data tensors, the teacher's weights and its cached logits); the trial
rebuilds components from the plugin registry of its own process. Tune reuses a worker for
several trials, so the registry and the rebuilt teacher are kept per process
(:func:`worker_state`), keyed by the inputs' token.

Every report splits the trial's wall time (:class:`TrialClock`): ``train_seconds`` (inside
distillation: optimizer set-up, epochs, validation; on a worker's first trial this includes
torch's one-off import of ``torch._dynamo`` when the first optimizer is made, a few seconds),
``prune_seconds`` (building the student, then counting its MACs and predicting its latency) and
``overhead_seconds`` (everything else: the worker's registry and teacher on its first trial,
budget repair, checkpoints and reports).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunetune.components.models import ModelSpec
from prunetune.components.scoring import calibration_batches
from prunetune.components.spaces import Candidate
from prunetune.host.manager import Host
from prunetune.host.registry import Registry
from prunetune.results.checkpoint import save_student
from prunetune.searching.spec import SearchSpec
from prunetune.structure.measure import count_macs_params
from prunetune.student.budget import CostLimit, MacsCounter, RepairResult, repair
from prunetune.student.latency import LatencyTable
from prunetune.student.surgery import build_student, check_output_shape
from prunetune.training.devices import describe_device
from prunetune.training.loop import EpochCallback
from prunetune.training.recipe import TrainRecipe
from prunetune.training.train import distill, make_retrainer

__all__ = [
    "LATENCY_METRIC", "TrialClock", "TrialInputs", "WorkerState", "build_teacher",
    "distill_candidate", "failure_text", "make_candidate_student", "repaired_candidate", "run_trial", "worker_state",
]


@dataclasses.dataclass
class TrialInputs:
    """What every trial shares, put into Ray's object store once per search.

    Treated as immutable once made: ``token`` (new for every instance made, kept by pickling)
    names these inputs in the workers' caches, so a changed copy must be a new instance
    (``dataclasses.replace`` makes one).
    """

    model: ModelSpec  # the teacher's architecture
    teacher_state: dict[str, torch.Tensor]
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    teacher_logits: torch.Tensor | None
    spec: SearchSpec  # the run's settings: recipe, components (a space may override scorer/distiller), budgets
    teacher_macs: int
    budget_macs: int | None
    calibration_batches: int = 4
    latency_table: LatencyTable | None = None  # the driver's, measured with nothing else running
    budget_latency_ms: float | None = None  # the table's latency budget (None: none)
    token: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex, init=False)


def build_teacher(registry: Registry, model: ModelSpec, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """The teacher from its description and weights, in eval mode."""
    model = model.build(registry)
    model.load_state_dict(state)
    return model.eval()


def make_candidate_student(
    registry: Registry, inputs: TrialInputs, teacher: nn.Module, candidate: Candidate, device: torch.device
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """Build the candidate's student: ``(student on device, prune record, meta for its file)``."""
    spec = inputs.spec
    distiller = candidate_distiller(registry, inputs, candidate)
    logits = inputs.teacher_logits if distiller.uses_teacher else None
    retrain = make_retrainer(teacher.to(device), distiller, inputs.train_x, inputs.train_y, device,
                             batch_size=spec.batch_size, lr=spec.lr, seed=spec.seed, teacher_logits=logits)
    scorer_name = candidate.scorer or spec.scorer
    scorer = registry.create("scorer", scorer_name, spec.scorer_options if scorer_name == spec.scorer else {})
    pruner = registry.create("pruner", spec.pruner, spec.pruner_options)
    calibration = calibration_batches(inputs.train_x, inputs.train_y, inputs.calibration_batches, device)
    example = inputs.train_x[:1].to(device)
    student, record = build_student(
        teacher.to(device), candidate.plan, pruner, scorer, example, calibration, seed=spec.seed, retrain=retrain,
    )
    check_output_shape(spec.pruner, teacher, student, example)
    meta = {
        **inputs.model.meta(),
        "plan": candidate.plan.to_dict(),
        "scorer": scorer_name,
        "pruner": spec.pruner,
        "pruner_options": dict(spec.pruner_options),
        "distiller": candidate.distiller or spec.distiller,
        "record": record.to_dict(),
    }
    return student.to(device), record, meta


def candidate_distiller(registry: Registry, inputs: TrialInputs, candidate: Candidate) -> Any:
    """The candidate's distiller: the run's, or the one its space chose, with its options."""
    spec = inputs.spec
    name = candidate.distiller or spec.distiller
    options = dict(spec.distiller_options) if name == spec.distiller else {}
    component = registry.get("distiller", name)
    # A searched T or alpha applies only to distillers that have such an option.
    fields = {f.name for f in dataclasses.fields(component.config_cls)}
    options.update({k: v for k, v in candidate.distiller_options.items() if k in fields})
    return component.create(options)


def _device(inputs: TrialInputs) -> torch.device:
    if inputs.spec.gpus_per_trial > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


@dataclasses.dataclass(frozen=True)
class WorkerState:
    """What a worker process keeps between the trials of one search it runs."""

    token: str
    registry: Registry
    teacher: nn.Module  # on ``device``, eval mode; trials only copy it or use it frozen
    cpu_teacher: nn.Module  # ``teacher`` itself on a CPU device, else a CPU copy: budget counts run on the CPU
    device: torch.device


_STATE: WorkerState | None = None


def worker_state(inputs: TrialInputs) -> WorkerState:
    """This process's registry and teacher for ``inputs``: made on the first trial of a search,
    reused by the next ones (only the latest search's are kept)."""
    global _STATE
    if _STATE is None or _STATE.token != inputs.token:
        _STATE = None  # frees the previous search's teacher before the next is built
        registry = Host.create().registry
        device = _device(inputs)
        cpu_teacher = build_teacher(registry, inputs.model, inputs.teacher_state)
        teacher = cpu_teacher if device.type == "cpu" else copy.deepcopy(cpu_teacher).to(device)
        _STATE = WorkerState(inputs.token, registry, teacher, cpu_teacher, device)
    return _STATE


class TrialClock:
    """Where a trial's wall time went: training, building the student, and the rest."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.spent = {"train": 0.0, "prune": 0.0}
        self._part: str | None = None
        self._since = 0.0

    def start(self, part: str) -> None:
        """Count the time from now on to ``part`` (``train`` or ``prune``) until :meth:`stop`."""
        self.stop()
        self._part, self._since = part, time.perf_counter()

    def stop(self) -> None:
        """Stop counting to the current part (nothing when none is counting)."""
        if self._part is not None:
            self.spent[self._part] += time.perf_counter() - self._since
            self._part = None

    @contextlib.contextmanager
    def timing(self, part: str) -> Iterator[None]:
        self.start(part)
        try:
            yield
        finally:
            self.stop()

    def seconds(self) -> dict[str, float]:
        """``trial_seconds`` so far and its split; the overhead is what is neither of the parts."""
        now = time.perf_counter()
        spent = dict(self.spent)
        if self._part is not None:
            spent[self._part] += now - self._since
        total = now - self.started
        return {"trial_seconds": total, "train_seconds": spent["train"], "prune_seconds": spent["prune"],
                "overhead_seconds": total - spent["train"] - spent["prune"]}


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray there is no node
        return None


#: The metric of a trial's latency, predicted by the driver's table (see :func:`run_trial`).
LATENCY_METRIC = "latency_b256_ms"


def repaired_candidate(state: WorkerState, inputs: TrialInputs,
                       params: Mapping[str, Any]) -> tuple[Candidate, RepairResult | None]:
    """The candidate of a trial's parameters, its plan repaired to the MACs and latency budgets
    (no budget: None)."""
    candidate = Candidate.from_params(dict(params), inputs.spec.round_to)
    if inputs.budget_macs is None and inputs.budget_latency_ms is None:
        return candidate, None
    example = inputs.train_x[:1]
    counter = MacsCounter(state.cpu_teacher, example)
    limits = []
    if inputs.budget_latency_ms is not None:
        if inputs.latency_table is None:
            raise ValueError("a latency budget needs the inputs' latency_table")
        latency = inputs.latency_table.bind(counter).predict
        limits.append(CostLimit(LATENCY_METRIC, latency, inputs.budget_latency_ms))
    fix = repair(state.cpu_teacher, candidate.plan, inputs.budget_macs, example, inputs.spec.max_ratio, counter=counter,
                 limits=limits)
    return dataclasses.replace(candidate, plan=fix.plan), fix


def distill_candidate(state: WorkerState, inputs: TrialInputs, candidate: Candidate, student: nn.Module,
                      epochs: int, on_epoch: EpochCallback | None = None) -> None:
    """Distil ``student`` as every trial does: the candidate's distiller, the run's recipe."""
    distiller = candidate_distiller(state.registry, inputs, candidate)
    recipe = TrainRecipe(epochs=epochs, batch_size=inputs.spec.batch_size, lr=inputs.spec.lr, seed=inputs.spec.seed,
                         schedule=inputs.spec.schedule, nesterov=inputs.spec.nesterov)
    logits = inputs.teacher_logits if distiller.uses_teacher else None
    distill(student, state.teacher, distiller, inputs.train_x, inputs.train_y, recipe, state.device,
            val=(inputs.val_x, inputs.val_y), teacher_logits=logits, progress=False, on_epoch=on_epoch)


def failure_text(exc: BaseException) -> str:
    """One line for a trial's error column: the exception's type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".strip()[:2000]


def run_trial(config: dict[str, Any], inputs: TrialInputs) -> None:
    """The Ray Tune trainable: report metrics (and a checkpoint) after every epoch.

    A failure of the trial's own making (a plugin that raises, a plan the model cannot take, a
    diverged loss) is reported as the trial's result with an ``error``, so Tune retries only
    trials whose worker or node was lost: the same plan would fail the same way again.
    """
    from ray import tune

    clock = TrialClock()
    torch.set_num_threads(max(1, int(inputs.spec.cpus_per_trial)))
    state = worker_state(inputs)
    params = dict(config)
    shape = inputs.model.input_shape
    known: dict[str, Any] = {"params_json": json.dumps(params, sort_keys=True), "node": _node_id(), "feasible": True,
                             "repaired": False, "hardware": describe_device(state.device), "epoch": 0}
    try:
        candidate, fix = repaired_candidate(state, inputs, params)
        if fix is not None:
            known.update(feasible=fix.feasible, repaired=fix.repaired)
            if not fix.feasible:
                # Never trained: reported once so the searcher learns the region is out of budget.
                tune.report({**known, "val_accuracy": 0.0, "macs": fix.macs,
                             "macs_fraction": fix.macs / inputs.teacher_macs, "plan": json.dumps(fix.plan.to_dict()),
                             **dict(fix.costs), **clock.seconds()})
                return
        known["plan"] = json.dumps(candidate.plan.to_dict(), sort_keys=True)
        with clock.timing("prune"):
            student, _, meta = make_candidate_student(state.registry, inputs, state.teacher, candidate, state.device)
            macs, n_params = count_macs_params(student, shape)
            # Predicted from the driver's table, never timed here: other trials share these
            # cores (issue 10). No batch-1 latency: only the final students are timed.
            if inputs.latency_table is not None:
                known[LATENCY_METRIC] = inputs.latency_table.predict_model(student)
        known.update(macs=macs, params=n_params, macs_fraction=macs / inputs.teacher_macs, scorer=meta["scorer"],
                     distiller=meta["distiller"])

        history: list[float] = []

        def on_epoch(epoch: int, metrics: dict[str, Any]) -> None:
            clock.stop()  # saving and reporting are overhead, not training
            known["epoch"] = epoch
            history.append(metrics["val_accuracy"])
            with tempfile.TemporaryDirectory() as folder:
                save_student(Path(folder) / "student.pt", student, meta)
                # A JSON string, not a list, so Tune stores it as one value; the final choice
                # compares trials stopped early at the epochs they all reached (prunetune.searching.final).
                report = {**known, "val_accuracy": metrics["val_accuracy"], "val_loss": metrics["val_loss"],
                          "val_history": json.dumps(history), "train_loss": metrics["train_loss"],
                          **clock.seconds()}
                tune.report(report, checkpoint=tune.Checkpoint.from_directory(folder))
            clock.start("train")

        with clock.timing("train"):
            distill_candidate(state, inputs, candidate, student, inputs.spec.epochs, on_epoch)
    except Exception as exc:
        if type(exc).__module__.partition(".")[0] == "ray":  # Tune's and Ray's own signals are theirs
            raise
        # The searcher sees the worst accuracy; the leaderboard row keeps no accuracy for it.
        tune.report({**known, "val_accuracy": 0.0, "error": failure_text(exc), **clock.seconds()})
