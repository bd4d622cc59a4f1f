"""The command line end to end, on tiny settings."""

from __future__ import annotations

import gzip
import json
import re
import struct
from pathlib import Path

import pytest
import torch

from prunetune.cli import main

TINY = [
    "--dataset-opt", "limit=256", "--model-opt", "width=4", "--teacher-epochs", "1",
    "--epochs", "1", "--finetune-epochs", "1", "--batch-size", "64", "--device", "cpu", "--quiet",
]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _accuracy(text: str) -> str:
    return re.search(r"test accuracy \(%\)\s+(\S+)\s+(\S+)", text).group(2)  # type: ignore[union-attr]


def test_plugins_lists_every_builtin_with_origin(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "plugins")
    assert code == 0
    for kind, name in [("scorer", "taylor"), ("pruner", "channel"), ("distiller", "attention"),
                       ("model", "mobilenet"), ("dataset", "cifar10")]:
        assert re.search(rf"^{kind}\s+{name}\s+prunetune 0\.1\.0\s+\S", out, re.M), (kind, name)


def test_compress_then_evaluate_reproduces_accuracy_and_macs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "student.pt"
    code, out, err = _run(capsys, "compress", "--ratio", "0.5", "--kernel", "layer1.0.conv1=5",
                          "--out", str(out_file), *TINY)
    assert code == 0, err
    assert "teacher" in out and "student" in out and "MACs" in out
    assert out_file.is_file()
    code, evaluated, err = _run(capsys, "evaluate", str(out_file), "--device", "cpu")
    assert code == 0, err
    saved_acc, now_acc = re.search(r"test accuracy \(%\)\s+(\S+)\s+(\S+)", evaluated).groups()  # type: ignore[union-attr]
    assert saved_acc == now_acc == _accuracy(out)
    saved_macs, now_macs = re.search(r"MACs\s+(\S+)\s+(\S+)", evaluated).groups()  # type: ignore[union-attr]
    assert saved_macs == now_macs


def test_a_third_party_scorer_works_in_compress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], third_party_scorer: str
) -> None:
    code, out, _ = _run(capsys, "plugins")
    assert re.search(rf"^scorer\s+{third_party_scorer}\s+thirdparty-scorer 1\.2\s+Scores channels", out, re.M)
    code, out, err = _run(capsys, "compress", "--scorer", third_party_scorer, "--out", str(tmp_path / "s.pt"), *TINY)
    assert code == 0, err
    meta_scorer = torch.load(tmp_path / "s.pt", weights_only=True)["meta"]
    assert '"scorer": "last_first"' in meta_scorer


def test_compress_from_a_saved_student_trains_it_further_with_its_plan(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    first, same, further = tmp_path / "first.pt", tmp_path / "same.pt", tmp_path / "further.pt"
    assert _run(capsys, "compress", "--ratio", "0.6", "--kernel", "layer1.0.conv1=5", "--out", str(first), *TINY)[0] == 0
    untrained = [*TINY, "--epochs", "0", "--finetune-epochs", "0"]  # argparse: the last one counts
    code, out, err = _run(capsys, "compress", "--from", str(first), "--out", str(same), *untrained)
    assert code == 0, err
    code, _, err = _run(capsys, "compress", "--from", str(first), "--out", str(further), *TINY)
    assert code == 0, err
    saved = {p: torch.load(p, weights_only=True) for p in (first, same, further)}
    meta = {p: json.loads(saved[p]["meta"]) for p in saved}
    for p in (same, further):  # the same architecture: plan, pruner and record carried over
        assert {k: meta[p][k] for k in ("plan", "record", "pruner", "scorer")} == \
               {k: meta[first][k] for k in ("plan", "record", "pruner", "scorer")}
        assert meta[p]["started_from"] == str(first.resolve())
    # No epochs: the saved weights, unchanged; with epochs, trained from them.
    assert all(torch.equal(v, saved[same]["state_dict"][k]) for k, v in saved[first]["state_dict"].items())
    assert not all(torch.equal(v, saved[further]["state_dict"][k]) for k, v in saved[first]["state_dict"].items())
    assert _accuracy(out) == f"{meta[first]['metrics']['accuracy']:.2f}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ratio", "0.3"], r"--from .* trains that student further with its own plan: give no plan"),
        (["--kernel", "layer1.0.conv1=5"], r"give no plan"),
        (["--model-opt", "width=8"], r"that student was made for another model or data: model_options"),
        (["--model", "vgg"], r"made with model 'resnet', not 'vgg'"),
    ],
)
def test_compress_from_a_student_that_does_not_fit_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    saved = tmp_path / "saved" / "s.pt"
    saved.parent.mkdir()
    assert _run(capsys, "compress", "--out", str(saved), *TINY)[0] == 0
    out_file = tmp_path / "student.pt"
    code, _, err = _run(capsys, "compress", "--from", str(saved), "--out", str(out_file), *TINY, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert not out_file.exists()
    code, _, err = _run(capsys, "compress", "--from", str(tmp_path / "none.pt"), "--out", str(out_file), *TINY)
    assert code == 2 and "does not exist" in err and not out_file.exists()


def _tiny_idx(folder: Path, size: int) -> None:
    folder.mkdir()
    for prefix, n in (("train", 20), ("t10k", 10)):
        pixels = bytes(range(256)) * (n * size * size // 256 + 1)
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, size, size) + pixels[: n * size * size])
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + bytes(i % 10 for i in range(n)))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scorer", "l9"], r"unknown scorer 'l9' \(valid: .*l1.*\)"),
        (["--model", "alexnet"], r"unknown model 'alexnet' \(valid: mobilenet, resnet, vgg\)"),
        (["--dataset", "imagenet"], r"unknown dataset 'imagenet' \(valid: .*idx.*\)"),
        (["--pruner", "saw"], r"unknown pruner 'saw'"),
        (["--distiller", "hot"], r"unknown distiller 'hot'"),
        (["--ratio", "1.0"], r"outside \[0, 1\)"),
        (["--ratio", "-0.5"], r"outside \[0, 1\)"),
        (["--kernel", "layer1.0.conv1=4"], r"not a positive odd integer"),
        (["--kernel", "layer1.0.conv1=0"], r"not a positive odd integer"),
        (["--kernel", "nowhere=5"], r"nowhere"),
        (["--layer-ratio", "nowhere=0.5"], r"'nowhere', which is not a prunable layer"),
        (["--dataset", "idx", "--dataset-opt", "path=/no/such/folder"], r"/no/such/folder"),
        (["--teacher-checkpoint", "/no/teacher.pt"], r"teacher checkpoint '/no/teacher.pt' does not exist"),
        (["--distiller-opt", "T=-1"], r"distiller 'hinton'"),
        (["--scorer-opt", "colour=red"], r"scorer 'l1' has no option colour"),
        (["--epochs", "-1"], r"--epochs must be 0 or more"),
        (["--device", "tpu"], r"unknown device|unsupported device"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out_file = tmp_path / "student.pt"
    code, out, err = _run(capsys, "compress", "--out", str(out_file), *TINY, *args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert list(tmp_path.iterdir()) == []


def test_images_the_model_cannot_take(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _tiny_idx(tmp_path / "data", size=4)
    code, _, err = _run(capsys, "compress", "--dataset", "idx", "--dataset-opt", f"path={tmp_path / 'data'}",
                        "--out", str(tmp_path / "s.pt"), *TINY[2:])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "4" in err and not (tmp_path / "s.pt").exists()


def test_missing_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "compress", "--out", str(tmp_path / "no" / "s.pt"), *TINY)
    assert code == 2 and "does not exist" in err


def test_evaluate_a_checkpoint_that_does_not_fit_its_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.pt"
    assert _run(capsys, "compress", "--out", str(path), *TINY)[0] == 0
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["stem.conv.weight"] = torch.zeros(3, 1, 3, 3)
    torch.save(payload, path)
    code, _, err = _run(capsys, "evaluate", str(path), "--device", "cpu")
    assert code == 2 and "does not fit its plan" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["compress", "search"])
def test_the_recipe_options_default_to_the_specs(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from prunetune.cli.parser import build_parser
    from prunetune.jobs.spec import JobSpec

    args = build_parser().parse_args([command])
    assert (args.schedule, args.nesterov, args.lr, args.batch_size) == (
        JobSpec.schedule, JobSpec.nesterov, JobSpec.lr, JobSpec.batch_size)
    if command == "compress":
        from prunetune.jobs.spec import CompressSpec

        assert args.finetune_epochs == CompressSpec.finetune_epochs
    args = build_parser().parse_args([command, "--schedule", "cosine", "--no-nesterov"])
    assert (args.schedule, args.nesterov) == ("cosine", False)
    assert build_parser().parse_args([command, "--nesterov"]).nesterov is True
    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"(default: {JobSpec.schedule})" in help_text and "--no-nesterov" in help_text


def test_compress_trains_with_the_schedule_and_momentum_asked_for(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from prunetune.jobs import compress

    recipes = []
    for name, position in (("distill", 5), ("train_supervised", 3)):
        def spy(*args, real=getattr(compress, name), position=position, **kwargs):  # type: ignore[no-untyped-def]
            recipes.append(args[position])
            return real(*args, **kwargs)

        monkeypatch.setattr(compress, name, spy)
    code, _, err = _run(capsys, "compress", "--out", str(tmp_path / "s.pt"), *TINY, "--schedule", "cosine", "--no-nesterov")
    assert code == 0, err
    assert [(r.schedule, r.nesterov) for r in recipes] == [("cosine", False)] * 2  # distillation, fine-tuning
    assert (tmp_path / "s.pt").is_file()


def test_argparse_mistakes_are_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["compress", "--ratio", "half"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "invalid float value" in err


def test_no_progress_bars_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    import subprocess
    import sys

    loud = [a for a in TINY if a != "--quiet"]
    out = subprocess.run([sys.executable, "-m", "prunetune", "compress", *loud, "--epochs", "2", "--out", str(tmp_path / "s.pt")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr and "it/s" not in out.stderr, out.stderr[:500]


def test_library_warnings_never_add_lines_to_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    import prunetune.jobs.compress

    real = prunetune.jobs.compress.run_compress

    def noisy(*args: object, **kwargs: object) -> object:
        warnings.warn("a library's warning\nover two lines", UserWarning)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(prunetune.jobs.compress, "run_compress", noisy)
    code, _, err = _run(capsys, "compress", "--out", str(tmp_path / "s.pt"), *TINY, "--scorer", "l9")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    code, _, err = _run(capsys, "compress", "--out", str(tmp_path / "s.pt"), *TINY)
    assert code == 0 and "prunetune: warning: a library's warning" in err and "over two lines" not in err
