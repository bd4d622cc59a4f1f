"""Reload a saved student and measure it again on the test split it was measured on."""

from __future__ import annotations

from typing import Any

from prunetune.checkpoint import load_student
from prunetune.devices import select_device
from prunetune.host import Host
from prunetune.measure import count_macs_params
from prunetune.train import evaluate

__all__ = ["evaluate_checkpoint"]


def evaluate_checkpoint(path: str, device: str = "auto", host: Host | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(metrics saved with the student, metrics measured now)``: accuracy, MACs, params."""
    host = host or Host.create()
    model, meta = load_student(host.registry, path)
    dev = select_device(device)
    source = host.registry.create("dataset", meta["dataset"], meta.get("dataset_options", {}))
    data = source.load(int(meta["seed"]), float(meta["val_fraction"]))
    model.to(dev)
    accuracy, _ = evaluate(model, data.test_x, data.test_y, dev)
    macs, params = count_macs_params(model, data.input_shape)
    saved = {k: meta["metrics"][k] for k in ("accuracy", "macs", "params")}
    return saved, {"accuracy": accuracy, "macs": macs, "params": params}
