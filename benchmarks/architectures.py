"""Which architectures prune, and what is left whole: the README's architecture table (issue 12).

For every architecture: build it untrained for 1-channel 32x32 images and 10 classes through
prunetune's own model path (``torchvision:NAME``, ``timm:NAME``, a zoo name or a test model),
find its channel groups, cut every group at ratio 0.5 with the ``channel`` pruner and ``l1``
scores, and report the MACs kept, the groups cut and those left whole (with the one-line reason
prunetune gives). Then check the cut as the tests do: the student's logits against the teacher's
with the same channels zeroed (largest difference; where a cut group has a LayerNorm or
GroupNorm they differ by design, the norm's statistics being over the channels kept), and a
training-mode forward pass of the student.

torchvision and timm are read from ``--libs`` (a ``pip install --target`` folder) when they are
not installed. torchvision 0.28's wheels are CUDA builds: with the CPU torch its C++ detection
ops do not load, so its meta-kernel registrations are skipped (``--stub-ops``); the
classification models use none of those ops.

Usage: .venv/bin/python benchmarks/architectures.py [--libs /tmp/tvpkgs] [--stub-ops] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import types
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from prunetune.components.models import ModelSpec  # noqa: E402
from prunetune.errors import UsageError  # noqa: E402
from prunetune.host.manager import Host  # noqa: E402
from prunetune.results.report import format_table  # noqa: E402
from prunetune.structure.groups import find_groups  # noqa: E402
from prunetune.structure.measure import count_macs_params  # noqa: E402
from prunetune.structure.plan import StudentPlan  # noqa: E402
from prunetune.student.surgery import build_student  # noqa: E402

SHAPE = (1, 32, 32)
#: (label, --model, model options, logits, classifier)
ARCHITECTURES: list[tuple[str, str, dict[str, Any], Any, tuple[str, ...]]] = [
    ("zoo resnet", "resnet", {}, None, ()),
    ("zoo mobilenet", "mobilenet", {}, None, ()),
    ("zoo vgg", "vgg", {}, None, ()),
    ("tests Grouped (RegNet block)", "tests.core.patterns:Grouped", {}, None, ()),
    ("tests Ghost (concat + depthwise)", "tests.core.patterns:Ghost", {}, None, ()),
    ("tests GhostResidual (tied channels)", "tests.core.patterns:GhostResidual", {}, None, ()),
    ("tests GroupNormNet", "tests.core.patterns:GroupNormNet", {}, None, ()),
    ("tests Shuffle (split + shuffle)", "tests.core.patterns:Shuffle", {}, None, ()),
    ("tests Aux (aux head in training)", "tests.core.patterns:Aux", {}, 0, ()),
    ("tests TupleOut ((logits, aux))", "tests.core.patterns:TupleOut", {}, 0, ()),
    ("torchvision resnet18", "torchvision:resnet18", {"adapt_input": True}, None, ()),
    ("torchvision mobilenet_v2", "torchvision:mobilenet_v2", {"adapt_input": True}, None, ()),
    ("torchvision mobilenet_v3_small", "torchvision:mobilenet_v3_small", {"adapt_input": True}, None, ()),
    ("torchvision densenet121", "torchvision:densenet121", {"adapt_input": True}, None, ()),
    ("torchvision efficientnet_b0", "torchvision:efficientnet_b0", {"adapt_input": True}, None, ()),
    ("torchvision convnext_tiny", "torchvision:convnext_tiny", {"adapt_input": True}, None, ()),
    ("torchvision googlenet (aux_logits)", "torchvision:googlenet",
     {"adapt_input": True, "aux_logits": True, "init_weights": True}, "logits", ()),
    ("torchvision shufflenet_v2_x0_5", "torchvision:shufflenet_v2_x0_5", {"adapt_input": True}, None, ()),
    ("torchvision regnet_y_400mf", "torchvision:regnet_y_400mf", {"adapt_input": True}, None, ()),
    ("torchvision regnet_x_400mf", "torchvision:regnet_x_400mf", {"adapt_input": True}, None, ()),
    ("timm efficientnet_b0", "timm:efficientnet_b0", {}, None, ()),
    ("timm mobilenetv3_small_050", "timm:mobilenetv3_small_050", {}, None, ()),
    ("timm convnext_atto", "timm:convnext_atto", {}, None, ()),
    ("timm regnety_002", "timm:regnety_002", {}, None, ()),
    ("timm ghostnet_050", "timm:ghostnet_050", {}, None, ()),
]


def load_libraries(libs: str | None, stub_ops: bool) -> None:
    if libs:
        sys.path.append(libs)
    if stub_ops:
        sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")


def masked(teacher: nn.Module, removed: dict[str, list[int]], example: torch.Tensor) -> nn.Module:
    """``teacher`` with ``removed``'s channels zeroed where they are made (producers and norms)."""
    model = copy.deepcopy(teacher)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups = {g.name: g for g in find_groups(model, example)}
    with torch.no_grad():
        for name, channels in removed.items():
            cut = set(channels)
            for member in groups[name].producers + groups[name].norms:
                idxs = [i for i, root in zip(member.idxs, member.root_idxs) if root in cut]
                for param in (getattr(member.module, "weight", None), getattr(member.module, "bias", None)):
                    if isinstance(param, torch.Tensor):
                        param[idxs] = 0
    return model


def randomise_norms(model: nn.Module) -> None:
    """Norm scales, shifts and statistics away from their initial values, so zeroed channels show."""
    torch.manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                if module.running_mean is not None:
                    module.running_mean.uniform_(-0.2, 0.2)
                    module.running_var.uniform_(0.5, 1.5)


def one(label: str, spec: str, options: dict[str, Any], logits: Any, heads: tuple[str, ...]) -> tuple[str, ...]:
    registry = Host.create().registry
    start = time.perf_counter()
    try:
        teacher = ModelSpec(spec, options, SHAPE, 10, logits=logits, heads=heads).build(registry).eval()
    except UsageError as exc:
        return (label, "-", "-", "-", f"not built: {exc}", "-", "-")
    randomise_norms(teacher)
    example = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        groups = find_groups(teacher, example[:1])
        pruner, scorer = registry.create("pruner", "channel", {}), registry.create("scorer", "l1", {})
        try:
            student, record = build_student(teacher, StudentPlan(ratio=0.5), pruner, scorer, example[:1])
        except Exception as exc:  # noqa: BLE001 - the table reports it
            return (label, str(len(groups)), "-", "-", f"FAILED: {type(exc).__name__}: {str(exc)[:80]}", "-", "-")
    whole = sorted({str(w.message) for w in caught if "is left whole" in str(w.message)})
    base, _ = count_macs_params(teacher, SHAPE)
    macs, _ = count_macs_params(student, SHAPE)
    removed = {k: list(v) for k, v in record.removed.items()}
    with torch.no_grad():
        diff = float((student.eval()(example) - masked(teacher, removed, example[:1])(example)).abs().max())
    by_name = {g.name: g for g in groups}
    stats = sorted({type(m.module).__name__ for name in removed for m in by_name[name].norms
                    if isinstance(m.module, (nn.LayerNorm, nn.GroupNorm))})
    equivalence = f"{diff:.1e}" + (f" ({'/'.join(stats)}: by design)" if stats else "")
    try:
        student.train()(example)
        train = "ok"
    except Exception as exc:  # noqa: BLE001
        train = f"FAILED: {type(exc).__name__}"
    # "group 'x' is left whole: why" -> "N x why (first: 'x')", one entry per reason.
    by_reason: dict[str, list[str]] = {}
    for line in whole:
        head, why = line.split(": ", 1)
        by_reason.setdefault(why, []).append(head.split("'")[1])
    reasons = "; ".join(f"{len(names)} x {why} (first: {names[0]})" for why, names in by_reason.items()) or "-"
    print(f"{label}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return (label, str(len(groups) + len(whole)), str(len(removed)), f"{100 * macs / base:.1f}%", reasons,
            equivalence, train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--libs", default=None, help="a folder holding torchvision and timm")
    parser.add_argument("--stub-ops", action="store_true", help="skip torchvision's meta-kernel registrations")
    parser.add_argument("--only", default=None, help="labels' words to keep, comma-separated")
    args = parser.parse_args()
    load_libraries(args.libs, args.stub_ops)
    torch.set_num_threads(2)
    wanted = [w.strip() for w in args.only.split(",")] if args.only else None
    rows = [one(*arch) for arch in ARCHITECTURES if wanted is None or any(w in arch[0] for w in wanted)]
    header = ("architecture", "groups", "cut", "MACs kept at 0.5", "left whole (prunetune's line)",
              "max |pruned - masked|", "train forward")
    print(format_table(header, rows))
    print(f"\ntorch {torch.__version__}; input {SHAPE}, 10 classes, untrained weights, norms randomised; "
          f"{time.strftime('%Y-%m-%d')}")


if __name__ == "__main__":
    main()
