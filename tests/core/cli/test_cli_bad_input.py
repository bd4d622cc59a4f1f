"""Every kind of bad input, through the command line: one ``prunetune: error: ...`` line, exit
code 2, no traceback, nothing written (run folders, students, the teacher cache), and the
leaderboard unchanged.

Each case builds its argv in a fresh folder that is also the working directory, so anything a
command would write by default (``student.pt``, ``runs/``, ``leaderboard/``) lands there and is
seen. Files a case needs as input are made before the snapshot is taken.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from prunetune.cli import main
from prunetune.results.leaderboard import Leaderboard

TINY = ["--dataset-opt", "limit=256", "--teacher-epochs", "1", "--epochs", "1", "--batch-size", "64", "--quiet"]
FACTORY = ["compress", *TINY, "--finetune-epochs", "0", "--device", "cpu"]  # a user factory takes no width
TINY += ["--model-opt", "width=4"]
COMPRESS = ["compress", *TINY, "--finetune-epochs", "0", "--device", "cpu"]
SEARCH = ["search", *TINY, "--final-epochs", "1", "--num-samples", "2"]
PAYLOADS = ("os:system", "subprocess:call", "builtins:exec")
MARKER = "payload-ran"

Case = Callable[[Path, Path], list[str]]  # (case folder, a good student file) -> argv


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _plan(folder: Path, plan: object) -> list[str]:
    return [*COMPRESS, "--plan", _write(folder / "plan.json", json.dumps(plan))]


def _student_with(folder: Path, good: Path, change: Callable[[dict], object]) -> list[str]:
    payload = torch.load(good, weights_only=True)
    change(payload)
    torch.save(payload, folder / "s.pt")
    return ["evaluate", str(folder / "s.pt")]


def _meta(update: dict) -> Callable[[dict], None]:
    def change(payload: dict) -> None:
        payload["meta"] = json.dumps(json.loads(payload["meta"]) | update)
    return change


def _payload_options(folder: Path) -> dict:
    """Options that would create the marker file if the payload were ever called."""
    target = str(folder / MARKER)
    return {"command": f"touch {target}", "args": ["touch", target], "source": f"open({target!r}, 'w')"}


def _run_folder(folder: Path, spec: dict | str) -> str:
    run = folder / "runs" / "old"
    run.mkdir(parents=True)
    (run / "search.json").write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return str(run)


def _old_spec(**changes: object) -> dict:
    from prunetune.searching.spec import SearchSpec

    data = json.loads(SearchSpec().to_json())
    return data | changes


def _parquet(folder: Path, labels: list[int], columns: tuple[str, str] = ("image", "label")) -> str:
    images = [bytes(784) for _ in labels]
    pq.write_table(pa.table({columns[0]: images, columns[1]: labels}), folder / "d.parquet")
    return str(folder / "d.parquet")


CASES: dict[str, tuple[Case, str]] = {
    # -- compress: names, numbers and layers
    "unknown scorer": (lambda d, g: [*COMPRESS, "--scorer", "l9"], r"unknown scorer 'l9' \(valid: .*l1"),
    "unknown zoo model": (lambda d, g: [*COMPRESS, "--model", "alexnet"], r"unknown model 'alexnet' \(valid:"),
    "unknown dataset": (lambda d, g: [*COMPRESS, "--dataset", "imagenet"], r"unknown dataset 'imagenet'"),
    "unknown pruner": (lambda d, g: [*COMPRESS, "--pruner", "saw"], r"unknown pruner 'saw'"),
    "unknown distiller": (lambda d, g: [*COMPRESS, "--distiller", "hot"], r"unknown distiller 'hot'"),
    "ratio 1": (lambda d, g: [*COMPRESS, "--ratio", "1.0"], r"outside \[0, 1\)"),
    "negative ratio": (lambda d, g: [*COMPRESS, "--ratio", "-0.5"], r"outside \[0, 1\)"),
    "NaN ratio": (lambda d, g: [*COMPRESS, "--ratio", "nan"], r"outside \[0, 1\)"),
    "even kernel": (lambda d, g: [*COMPRESS, "--kernel", "layer1.0.conv1=4"], r"not a positive odd integer"),
    "zero kernel": (lambda d, g: [*COMPRESS, "--kernel", "layer1.0.conv1=0"], r"not a positive odd integer"),
    "kernel of a missing layer": (lambda d, g: [*COMPRESS, "--kernel", "nowhere=5"], r"nowhere"),
    "ratio of a missing layer": (lambda d, g: [*COMPRESS, "--layer-ratio", "nowhere=0.5"], r"'nowhere', which is not a prunable layer"),
    "layer ratio not a number": (lambda d, g: [*COMPRESS, "--layer-ratio", "stem.conv=abc"], r"ratio of stem.conv 'abc' is not a number"),
    "round_to 0": (lambda d, g: [*COMPRESS, "--round-to", "0"], r"round_to 0 must be a positive integer"),
    "MACs target over 1": (lambda d, g: [*COMPRESS, "--macs-target", "1.5"], r"MACs target 1.5 is outside \(0, 1\]"),
    "a pruner that takes no MACs target": (lambda d, g: [*COMPRESS, "--pruner", "layerwise", "--macs-target", "0.5"],
                                           r"layerwise pruner .* not a global MACs target"),
    "infinite lr": (lambda d, g: [*COMPRESS, "--lr", "inf"], r"--lr must be a finite positive number, got inf"),
    "zero lr": (lambda d, g: [*COMPRESS, "--lr", "0"], r"--lr must be a finite positive number"),
    "NaN teacher lr": (lambda d, g: [*COMPRESS, "--teacher-lr", "nan"], r"--teacher-lr must be a finite positive number"),
    "validation share over 1": (lambda d, g: [*COMPRESS, "--val-fraction", "1.5"], r"--val-fraction must be in \(0, 1\)"),
    "batch size 0": (lambda d, g: [*COMPRESS, "--batch-size", "0"], r"--batch-size must be at least 1"),
    "negative epochs": (lambda d, g: [*COMPRESS, "--epochs", "-1"], r"--epochs must be 0 or more"),
    "unknown device": (lambda d, g: [*COMPRESS, "--device", "tpu"], r"unknown device|unsupported device"),
    "bad distiller option": (lambda d, g: [*COMPRESS, "--distiller-opt", "T=-1"], r"distiller 'hinton'"),
    "unknown scorer option": (lambda d, g: [*COMPRESS, "--scorer-opt", "colour=red"], r"scorer 'l1' has no option colour"),
    "model option not a number": (lambda d, g: [*COMPRESS, "--model-opt", "width=wide"], r"width"),
    # -- compress: paths
    "output is a folder": (lambda d, g: [*COMPRESS, "--out", str(d)], r"--out .* is a folder"),
    "output folder missing": (lambda d, g: [*COMPRESS, "--out", str(d / "no" / "s.pt")], r"does not exist"),
    "teacher checkpoint missing": (lambda d, g: [*COMPRESS, "--teacher-checkpoint", "/no/teacher.pt"],
                                   r"teacher checkpoint '/no/teacher.pt' does not exist"),
    "teacher checkpoint not torch": (lambda d, g: [*COMPRESS, "--teacher-checkpoint", _write(d / "t.pt", "junk")],
                                     r"t\.pt"),
    "IDX folder missing": (lambda d, g: [*COMPRESS, "--dataset", "idx", "--dataset-opt", "path=/no/such/folder"],
                           r"/no/such/folder"),
    "Parquet file missing": (lambda d, g: [*COMPRESS, "--dataset", "parquet", "--dataset-opt", "train=/no/t.parquet",
                                           "--dataset-opt", "test=/no/t.parquet"], r"/no/t\.parquet"),
    "Parquet without a label column": (lambda d, g: [*COMPRESS, "--dataset", "parquet", "--dataset-opt",
                                                     f"train={_parquet(d, [0, 1], ('image', 'y'))}",
                                                     "--dataset-opt", f"test={d / 'd.parquet'}"], r"label"),
    "Parquet labels that are not class ids": (lambda d, g: [*COMPRESS, "--dataset", "parquet", "--dataset-opt",
                                                            f"train={_parquet(d, [0, 1, 100000])}",
                                                            "--dataset-opt", f"test={d / 'd.parquet'}"],
                                              r"3 distinct labels up to 100000"),
    # -- compress: plan files
    "plan file missing": (lambda d, g: [*COMPRESS, "--plan", str(d / "none.json")], r"does not exist"),
    "plan not JSON": (lambda d, g: [*COMPRESS, "--plan", _write(d / "p.json", "{ratio")], r"is not JSON"),
    "plan not an object": (lambda d, g: _plan(d, [1, 2]), r"must hold a JSON object"),
    "plan ratio a string": (lambda d, g: _plan(d, {"ratio": "abc"}), r"plan's ratio must be a number, got \"abc\""),
    "plan ratio null": (lambda d, g: _plan(d, {"ratio": None}), r"plan's ratio must be a number, got null"),
    "plan ratios a list": (lambda d, g: _plan(d, {"ratios": [1, 2]}), r"plan's ratios must be a JSON object"),
    "plan round_to a string": (lambda d, g: _plan(d, {"round_to": "8"}), r"plan's round_to must be an integer"),
    "plan kernel a string": (lambda d, g: _plan(d, {"kernels": {"stem.conv": "x"}}), r"must be an integer, got \"x\""),
    "plan kernel a fraction": (lambda d, g: _plan(d, {"kernels": {"stem.conv": 3.7}}), r"must be an integer, got 3.7"),
    "plan unknown key": (lambda d, g: _plan(d, {"colour": 1}), r"plan has unknown keys \['colour'\]"),
    # -- compress: user factories
    "factory that raises": (lambda d, g: [*FACTORY, "--model", "json:loads"], r"model factory 'json:loads' failed: TypeError"),
    "factory that returns no module": (lambda d, g: [*FACTORY, "--model", "os:getcwd"], r"returned str, not a torch nn.Module"),
    "factory module missing": (lambda d, g: [*FACTORY, "--model", "no_such_pkg.models:net"], r"cannot import model module 'no_such_pkg.models'"),
    # -- the command line itself
    "ratio not a number": (lambda d, g: ["compress", "--ratio", "half"], r"invalid float value: 'half' \(see prunetune compress --help\)"),
    "unknown scheduler": (lambda d, g: ["search", "--scheduler", "hyper"], r"invalid choice: 'hyper'"),
    "unknown schedule": (lambda d, g: [*COMPRESS, "--schedule", "step"],
                         r"--schedule: invalid choice: 'step' \(choose from .*cosine.*onecycle.*constant"),
    "unknown schedule of a search": (lambda d, g: [*SEARCH, "--schedule", "step"], r"--schedule: invalid choice: 'step'"),
    "nesterov with a value": (lambda d, g: [*COMPRESS, "--nesterov=yes"], r"--nesterov"),
    "unknown command": (lambda d, g: ["squeeze"], r"invalid choice: 'squeeze'"),
    # -- evaluate: student files
    "student missing": (lambda d, g: ["evaluate", str(d / "none.pt")], r"does not exist"),
    "student is a folder": (lambda d, g: ["evaluate", str(d)], r"is a folder, not a file"),
    "student random bytes": (lambda d, g: ["evaluate", _write(d / "s.pt", "not a checkpoint")], r"truncated, or not a torch file"),
    "student truncated": (lambda d, g: ["evaluate", str(_truncated(d, g))], r"truncated, or not a torch file"),
    "student of another format": (lambda d, g: _student_with(d, g, lambda p: p.update(format="x/1")), r"expected format prunetune-student/1"),
    "student description not JSON": (lambda d, g: _student_with(d, g, lambda p: p.update(meta="{model")), r"description is not JSON"),
    "student description empty": (lambda d, g: _student_with(d, g, lambda p: p.update(meta="{}")), r"description lacks model, input_shape"),
    "student without state_dict": (lambda d, g: _student_with(d, g, lambda p: p.pop("state_dict")), r"holds no state_dict of tensors"),
    "student with a broken record": (lambda d, g: _student_with(d, g, _meta({"record": {"removed": 5}})),
                                     r"description that does not rebuild"),
    "student of another model than given": (lambda d, g: [*_student_with(d, g, lambda p: None), "--model", "json:loads"],
                                            r"was made with model 'resnet', not 'json:loads'"),
    "student weights that do not fit": (lambda d, g: _student_with(d, g, lambda p: p["state_dict"].update(
        {"stem.conv.weight": torch.zeros(3, 1, 3, 3)})), r"does not fit its plan"),
    # -- search
    "budget no plan reaches": (lambda d, g: [*SEARCH, "--max-macs", "0.0001"], r"no plan can meet --max-macs 0.0001: .* \(valid: --max-macs 0\.\d+ to 1"),
    "budget over 1": (lambda d, g: [*SEARCH, "--max-macs", "1.5"], r"--max-macs must be in \(0, 1\]"),
    "latency budget 0": (lambda d, g: [*SEARCH, "--max-latency", "0"],
                         r"--max-latency must be a positive number of milliseconds, uniform or none, got 0\.0"),
    "negative latency budget": (lambda d, g: [*SEARCH, "--max-latency", "-5"], r"--max-latency must be a positive .* got -5\.0"),
    "NaN latency budget": (lambda d, g: [*SEARCH, "--max-latency", "nan"], r"--max-latency must be a positive .* got nan"),
    "latency budget not a number": (lambda d, g: [*SEARCH, "--max-latency", "fast"],
                                    r"--max-latency: must be a number of milliseconds, uniform or none, got 'fast'"),
    "uniform latency without a MACs budget": (lambda d, g: [*SEARCH, "--max-latency", "uniform"],
                                              r"--max-latency uniform needs --max-macs"),
    "latency batch 0": (lambda d, g: [*SEARCH, "--latency-batch", "0"], r"--latency-batch must be a whole number of at least 1"),
    "latency budget no plan reaches": (lambda d, g: [*SEARCH, "--max-latency", "0.0001"],
                                       r"no plan can meet --max-latency 0\.0001: .* \(reachable: [\d.]+ ms to [\d.]+ ms, the teacher"),
    "leaderboard is a file": (lambda d, g: [*SEARCH, "--leaderboard", _write(d / "board", "")], r"--leaderboard .* is a file, not a folder"),
    "runs is a file": (lambda d, g: [*SEARCH, "--runs", _write(d / "runs", "")], r"--runs .* is a file, not a folder"),
    "run name a path": (lambda d, g: [*SEARCH, "--name", "../escape"], r"--name '../escape' must be a plain folder name"),
    "no trials": (lambda d, g: [*SEARCH, "--num-samples", "0"], r"--num-samples must be at least 1"),
    "negative screen": (lambda d, g: [*SEARCH, "--screen", "-1"], r"--screen must be 0 or more, got -1"),
    "no epochs": (lambda d, g: [*SEARCH, "--epochs", "0"], r"--epochs must be at least 1"),
    "max ratio 1": (lambda d, g: [*SEARCH, "--max-ratio", "1"], r"--max-ratio must be in \(0, 1\)"),
    "objectives without accuracy": (lambda d, g: [*SEARCH, "--objectives", "macs"], r"--objectives must start with accuracy"),
    "unknown objective": (lambda d, g: [*SEARCH, "--objectives", "accuracy,speed"], r"unknown objective speed"),
    "unknown space": (lambda d, g: [*SEARCH, "--space", "nowhere"], r"unknown search space 'nowhere'"),
    "unknown strategy": (lambda d, g: [*SEARCH, "--strategy", "nowhere"], r"unknown strategy 'nowhere'"),
    "unknown sampler": (lambda d, g: [*SEARCH, "--strategy-opt", "sampler=cmaes"], r"sampler must be one of tpe, nsga2, random"),
    "more CPUs than the machine": (lambda d, g: [*SEARCH, "--cpus-per-trial", "4096"], r"is more than this machine's"),
    "resume a missing run": (lambda d, g: [*SEARCH, "--resume", str(d / "none")], r"is not a run folder"),
    "resume a spec that is not JSON": (lambda d, g: [*SEARCH, "--resume", _run_folder(d, "{oops")], r"search.json is not JSON"),
    "resume a spec that is a list": (lambda d, g: [*SEARCH, "--resume", _run_folder(d, "[]")], r"must hold a JSON object"),
    "resume a spec with unknown settings": (lambda d, g: [*SEARCH, "--resume", _run_folder(d, _old_spec(colour=1))],
                                            r"unknown settings colour"),
    "resume a spec of the wrong types": (lambda d, g: [*SEARCH, "--resume", _run_folder(d, _old_spec(num_samples="many"))],
                                         r"setting of the wrong type"),
    "resume a spec with an unknown schedule": (lambda d, g: [*SEARCH, "--resume", _run_folder(d, _old_spec(schedule="step"))],
                                               r"--schedule must be one of cosine, onecycle, constant, got 'step'"),
    "resume a spec naming another model": (lambda d, g: [*SEARCH, "--resume", _run_folder(d, _old_spec()), "--model", "vgg"],
                                           r"was made with model 'resnet', not 'vgg'"),
    # -- leaderboard
    "leaderboard folder missing": (lambda d, g: ["leaderboard", "show", "--dir", str(d / "none")], r"does not exist"),
    "leaderboard run missing": (lambda d, g: ["leaderboard", "show", "no-such-run", "--dir", str(d / "leaderboard")],
                                r"no run no-such-run in leaderboard"),
    "leaderboard compare one run": (lambda d, g: ["leaderboard", "compare", "r1", "--dir", str(d / "leaderboard")],
                                    r"leaderboard compare takes two run ids"),
    "leaderboard unknown format": (lambda d, g: ["leaderboard", "show", "--format", "xml"], r"invalid choice: 'xml'"),
}

# Files that would make the payload run if prunetune imported and called what they name.
for payload in PAYLOADS:
    CASES[f"student naming {payload}"] = (
        lambda d, g, p=payload: _student_with(d, g, _meta({"model": p, "model_options": _payload_options(d)})),
        rf"names model '{payload}', code that prunetune imports only when you name it",
    )
    CASES[f"run spec naming {payload}"] = (
        lambda d, g, p=payload: [*SEARCH, "--resume", _run_folder(d, _old_spec(model=p, model_options=_payload_options(d)))],
        rf"names model '{payload}', code that prunetune imports only when you name it",
    )


def _truncated(folder: Path, good: Path) -> Path:
    data = good.read_bytes()
    (folder / "s.pt").write_bytes(data[: len(data) // 2])
    return folder / "s.pt"


@pytest.fixture(scope="module")
def good_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("good") / "student.pt"
    assert main([*COMPRESS, "--out", str(path)]) == 0
    return path


def _snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for folder in folders if folder.exists() for p in sorted(folder.rglob("*"))
    }


def test_there_are_at_least_45_cases() -> None:
    assert len(CASES) >= 45


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_nothing_written(
    name: str, tmp_path: Path, good_student: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    case, message = CASES[name]
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    Leaderboard(folder / "leaderboard").write([{"run_id": "r1", "trial_id": "t1", "kind": "trial", "status": "ok"}], key="r1-t1")
    argv = case(folder, good_student)
    cache = Path(os.environ["PRUNETUNE_CACHE"])
    capsys.readouterr()
    before = _snapshot(folder, cache)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own mistakes
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prunetune: error: "), err
    assert "Traceback" not in err
    assert re.search(message, lines[0]), lines[0]
    assert _snapshot(folder, cache) == before
    assert not (folder / MARKER).exists()
