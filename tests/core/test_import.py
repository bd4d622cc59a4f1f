from __future__ import annotations

import subprocess
import sys


def test_importing_prunetune_imports_neither_ray_nor_optuna() -> None:
    code = (
        "import sys, prunetune, prunetune.cli, prunetune.host.manager, prunetune.jobs.compress;"
        "bad = [m for m in ('ray', 'optuna') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_help_does_not_import_torch() -> None:
    code = "import sys; from prunetune.cli.parser import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
