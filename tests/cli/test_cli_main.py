"""The command line: detectron2's flags, subcommand help, dispatch and one-line errors."""
from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from freeseg.cli import main as cli
from freeseg.cli.args import default_argument_parser
from freeseg.utils.errors import FreeSegError

REPO = Path(__file__).resolve().parents[2]
TINY = str(REPO / "configs/tiny/tiny_alltask.yaml")


def call(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exc:  # argparse --help / usage errors
        return 0 if exc.code is None else int(exc.code)


def test_parser_has_detectron2_flags_and_defaults() -> None:
    args = default_argument_parser().parse_args(
        ["--config-file", "a.yaml", "--num-gpus", "8", "--resume", "SOLVER.BASE_LR", "0.1", "MODEL.DEVICE", "cpu"]
    )
    assert args.config_file == "a.yaml" and args.num_gpus == 8 and args.resume
    assert not args.eval_only and args.num_machines == 1 and args.machine_rank == 0
    assert args.dist_url == "auto"
    assert args.opts == ["SOLVER.BASE_LR", "0.1", "MODEL.DEVICE", "cpu"]
    assert default_argument_parser().parse_args([]).opts == []


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert call([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage:" in out.lower() and len(out) > 200, out
    if command in ("train", "eval"):
        assert "--config-file" in out and "--eval-only" in out and "KEY VALUE" in out


def test_top_level_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert call(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli.COMMANDS)
    assert call([]) == 2  # no command: help on stderr, non-zero


def test_unknown_command_suggests_the_closest(capsys: pytest.CaptureFixture[str]) -> None:
    assert call(["trian"]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown command 'trian'; did you mean 'train'?"


def _fake_engine(monkeypatch: pytest.MonkeyPatch, fn) -> None:
    module = types.ModuleType("freeseg.engine.train_net")
    module.run = fn
    monkeypatch.setitem(sys.modules, "freeseg.engine.train_net", module)


def test_train_and_eval_dispatch_to_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    _fake_engine(monkeypatch, seen.append)
    assert call(["train", "--config-file", TINY, "--num-gpus", "2", "SOLVER.MAX_ITER", "3"]) == 0
    assert call(["eval", "--config-file", TINY, "MODEL.WEIGHTS", "w.pth"]) == 0
    train, evaluate = seen
    assert train.config_file == TINY and train.num_gpus == 2 and not train.eval_only
    assert train.opts == ["SOLVER.MAX_ITER", "3"]
    assert evaluate.eval_only and evaluate.opts == ["MODEL.WEIGHTS", "w.pth"]


def test_user_errors_are_one_line_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def fail(args):
        raise FreeSegError("dataset 'x' is not registered. Register it first")

    _fake_engine(monkeypatch, fail)
    assert call(["train", "--config-file", TINY]) == 2
    assert capsys.readouterr().err == "error: dataset 'x' is not registered. Register it first\n"
    # config problems are caught before the engine is imported
    _fake_engine(monkeypatch, lambda args: pytest.fail("engine must not run"))
    assert call(["train", "--config-file", TINY, "SOLVER.MAX_ITER", "many"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config key SOLVER.MAX_ITER: expected int") and err.count("\n") == 1
    assert call(["eval", "--config-file", "nope.yaml"]) == 2
    assert "config file not found: nope.yaml" in capsys.readouterr().err
    # no config file (the defaults are no FreeSeg model), nothing to evaluate, a misspelt data set
    assert call(["train", "SOLVER.MAX_ITER", "3"]) == 2
    assert capsys.readouterr().err.startswith("error: no --config-file: pass the FreeSeg config")
    assert call(["eval", "--config-file", TINY, "DATASETS.TEST", "()"]) == 2
    assert capsys.readouterr().err.startswith("error: --eval-only with an empty DATASETS.TEST: nothing to evaluate")
    assert call(["train", "--config-file", TINY, "DATASETS.TRAIN", "('coco_2017_train_full_task_bse',)"]) == 2
    assert ("did you mean 'coco_2017_train_full_task_base'?" in capsys.readouterr().err)


def test_training_stopped_by_a_signal_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from freeseg.engine.train_loop import TrainingStopped

    def stopped(args):
        raise TrainingStopped("SIGINT", 13)

    _fake_engine(monkeypatch, stopped)
    assert call(["train", "--config-file", TINY]) == 130  # `train && eval` must not go on
    assert capsys.readouterr().err == "error: stopped by SIGINT after iteration 13; rerun with --resume to continue\n"

    def terminated(args):
        raise TrainingStopped("SIGTERM", 13)

    _fake_engine(monkeypatch, terminated)
    assert call(["train", "--config-file", TINY]) == 143


def test_missing_command_module_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(cli.COMMANDS, "demo", cli.Command("freeseg.cli.no_such_demo", "s", "d"))
    assert call(["demo", "--input", "x.jpg"]) == 2
    err = capsys.readouterr().err
    assert err == "error: command 'demo' is not available in this build (freeseg.cli.no_such_demo is missing)\n"
    assert call(["demo", "--help"]) == 0  # help still says what the command is for
    assert "not available in this build" in capsys.readouterr().out


def test_missing_third_party_module_names_it(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(cli.COMMANDS, "prepare", cli.Command("freeseg_fake_pkg_xyz.prepare", "s", "d"))
    assert call(["prepare", "--list"]) == 2
    err = capsys.readouterr().err
    assert "needs the Python module 'freeseg_fake_pkg_xyz'" in err and err.count("\n") == 1


@pytest.mark.parametrize("entry", [["-m", "freeseg.cli.main", "train"], ["train_net.py"]])
def test_bad_key_from_a_real_process_exits_2_with_one_line(entry: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, *entry, "--config-file", TINY, "MODEL.MASK_FORMER.DEC_LAYER", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (
        "error: unknown config key MODEL.MASK_FORMER.DEC_LAYER (from command line); "
        "did you mean MODEL.MASK_FORMER.DEC_LAYERS?\n"
    )
    assert "Traceback" not in proc.stdout


def test_the_real_engine_has_the_entry_the_cli_calls() -> None:
    import importlib

    try:
        module = importlib.import_module(cli.COMMANDS["train"].module)
    except ImportError as exc:
        pytest.skip(f"engine not importable in this build: {exc}")
    assert callable(getattr(module, cli.COMMANDS["train"].function, None))
