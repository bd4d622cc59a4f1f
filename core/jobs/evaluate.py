"""Reload a saved student and measure it again on the test split it was measured on."""

from __future__ import annotations

from typing import Any

from prunetune.errors import UsageError
from prunetune.host.manager import Host
from prunetune.results.checkpoint import load_student
from prunetune.structure.measure import count_macs_params
from prunetune.training.devices import select_device
from prunetune.training.loop import evaluate

__all__ = ["evaluate_checkpoint"]


def evaluate_checkpoint(path: str, device: str = "auto", host: Host | None = None,
                        model: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(metrics saved with the student, metrics measured now)``: accuracy, MACs, params.

    ``model`` is the ``package.module:factory`` a student built from one needs (see
    :func:`~prunetune.results.checkpoint.load_student`).

    Raises:
        UsageError: the file is not a student that can be evaluated (see ``load_student``), or
            lacks the dataset and metrics it was measured with.
    """
    host = host or Host.create()
    dev = select_device(device)
    net, meta = load_student(host.registry, path, model)
    metrics = meta.get("metrics")
    lacking = [k for k in ("dataset", "seed", "val_fraction") if k not in meta]
    if not isinstance(metrics, dict) or not all(k in metrics for k in ("accuracy", "macs", "params")):
        lacking.append("metrics")
    if lacking:
        raise UsageError(f"student {path!r} cannot be evaluated: its description lacks {', '.join(lacking)}")
    source = host.registry.create("dataset", meta["dataset"], meta.get("dataset_options", {}))
    try:
        seed, val_fraction = int(meta["seed"]), float(meta["val_fraction"])
    except (TypeError, ValueError):
        raise UsageError(f"student {path!r} has a seed or validation share that is not a number") from None
    data = source.load(seed, val_fraction)
    net.to(dev)
    accuracy, _ = evaluate(net, data.test_x, data.test_y, dev)
    macs, params = count_macs_params(net, data.input_shape)
    saved = {k: metrics[k] for k in ("accuracy", "macs", "params")}
    return saved, {"accuracy": accuracy, "macs": macs, "params": params}
