"""YAML files: _BASE_ chains, the safe eval-list form, unsafe tags, dump round-trip, all configs."""
from __future__ import annotations

from pathlib import Path

import pytest

from freeseg.config import get_cfg
from freeseg.config.safe_eval import safe_eval_list
from freeseg.utils.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_base_chain_three_levels_with_relative_paths(tmp_path: Path) -> None:
    write(tmp_path / "a" / "root.yaml", "SEED: 1\nSOLVER:\n  BASE_LR: 0.1\n  MAX_ITER: 10\n")
    write(tmp_path / "b" / "mid.yaml", "_BASE_: ../a/root.yaml\nSOLVER:\n  MAX_ITER: 20\nMODEL:\n  DEVICE: cpu\n")
    leaf = write(
        tmp_path / "b" / "c" / "leaf.yaml",
        "_BASE_: ../mid.yaml\nSOLVER:\n  IMS_PER_BATCH: 4\nINPUT:\n  CROP:\n    SIZE: (64, 64)\n",
    )
    cfg = get_cfg().merge_from_file(str(leaf))
    assert cfg.SEED == 1 and cfg.SOLVER.BASE_LR == 0.1  # from the root, two levels up
    assert cfg.SOLVER.MAX_ITER == 20 and cfg.MODEL.DEVICE == "cpu"  # mid overrides root
    assert cfg.SOLVER.IMS_PER_BATCH == 4 and cfg.INPUT.CROP.SIZE == [64, 64]
    assert cfg.SOLVER.WARMUP_ITERS == 1000  # untouched default


def test_base_list_later_wins_and_cycles_are_errors(tmp_path: Path) -> None:
    write(tmp_path / "x.yaml", "SEED: 1\n")
    write(tmp_path / "y.yaml", "SEED: 2\nVIS_PERIOD: 3\n")
    both = write(tmp_path / "z.yaml", "_BASE_: [x.yaml, y.yaml]\n")
    cfg = get_cfg().merge_from_file(both)
    assert cfg.SEED == 2 and cfg.VIS_PERIOD == 3
    write(tmp_path / "p.yaml", "_BASE_: q.yaml\n")
    write(tmp_path / "q.yaml", "_BASE_: p.yaml\n")
    with pytest.raises(ConfigError, match="_BASE_ cycle"):
        get_cfg().merge_from_file(tmp_path / "p.yaml")


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("MODEL:\n  MASK_FORMER:\n    DEC_LAYER: 3\n", r"unknown config key MODEL\.MASK_FORMER\.DEC_LAYER \(from .*bad\.yaml\); did you mean MODEL\.MASK_FORMER\.DEC_LAYERS\?"),
        ("SOLVER:\n  MAX_ITER: ten\n", r"SOLVER\.MAX_ITER: expected int .*got str 'ten'"),
        ("SOLVER: 3\n", r"SOLVER is a group of keys"),
        ("_BASE_: nowhere.yaml\n", r"_BASE_ file not found: nowhere\.yaml"),
        ("SEED: [1\n", r"bad\.yaml line \d+: invalid YAML"),
        ("- 1\n- 2\n", r"must be a mapping"),
        ("VERSION: 1\n", r"VERSION 1 is not supported"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path: Path, text: str, pattern: str) -> None:
    bad = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError, match=pattern) as info:
        get_cfg().merge_from_file(bad)
    assert "\n" not in str(info.value)


def test_empty_section_is_a_no_op_and_key_case_is_hinted(tmp_path: Path) -> None:
    cfg = get_cfg().merge_from_file(write(tmp_path / "e.yaml", "MODEL:\n  # DEVICE: cpu\nSEED: 3\n"))
    assert cfg.MODEL == get_cfg().MODEL and cfg.SEED == 3
    with pytest.raises(ConfigError, match=r"unknown config key model \(from .*l\.yaml\); did you mean MODEL\?"):
        get_cfg().merge_from_file(write(tmp_path / "l.yaml", "model:\n  device: cpu\n"))


def test_null_where_the_default_is_not_none_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"SOLVER\.MAX_ITER is empty .*from .*n\.yaml"):
        get_cfg().merge_from_file(write(tmp_path / "n.yaml", "SOLVER:\n  MAX_ITER: null\n"))
    with pytest.raises(ConfigError, match=r'MODEL\.WEIGHTS is empty .*\(write "" for none\)'):
        get_cfg().merge_from_file(write(tmp_path / "w.yaml", "MODEL:\n  WEIGHTS:\n"))
    cfg = get_cfg().merge_from_file(write(tmp_path / "ok.yaml", "WANDB:\n  NAME: null\nSOLVER:\n  WEIGHT_DECAY_BIAS: ~\n"))
    assert cfg.WANDB.NAME is None and cfg.SOLVER.WEIGHT_DECAY_BIAS is None  # None defaults stay unset


def test_binary_and_empty_files_are_one_line_errors(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model_final.pth"
    checkpoint.write_bytes(b"PK\x03\x04" + bytes(range(128, 256)))
    with pytest.raises(ConfigError, match=r"model_final\.pth is not a text \(UTF-8\) YAML file") as info:
        get_cfg().merge_from_file(checkpoint)
    assert "\n" not in str(info.value)
    for text in ("", "# every key commented out\n"):
        with pytest.raises(ConfigError, match=r"config file .*empty\.yaml is empty"):
            get_cfg().merge_from_file(write(tmp_path / "empty.yaml", text))


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file not found: .*missing\.yaml"):
        get_cfg().merge_from_file(tmp_path / "missing.yaml")


def test_eval_list_form_is_computed_without_eval(tmp_path: Path) -> None:
    cfg_file = write(
        tmp_path / "e.yaml",
        'INPUT:\n  MIN_SIZE_TRAIN: !!python/object/apply:eval ["[int(x * 0.1 * 640) for x in range(5, 16)]"]\n',
    )
    cfg = get_cfg().merge_from_file(cfg_file)
    assert cfg.INPUT.MIN_SIZE_TRAIN == tuple(int(x * 0.1 * 640) for x in range(5, 16))
    assert safe_eval_list("[int(x * 0.1 * 512) for x in range(5, 21)]")[-1] == 1024
    assert safe_eval_list("[2 ** i + j for i in range(3) for j in (0, 1)]") == [1, 2, 2, 3, 4, 5]
    assert safe_eval_list("[float(x) / 4 - 1 for x in [1, 2]]") == [-0.75, -0.5]


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('true')",
        "[x for x in range(3) if x]",
        "[open('f') for x in range(2)]",
        "[x.real for x in range(2)]",
        "[y for x in range(2)]",
        "[0 for x in range(10 ** 9)]",
        "[10 ** 100 for x in range(2)]",
        "['a' for x in range(2)]",
        "[(lambda: 1)() for x in range(2)]",
        "5",
        "[1, 2",
    ],
)
def test_eval_form_rejects_everything_else(tmp_path: Path, expr: str) -> None:
    cfg_file = write(tmp_path / "e.yaml", f'INPUT:\n  MIN_SIZE_TRAIN: !!python/object/apply:eval ["{expr}"]\n')
    with pytest.raises(ConfigError, match=r"e\.yaml line 2"):
        get_cfg().merge_from_file(cfg_file)


@pytest.mark.parametrize(
    "value",
    [
        '!!python/object/apply:os.system ["true"]',
        "!!python/name:os.system",
        '!!python/object/new:subprocess.Popen [["true"]]',
        "!!python/tuple [1, 2]",
        "!!python/object/apply:eval {args: ['[1]']}",
    ],
)
def test_other_python_tags_are_rejected(tmp_path: Path, value: str) -> None:
    cfg_file = write(tmp_path / "u.yaml", f"INPUT:\n  MIN_SIZE_TRAIN: {value}\n")
    with pytest.raises(ConfigError, match=r"u\.yaml line 2"):
        get_cfg().merge_from_file(cfg_file)


def test_dump_round_trip(tmp_path: Path) -> None:
    cfg = get_cfg().merge_from_file(REPO / "configs/coco-stuff-164k-156/mask2former_R101c_alltask_bs32_60k.yaml")
    cfg.merge_from_list(["OUTPUT_DIR", "123", "WANDB.NAME", "exp", "SOLVER.WEIGHT_DECAY_BIAS", "0.5"])
    path = write(tmp_path / "config.yaml", cfg.dump())
    back = get_cfg().merge_from_file(path)
    assert back == cfg
    assert back.INPUT.MIN_SIZE_TRAIN == cfg.INPUT.MIN_SIZE_TRAIN and isinstance(back.INPUT.MIN_SIZE_TRAIN, tuple)
    assert back.OUTPUT_DIR == "123" and back.WANDB.NAME == "exp"
    assert "!!python" not in path.read_text()


def _all_yaml(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.yaml"))


def test_every_repo_config_loads() -> None:
    files = _all_yaml(REPO / "configs")
    assert len(files) >= 21  # FreeSeg's 19 files + configs/tiny
    for path in files:
        cfg = get_cfg().merge_from_file(path)
        assert cfg.VERSION == 2, path


def test_every_original_freeseg_config_loads_and_matches_ours(freeseg_configs: Path) -> None:
    files = _all_yaml(freeseg_configs)
    assert len(files) == 19
    for path in files:
        original = get_cfg().merge_from_file(path)
        ours = get_cfg().merge_from_file(REPO / "configs" / path.relative_to(freeseg_configs))
        assert original == ours, f"configs/{path.relative_to(freeseg_configs)} differs from FreeSeg's"
