"""What every job starts from: the components it named, its data, its model and its teacher.

``compress``, ``search`` and the benchmarks set up the same way: :func:`set_up_job` resolves and
checks everything the user named and loads the data (nothing trained, nothing written), then
:meth:`JobSetup.obtain_teacher` loads, reuses or trains the teacher. The teacher's architecture
is built only by :meth:`~prunetune.components.models.ModelSpec.build`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunetune.components.data import DataSplits
from prunetune.components.models import ModelSpec
from prunetune.components.scoring import calibration_batches
from prunetune.errors import UsageError
from prunetune.host.manager import Host
from prunetune.host.registry import Registry
from prunetune.jobs.spec import JobSpec
from prunetune.training.recipe import TrainRecipe
from prunetune.training.teacher import obtain_teacher

__all__ = ["JobSetup", "check_model", "set_up_job"]

#: ``(kind, name, options)`` of a component a job names.
Named = tuple[str, str, Any]


@dataclasses.dataclass
class JobSetup:
    """A job resolved and checked: its components made once, its data loaded, its model known."""

    spec: JobSpec
    host: Host
    model: ModelSpec
    data: DataSplits
    versions: dict[str, str]  # "kind.name" -> "distribution version" of every component named
    components: dict[str, Any]  # kind -> the instance made when its name and options were checked

    @property
    def registry(self) -> Registry:
        return self.host.registry

    def component(self, kind: str) -> Any:
        """The component of ``kind`` the spec (or ``extra``) named, made once when checked."""
        return self.components[kind]

    def teacher_recipe(self) -> TrainRecipe:
        """How the teacher trains when neither its checkpoint nor the cache has it."""
        s = self.spec
        return TrainRecipe(epochs=s.teacher_epochs, batch_size=s.batch_size, lr=s.teacher_lr, seed=s.seed)

    def obtain_teacher(self, device: torch.device, echo: Callable[[str], None] = print) -> tuple[nn.Module, str]:
        """The trained teacher on ``device`` in eval mode, and where it came from: for a model
        handed over as an object, a copy of it (the caller's keeps its device, mode and
        weights), else the checkpoint, the cache, or trained now."""
        if self.model.is_live:
            echo("teacher: given")
            return self.model.build(self.registry).to(device).eval(), "given"
        model, source = obtain_teacher(lambda: self.model.build(self.registry), self.model.meta(), self.data,
                                       self.teacher_recipe(), device, checkpoint=self.spec.teacher_checkpoint,
                                       progress=self.spec.progress)
        echo(f"teacher: {source}")
        return model, source

    def calibration(self, device: torch.device, batches: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The scorers' calibration batches from the training split (see :func:`calibration_batches`)."""
        return calibration_batches(self.data.train_x, self.data.train_y, batches, device)


def check_model(model: nn.Module, spec: ModelSpec, data: DataSplits) -> nn.Module:
    """``model`` (of ``spec``), checked to take the data's images and give one logit per class.

    Raises:
        UsageError: the images are not square, the model cannot take them, or it does not
            output one logit per class.
    """
    c, h, w = data.input_shape
    if h != w:
        raise UsageError(f"images are {h}x{w}; models take square images only")
    try:
        with torch.no_grad():
            out = model.eval()(data.train_x[:2])
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise UsageError(f"model {spec.model!r} cannot take images of shape {c}x{h}x{w}: {reason}") from None
    if isinstance(out, (tuple, list, dict)):
        raise UsageError(f"model {spec.model!r} returns {len(out)} outputs: name the logits with --logits "
                         f"INDEX or NAME (and any output layers to keep whole with --classifier LAYER,...)")
    if not isinstance(out, torch.Tensor) or out.shape != (2, data.num_classes):
        shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UsageError(f"model {spec.model!r} outputs {shape} per image, "
                         f"expected ({data.num_classes},) for {data.num_classes} classes")
    return model


def set_up_job(spec: JobSpec, host: Host | None = None, extra: Iterable[Named] = (),
               data: DataSplits | None = None, teacher: nn.Module | None = None) -> tuple[JobSetup, nn.Module]:
    """Resolve and check what ``spec`` (and ``extra``) name, load the data, build the model.

    ``data`` and ``teacher`` are a Python caller's own (the dataset and model the spec names
    are then not used). Returns the setup and an untrained (or, for ``teacher``, a copied)
    model of the teacher's architecture, checked against the data.

    Raises:
        UsageError: any bad input, before anything is trained or written.
    """
    host = host or Host.create()
    registry = host.registry
    named: list[Named] = [("scorer", spec.scorer, spec.scorer_options), ("pruner", spec.pruner, spec.pruner_options),
                          ("distiller", spec.distiller, spec.distiller_options), *extra]
    if data is None:
        named.append(("dataset", spec.dataset, spec.dataset_options))
    versions, components = {}, {}
    for kind, name, options in named:
        components[kind] = registry.create(kind, name, options)  # a bad name or option fails here, before any loading
        component = registry.get(kind, name)
        versions[f"{kind}.{name}"] = f"{component.distribution} {component.version}"
    if teacher is None:
        ModelSpec(spec.model, spec.model_options).factory(registry)  # the model's name and options
    if spec.teacher_checkpoint is not None and not Path(spec.teacher_checkpoint).is_file():
        raise UsageError(f"teacher checkpoint {spec.teacher_checkpoint!r} does not exist")
    if data is None:
        data = components["dataset"].load(spec.seed, spec.val_fraction)
    if teacher is None:
        model = ModelSpec(spec.model, spec.model_options, data.input_shape, data.num_classes,
                          logits=spec.logits, heads=tuple(spec.classifier))
    else:
        model = ModelSpec.of_module(teacher, data.input_shape, data.num_classes, spec.logits, tuple(spec.classifier))
    setup = JobSetup(spec, host, model, data, versions, components)
    return setup, check_model(model.build(registry), model, data)
