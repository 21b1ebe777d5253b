"""What a user reads from gnbench: component descriptions and options, --help defaults, which checkpoint
eval and sample use, one-line errors with a suggestion, and sample grids that can be read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
import pytest
import torch
from PIL import Image

from gn_plugin.cli import build_parser, main
from gn_plugin.config import RECIPES, load_config
from gn_plugin.evaluation.sampling import image_grid, labelled_grid
from gn_plugin.training.loop import train
from gn_plugin.training.run_dir import RunFiles

DIGITS = RECIPES / "digits"


def detail_lines(capsys, kind: str) -> dict[str, list[str]]:
    """``gnbench list KIND --detail`` as component name -> its indented detail lines."""
    assert main(["list", kind, "--detail"]) == 0
    blocks: dict[str, list[str]] = {}
    for line in capsys.readouterr().out.splitlines():
        if line.startswith(kind):
            current = blocks.setdefault(line.split()[1], [])
        else:
            current.append(line.strip())
    return blocks


def test_list_detail_shows_whole_first_sentences_without_markup_and_the_options(capsys):
    datasets = detail_lines(capsys, "dataset")
    # a first sentence that spans two docstring lines is printed whole, literals without backticks
    assert datasets["folder"][0] == (
        "Dataset folder: images under root (recursive), RGB, resized to resolution (resize: squash or center_crop), labels 0."
    )
    assert "download" not in " ".join(datasets["fake"]) and "options: channels=3, size=256" in datasets["fake"][1]
    models = detail_lines(capsys, "model")
    assert "depth=3" in models["mlp"][1] and "z_dim" not in models["mlp"][1]  # z_dim is model.z_dim, not an option
    norms = detail_lines(capsys, "norm")
    assert norms["gn-cr"][1] == "options: consistency_weight=5.0, max_translation=0.2, zeta='abs', hflip='auto'"
    assert "not mirror-symmetric" in datasets["digits"][0] and "mirror_symmetric=True" in datasets["folder"][1]
    assert norms["gn"] == [
        "Norm gn: wrap discriminator with gradient normalization (zeta: abs, one or zero).", "options: zeta='abs'"
    ]
    assert not any("``" in line for lines in (datasets, models, norms) for block in lines.values() for line in block)


def help_of(command: str) -> str:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    return " ".join(subparsers.choices[command].format_help().split())


def test_help_states_defaults_and_the_checkpoint_each_command_reads():
    sample, evaluate = help_of("sample"), help_of("eval")
    assert "which checkpoint to sample (default: latest)" in sample and "images in the grid, per generator (default: 64)" in sample
    assert "RUN_DIR/samples/<checkpoint>_" in sample and "raw rows above EMA rows" in sample
    assert "which checkpoint to score (default: best)" in evaluate
    assert "checkpoints/best.pt" in evaluate and "checkpoints/latest.pt" in evaluate
    assert "(default: False)" not in sample and "(default: [])" not in evaluate  # nothing said where nothing is set


def test_user_mistakes_are_one_line_with_a_suggestion(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing but a comment\n")
    typo = tmp_path / "typo.yaml"
    typo.write_text(f"base: {DIGITS / 'gn.yaml'}\ntrain:\n  stepz: 3\n")
    cases = {
        ("train", str(empty)): f"{empty}: the file is empty",
        ("train", str(typo)): "train.stepz: unknown key; did you mean 'steps'?",
        ("train", str(DIGITS / "gn.yaml"), "--set", "eval.metircs=[fid]"): "eval.metircs: unknown key; did you mean 'metrics'?",
        ("eval", str(tmp_path), "--set", "train.steps=5"): "--set train.steps=5: gnbench eval takes eval.* keys only",
    }
    for argv, expected in cases.items():
        assert main(list(argv)) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and expected in err, (argv, err)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run") / "sn"
    config = load_config(
        DIGITS / "sn.yaml",
        ["train.steps=4", "train.batch_size_d=16", "train.batch_size_g=16", "train.log_every=2",
         "train.sample_every=4", "train.checkpoint_every=2", "train.sample_count=16", "train.device=cpu",
         "eval.every=0", "eval.num_samples=64", "eval.batch_size=64", "model.width=0.25"],
    )
    train(config, run, progress=False)
    return run


def test_eval_and_sample_say_which_checkpoint_they_read(short_run, tmp_path, capsys):
    best = RunFiles(short_run).best_checkpoint
    moved = best.with_name("kept.pt")
    best.rename(moved)  # a run whose evaluations never improved has no best.pt
    try:
        assert main(["eval", str(short_run), "--set", "eval.num_samples=32"]) == 0
        captured = capsys.readouterr()
        assert f"{RunFiles(short_run).latest_checkpoint} (step 4)" in captured.err
        assert '"checkpoint": "latest"' in captured.out  # the record names the file it scored, not the one asked for
    finally:
        moved.rename(best)
    assert main(["eval", str(short_run), "--set", "eval.num_samples=32"]) == 0
    err = capsys.readouterr().err
    assert f"{best} (step 4)" in err
    # 4 steps at decay 0.999: the EMA generator lags, and eval says so in one line
    (note,) = [line for line in err.splitlines() if line.startswith("note:")]
    assert "at step 4 the EMA generator has averaged 0.004 of the 3 EMA horizons" in note and "until step 3000" in note
    assert main(["sample", str(short_run), "--count", "4"]) == 0  # the EMA lags: the raw generator alone
    captured = capsys.readouterr()
    assert "latest.pt (step 4)" in captured.err and captured.out.strip().endswith("latest_raw_step4.png")
    assert main(["sample", str(short_run), "--count", "4", "--generator", "both"]) == 0
    assert capsys.readouterr().out.strip().endswith("latest_raw_ema_step4.png")


def test_sample_grids_are_enlarged_by_whole_blocks_and_labelled(short_run):
    grid = np.asarray(Image.open(RunFiles(short_run).samples / "step_0000004.png").convert("L")).astype(int)
    # 16 digits of 8x8 in rows of 4, each enlarged 8x, raw above EMA, each under a label strip
    assert grid.shape[1] >= 4 * 64 and grid.shape[0] >= 2 * 4 * 64
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    plain = image_grid(images, rows=2)
    assert plain.shape == (3, 2 + 2 * 66, 2 + 2 * 66)  # make_grid's 2 px padding around 64 px cells
    cell = plain[0, 2:66, 2:66]
    blocks = cell.reshape(8, 8, 8, 8)  # 8x8 source pixels, each an 8x8 block
    assert torch.equal(blocks, blocks[:, :1, :, :1].expand_as(blocks))
    assert image_grid(torch.zeros(2, 3, 128, 128), rows=2).shape[-1] == 2 + 2 * 130  # large images stay as they are
    labelled = labelled_grid(plain, "EMA, step 4000 with a label longer than the grid is wide")
    strip = labelled[:, : labelled.shape[1] - plain.shape[1]]
    assert labelled.shape[2] > plain.shape[2] and strip.min() < 0.5 and strip.max() == 1.0  # dark text on white
    assert torch.equal(labelled[:, strip.shape[1]:, : plain.shape[2]], plain)


def test_set_before_the_config_path_works_and_dry_run_prints_the_resolved_config(tmp_path, capsys):
    out = tmp_path / "never-written"
    argv = ["train", "--set", "train.steps=7", "norm=sn", str(DIGITS / "gn.yaml"), "--out", str(out), "--dry-run"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    resolved = yaml.safe_load(captured.out)
    assert resolved["train"]["steps"] == 7 and resolved["norm"] == "sn" and "base" not in resolved
    assert load_config(DIGITS / "gn.yaml", ["train.steps=7", "norm=sn"]).to_dict() == resolved
    assert "dry run" in captured.err and not out.exists()  # nothing trained, nothing written
    # a bad component option fails the dry run as it would fail the run, in one line with a suggestion
    assert main(["train", str(DIGITS / "gn-cr.yaml"), "--set", "norm.consistncy_weight=3", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown option 'consistncy_weight'; did you mean 'consistency_weight'?" in err


def test_a_stop_by_signal_is_reported_as_stopped_with_128_plus_the_signal(monkeypatch, capsys):
    import signal

    from gn_plugin import cli
    from gn_plugin.errors import Interrupted

    def stopped(args):
        raise Interrupted("stopped by SIGINT at step 12, saved in run/checkpoints/latest.pt", signal.SIGINT)

    def ctrl_c(args):
        raise KeyboardInterrupt

    for handler, expected in ((stopped, "gnbench: stopped by SIGINT at step 12"), (ctrl_c, "gnbench: stopped by Ctrl-C")):
        monkeypatch.setattr(cli, "command_list", handler)
        assert main(["list"]) == 130
        err = capsys.readouterr().err
        assert err.startswith(expected) and "error" not in err


def test_list_detail_shows_a_metrics_direction(capsys):
    metrics = detail_lines(capsys, "metric")
    assert "lower is better; needs the reference statistics only" in metrics["fid"]
    assert "higher is better" in metrics["is"][-1] and "lower is better; needs the reference features" in metrics["kid"]


def test_the_cli_starts_without_torch_and_lists_every_command(tmp_path):
    import subprocess
    import sys

    # `gnbench --help` and `gnbench list` import neither torch nor matplotlib nor clean-fid
    code = (
        "import sys; from gn_plugin.cli import main\n"
        "for argv in (['list'], ['list', 'norm']):\n    assert main(argv) == 0\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'matplotlib', 'cleanfid') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "lipschitz" in result.stdout and "norm         gn" in result.stdout
    # the help line listed for an experiment command without importing it is the command's own
    full, lazy = build_parser(), build_parser(commands_to_load=[])
    choices = lambda parser: next(a for a in parser._actions if a.dest == "command")._choices_actions  # noqa: E731
    assert [(a.dest, a.help) for a in choices(full)] == [(a.dest, a.help) for a in choices(lazy)]
