"""Export a saved student for deployment: ONNX, TorchScript or a torch.export ExportedProgram.

The exported model takes a batch of the student's images and returns its logits, and is
checked against the PyTorch student on a batch before the file is written: an export that
computes something else is refused, not shipped.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunetune.errors import UsageError
from prunetune.host.manager import Host
from prunetune.results.checkpoint import load_student

__all__ = ["FORMATS", "TOLERANCE", "export_model", "export_student", "run_exported"]

#: Format name -> the file suffix it writes.
FORMATS = {"onnx": ".onnx", "torchscript": ".ts.pt", "exported-program": ".pt2"}
#: Largest difference allowed between the exported model's logits and the student's.
TOLERANCE = 1e-4
_ONNX_MODULES = ("onnx", "onnxruntime", "onnxscript")


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r} (valid: {', '.join(FORMATS)})")


def _write(model: nn.Module, example: torch.Tensor, fmt: str, path: Path) -> None:
    # The exporters' own deprecation notices and progress logs are about torch, not the user's
    # student: kept out of prunetune's output.
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _export(model, example, fmt, path)
    finally:
        onnx_log.setLevel(level)


def _export(model: nn.Module, example: torch.Tensor, fmt: str, path: Path) -> None:
    batch = ({0: torch.export.Dim("batch", min=1)},)  # any batch size, not only the example's
    if fmt == "torchscript":
        torch.jit.save(torch.jit.trace(model, example), str(path))
    elif fmt == "exported-program":
        torch.export.save(torch.export.export(model, (example,), dynamic_shapes=batch), str(path))
    else:  # weights inside the file (external_data=False): one file to ship
        torch.onnx.export(model, (example,), str(path), input_names=["images"], output_names=["logits"],
                          dynamic_shapes=batch, dynamo=True, external_data=False, verbose=False)


def run_exported(path: str | os.PathLike[str], fmt: str, x: torch.Tensor) -> torch.Tensor:
    """The logits the exported file at ``path`` gives for ``x`` (on the CPU)."""
    if fmt == "torchscript":
        return torch.jit.load(str(path))(x)
    if fmt == "exported-program":
        return torch.export.load(str(path)).module()(x)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def export_model(model: nn.Module, input_shape: tuple[int, ...], fmt: str, target: str | os.PathLike[str]) -> float:
    """Export ``model`` (taking images of ``input_shape``) as ``fmt`` to ``target``; returns the
    largest difference between its logits and the exported file's, checked before the file is
    written. ``model`` is left as it was.

    Raises:
        UsageError: an unknown format, ONNX asked for without its packages, an export that
            fails, or one that differs from the model by more than :data:`TOLERANCE`. Nothing
            is written then.
    """
    _check_format(fmt)
    if fmt == "onnx":
        missing = [m for m in _ONNX_MODULES if importlib.util.find_spec(m) is None]
        if missing:
            raise UsageError(f"--format onnx needs {', '.join(missing)}: pip install 'prunetune[onnx]'")
    target = Path(target)
    # A copy: the caller's model keeps its device and mode. Its forward hooks (the output
    # select_output picks) are traced by all three exporters.
    student = copy.deepcopy(model).cpu().eval()
    example = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    check = torch.randn(3, *input_shape, generator=torch.Generator().manual_seed(1))  # another batch size too
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target first: a failed or wrong export leaves nothing behind.
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        staged = Path(scratch) / target.name
        try:
            with torch.no_grad():
                _write(student, example, fmt, staged)
                want, got = student(check), run_exported(staged, fmt, check)
        except Exception as exc:  # noqa: BLE001 - the exporter's own failure, said in one line
            reason = (str(exc).strip().splitlines() or [""])[0]
            raise UsageError(f"exporting as {fmt} failed: {type(exc).__name__}: {reason}") from None
        diff = float((want - got).abs().max())
        if not diff <= TOLERANCE:
            raise UsageError(f"the {fmt} export differs from the student by {diff:.2e} "
                             f"(more than {TOLERANCE:g}): not written")
        os.replace(staged, target)
    return diff


def export_student(path: str, fmt: str, out: str | None = None, model: str | None = None,
                   host: Host | None = None) -> dict[str, Any]:
    """Export the student at ``path`` as ``fmt`` to ``out`` (default: beside it, with the
    format's suffix); returns ``{"path", "format", "max_abs_diff"}``.

    Raises:
        UsageError: as :func:`export_model`, or a student that cannot be loaded, or an ``out``
            that is the student itself. Nothing is written then.
    """
    _check_format(fmt)
    target = Path(out) if out else Path(path).with_suffix(FORMATS[fmt])
    if target.resolve() == Path(path).resolve():
        raise UsageError(f"the export would overwrite the student {path!r}: pass another --out")
    host = host or Host.create()
    net, meta = load_student(host.registry, path, model)
    diff = export_model(net, tuple(meta["input_shape"]), fmt, target)
    return {"path": str(target), "format": fmt, "max_abs_diff": diff}
