"""A conformance suite for pruner plugins.

Subclass :class:`PrunerConformance` in a test module, name the subclass ``Test...`` and
implement :meth:`~PrunerConformance.make_pruner`; pytest then runs every check on your pruner::

    from prunetune.testing.pruners import PrunerConformance

    class TestMyPruner(PrunerConformance):
        def make_pruner(self):
            return MyPruner(MyPruner.Config())

Students are built as the pipeline builds them (:func:`~prunetune.student.surgery.build_student`)
from :func:`~prunetune.testing.scorers.conformance_model` (a residual add, a concatenation and a
depthwise conv), scored by ``l1``, and reloaded as a checkpoint reloads them: a fresh model,
``replay`` of the JSON form of the record, then ``load_state_dict``. Channels a ``physical``
record names must be gone; a record that is not physical keeps the teacher's shapes, and the
channels it names are zero. Weights a pruner zeroes must stay zero through training and reload.
Override ``make_model`` and ``make_context`` to run the checks on another architecture, and
``make_scorer`` for a pruner that needs a particular scorer.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import json
from collections.abc import Callable

import torch
from torch import nn

from prunetune.components.pruning import PruneJob, Pruner, PruneRecord, recorded_groups
from prunetune.components.scoring import ScoreContext, Scorer
from prunetune.errors import UsageError
from prunetune.host.manager import Host
from prunetune.structure.kernels import apply_kernels
from prunetune.structure.measure import count_macs_params
from prunetune.structure.plan import StudentPlan
from prunetune.student.surgery import build_student, check_output_shape
from prunetune.testing.contract import check_component_contract, eval_outputs, state_shapes
from prunetune.testing.scorers import ModelSnapshot, conformance_context, conformance_model

__all__ = ["Pruned", "PrunerConformance"]

Retrain = Callable[[nn.Module, int], None]


@dataclasses.dataclass
class Pruned:
    """A teacher, the student a pruner made of it, the record and what they were made with."""

    teacher: nn.Module
    student: nn.Module
    record: PruneRecord
    plan: StudentPlan
    ctx: ScoreContext


def _json_record(record: PruneRecord) -> PruneRecord:
    """``record`` after the trip through JSON that a student file gives it."""
    return PruneRecord.from_dict(json.loads(json.dumps(record.to_dict(), allow_nan=False)))


def _cut_zeros(pruned: Pruned) -> dict[str, torch.Tensor] | None:
    """Per parameter of the student, the zeros the pruner made; None where that cannot be told.

    In the teacher's shapes, the entries zero in the student and not in the teacher; in other
    shapes, every zero of the student, provided the teacher had none.
    """
    teacher = dict(pruned.teacher.named_parameters())
    student = dict(pruned.student.named_parameters())
    if state_shapes(pruned.student) == state_shapes(pruned.teacher):
        made = {name: (p == 0) & (teacher[name] != 0) for name, p in student.items()}
    elif any(bool((p == 0).any()) for p in teacher.values()):
        return None
    else:
        made = {name: p == 0 for name, p in student.items()}
    return {name: mask for name, mask in made.items() if bool(mask.any())}


def _train_steps(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], steps: int = 3) -> None:
    """Steps that would revive any weight not held at zero: a large rate, momentum, decay."""
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-2)
    model.train()
    for step in range(steps):
        x, y = batches[step % len(batches)]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _nudge(model: nn.Module) -> None:
    """An update that moves every weight, as a step does where gradients reach them: cut
    weights whose gradient is zero anyway (behind a dead ReLU) would stay zero without a mask."""
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1)


def _assert_still_zero(model: nn.Module, zeros: dict[str, torch.Tensor], x: torch.Tensor, where: str) -> None:
    # state_dict right after a step (what a checkpoint holds), parameters after the next forward.
    state = model.state_dict()
    for name, mask in zeros.items():
        assert not state[name][mask].any(), f"{where}: cut weights of {name} are saved non-zero"
    eval_outputs(model, x)
    params = dict(model.named_parameters())
    for name, mask in zeros.items():
        assert not params[name][mask].any(), f"{where}: cut weights of {name} came back in training"


class PrunerConformance(abc.ABC):
    """Checks every pruner must pass; subclass it as ``Test...`` and implement ``make_pruner``."""

    #: The share of each group the checks cut.
    ratio: float = 0.5

    @abc.abstractmethod
    def make_pruner(self) -> Pruner:
        """A fresh instance of the pruner under test."""

    def make_scorer(self) -> Scorer:
        """The scorer the pruner is given; override for a pruner that needs another."""
        # Through the registry: prunetune's core never imports a plugin module.
        return Host.create().registry.create("scorer", "l1")

    def make_model(self, seed: int = 0) -> nn.Module:
        """The teacher, in eval mode; override to test on another architecture."""
        return conformance_model(seed)

    def make_context(self, model: nn.Module, seed: int = 0) -> ScoreContext:
        """Example input and calibration batches for :meth:`make_model`'s model."""
        return conformance_context(model, seed=seed)

    def make_plan(self, ratio: float) -> StudentPlan:
        """The plan cutting every group by ``ratio``."""
        return StudentPlan(ratio=ratio)

    def _build(
        self,
        plan: StudentPlan | None = None,
        pruner: Pruner | None = None,
        seed: int = 0,
        retrain: Retrain | None = None,
        global_seed: int | None = None,
    ) -> Pruned:
        plan = self.make_plan(self.ratio) if plan is None else plan
        teacher = self.make_model()
        ctx = self.make_context(teacher, seed=seed)
        pruner = self.make_pruner() if pruner is None else pruner
        if global_seed is not None:
            torch.manual_seed(global_seed)
        student, record = build_student(
            teacher, plan, pruner, self.make_scorer(), ctx.example_input, ctx.calibration, seed, retrain
        )
        return Pruned(teacher, student, record, plan, ctx)

    def _rebuild(self, pruned: Pruned) -> nn.Module:
        """The student as a checkpoint rebuilds it: differently initialised, then ``replay``."""
        fresh = self.make_model(seed=1)
        apply_kernels(fresh, pruned.plan.kernels)
        example = torch.zeros_like(pruned.ctx.example_input)
        self.make_pruner().replay(fresh, _json_record(pruned.record), example)
        return fresh

    def _assert_cut(self, pruned: Pruned) -> None:
        """Removed channels (physical record) shrink the model; zeroed ones are zero in its weights."""
        shape = tuple(pruned.ctx.example_input.shape[1:])
        macs_t, params_t = count_macs_params(pruned.teacher, shape)  # type: ignore[arg-type]
        macs_s, params_s = count_macs_params(pruned.student, shape)  # type: ignore[arg-type]
        assert macs_s <= macs_t and params_s <= params_t, "pruning made the model bigger"
        removed = any(pruned.record.removed.values())
        if pruned.record.physical and removed:
            assert macs_s < macs_t and params_s < params_t, "the record says channels were removed, but none was"
            return
        if not pruned.record.physical:
            assert state_shapes(pruned.student) == state_shapes(pruned.teacher), "a non-physical cut changed shapes"
        assert _cut_zeros(pruned), "a positive ratio removed no channel and zeroed no weight"
        modules = dict(pruned.student.named_modules())
        reference = copy.deepcopy(pruned.teacher)
        for group, channels in recorded_groups(reference, pruned.record, pruned.ctx.example_input):
            for member in group.producers:
                rows = [i for i, root in zip(member.idxs, member.root_idxs) if root in set(channels)]
                weight = modules[member.name].weight  # type: ignore[union-attr]
                assert not weight[rows].any(), f"masked channels of {member.name} are not zero"

    def test_component_contract(self) -> None:
        check_component_contract(self.make_pruner(), Pruner, "pruner")

    def test_keeps_output_shape(self) -> None:
        pruned = self._build()
        check_output_shape("under test", pruned.teacher, pruned.student, pruned.ctx.example_input)
        x = pruned.ctx.calibration[0][0]
        out = eval_outputs(pruned.student, x)
        assert out.shape == eval_outputs(pruned.teacher, x).shape and torch.isfinite(out).all()

    def test_leaves_teacher_and_data_unchanged(self) -> None:
        teacher = self.make_model()
        next(teacher.parameters()).requires_grad_(False)
        for param in teacher.parameters():
            param.grad = torch.full_like(param, 0.25)
        ctx = self.make_context(teacher)
        before = ModelSnapshot.of(teacher)
        data = [t.clone() for batch in ctx.calibration for t in batch] + [ctx.example_input.clone()]
        build_student(teacher, self.make_plan(self.ratio), self.make_pruner(), self.make_scorer(),
                      ctx.example_input, ctx.calibration)
        changed = before.changes(ModelSnapshot.of(teacher))
        assert not changed, f"building a student changed the teacher: {', '.join(changed)}"
        after = [t for batch in ctx.calibration for t in batch] + [ctx.example_input]
        assert all(torch.equal(a, b) for a, b in zip(data, after, strict=True)), "inputs changed"

    def test_record_round_trips_through_json(self) -> None:
        record = self._build().record
        assert isinstance(record, PruneRecord)
        data = json.loads(json.dumps(record.to_dict(), allow_nan=False))
        assert PruneRecord.from_dict(data).to_dict() == data

    def test_replay_rebuilds_the_student(self) -> None:
        pruned = self._build()
        rebuilt = self._rebuild(pruned)
        assert state_shapes(rebuilt) == state_shapes(pruned.student), "replay built another architecture"
        rebuilt.load_state_dict(pruned.student.state_dict())
        x = pruned.ctx.calibration[0][0]
        torch.testing.assert_close(eval_outputs(rebuilt, x), eval_outputs(pruned.student, x), atol=1e-5, rtol=1e-5)

    def test_ratio_zero_changes_nothing(self) -> None:
        pruned = self._build(self.make_plan(0.0))
        assert state_shapes(pruned.student) == state_shapes(pruned.teacher)
        assert not any(pruned.record.removed.values()), "ratio 0 recorded a cut"
        x = pruned.ctx.calibration[0][0]
        torch.testing.assert_close(eval_outputs(pruned.student, x), eval_outputs(pruned.teacher, x), atol=1e-5, rtol=1e-5)

    def test_positive_ratio_cuts(self) -> None:
        self._assert_cut(self._build())

    def test_zeroed_weights_stay_zero_through_training(self) -> None:
        pruned = self._build()
        zeros = _cut_zeros(pruned)
        if not zeros:
            assert pruned.record.physical, "a non-physical cut zeroed no weight"
            return
        rebuilt = self._rebuild(pruned)
        rebuilt.load_state_dict(pruned.student.state_dict())
        for model, where in ((pruned.student, "student"), (rebuilt, "reloaded student")):
            _train_steps(model, list(pruned.ctx.calibration))
            _nudge(model)
            _assert_still_zero(model, zeros, pruned.ctx.example_input, where)

    def test_same_seed_same_student(self) -> None:
        # Different global RNG states: a pruner must draw only from the job's seed.
        first = self._build(seed=7, global_seed=1)
        second = self._build(seed=7, global_seed=2)
        assert first.record.to_dict() == second.record.to_dict()
        a, b = first.student.state_dict(), second.student.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def test_one_instance_prunes_many_students(self) -> None:
        # A search builds every student with one pruner instance.
        pruner = self.make_pruner()
        first = self._build(pruner=pruner)
        record, before = first.record.to_dict(), ModelSnapshot.of(first.student)
        other = self.make_plan(self.ratio / 2)
        second = self._build(other, pruner=pruner)
        changed = before.changes(ModelSnapshot.of(first.student))
        assert not changed, f"pruning a second student changed the first: {', '.join(changed)}"
        assert first.record.to_dict() == record, "pruning a second student changed the first record"
        alone = self._build(other)
        assert second.record.to_dict() == alone.record.to_dict()
        assert state_shapes(second.student) == state_shapes(alone.student)

    def test_macs_target_is_refused_up_front_or_met(self) -> None:
        target = 0.6
        plan = StudentPlan(macs_target=target)
        try:
            self.make_pruner().check(plan)
        except UsageError:
            teacher = self.make_model()
            ctx = self.make_context(teacher)
            before = ModelSnapshot.of(teacher)
            job = PruneJob(teacher, plan, self.make_scorer(), ctx)
            try:
                self.make_pruner().prune(job)
            except UsageError:
                pass
            else:
                raise AssertionError("check refused the plan, but prune took it") from None
            changed = before.changes(ModelSnapshot.of(teacher))
            assert not changed, f"a refused plan changed the model: {', '.join(changed)}"
            return
        pruned = self._build(plan)
        check_output_shape("under test", pruned.teacher, pruned.student, pruned.ctx.example_input)
        self._assert_cut(pruned)
        if pruned.record.physical:  # a masking pruner leaves dense MACs as they were
            shape = tuple(pruned.ctx.example_input.shape[1:])
            macs_t, _ = count_macs_params(pruned.teacher, shape)  # type: ignore[arg-type]
            macs_s, _ = count_macs_params(pruned.student, shape)  # type: ignore[arg-type]
            assert macs_s <= target * macs_t, f"MACs fell to {macs_s / macs_t:.2f}, not {target}"

    def test_back_in_eval_mode_after_retraining(self) -> None:
        batches = list(self.make_context(self.make_model()).calibration)

        def retrain(model: nn.Module, steps: int) -> None:
            _train_steps(model, batches, steps=1)

        pruned = self._build(retrain=retrain)
        training = [name for name, m in pruned.student.named_modules() if m.training]
        assert not training, f"the student was left in train mode: {', '.join(training[:3])}"
        check_output_shape("under test", pruned.teacher, pruned.student, pruned.ctx.example_input)
        assert state_shapes(self._rebuild(pruned)) == state_shapes(pruned.student)

    def test_student_is_trainable(self) -> None:
        pruned = self._build()
        params = list(pruned.student.parameters())
        assert all(p.is_leaf and p.requires_grad for p in params), "parameters must be trainable leaves"
        x, y = pruned.ctx.calibration[0]
        pruned.student.train()
        nn.functional.cross_entropy(pruned.student(x), y).backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
