"""``fastgen train --config``: TOML files and a run's config.json, command-line overrides, errors that
name the key, and a repeated run that matches the first bit for bit."""
from __future__ import annotations

import json
import os

import pytest

import fastgen
from fastgen.cli import build_parser, main
from fastgen.run_config import NOT_WRITTEN, apply_config, option_actions, resolved_options

pytest.importorskip("safetensors")

TINY = {"model": "pixelcnn", "data": "digits", "hidden": 8, "layers": 2, "kernel-size": 3, "quiet": True,
        "grid-samples": 0, "epochs": 1}


def toml_file(path, values: dict) -> str:
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]  # JSON scalars are TOML scalars
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run_options(run: str) -> dict:
    document = json.loads(open(os.path.join(run, "config.json")).read())
    assert document["format"] == "fastgen-run-config" and document["command"] == "train"
    return document["options"]


def refused(argv: list[str], capsys) -> str:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors (a missing argument) exit from the parser
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("fastgen: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_toml_file_and_overrides(tmp_path, capsys):
    config = toml_file(tmp_path / "exp.toml", {**TINY, "batch_size": 32, "lr": 0.002, "seed": 3, "epochs": 5})
    run = str(tmp_path / "run")
    # The command line overrides the file: the positional model, a flag with a value, a switch.
    assert main(["train", "gated-pixelcnn", "--config", config, "--epochs", "1", "--conditional", "--out", run]) == 0
    options = run_options(run)
    assert options["model"] == "gated-pixelcnn" and options["epochs"] == 1 and options["conditional"] is True
    assert options["batch-size"] == 32 and options["lr"] == 0.002 and options["seed"] == 3 and options["hidden"] == 8
    assert options["out"] == run and options["dropout"] == 0.0  # defaults are resolved too
    assert not set(NOT_WRITTEN) & set(options)  # how it ran (quiet), not what it is
    # A run directory holding config.json is still a run directory, not a checkpoint.
    assert fastgen.load(run).n_classes == 10
    assert main(["sample", run, "-n", "2", "-o", str(tmp_path / "grid.png")]) == 0


def test_run_config_repeats_the_run_bit_for_bit(tmp_path, capsys):
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    assert main(["train", "pixelcnnpp", "--data", "digits", "--hidden", "8", "--layers", "1", "--nr-mix", "2",
                 "--dropout", "0.3", "--ema", "0.9", "--epochs", "2", "--batch-size", "128", "--seed", "7",
                 "--grid-samples", "0", "--quiet", "--out", first]) == 0
    # Without --out the repeat would go into the first run's directory, which holds a run.
    assert "already holds a run" in refused(["train", "--config", os.path.join(first, "config.json")], capsys)
    assert main(["train", "--config", os.path.join(first, "config.json"), "--out", second, "--quiet"]) == 0
    for name in ("model.safetensors", "ema.safetensors"):
        assert open(os.path.join(first, "last", name), "rb").read() == open(os.path.join(second, "last", name),
                                                                            "rb").read(), name
    first_meta = json.loads(open(os.path.join(first, "last", "config.json")).read())
    second_meta = json.loads(open(os.path.join(second, "last", "config.json")).read())
    assert first_meta["history"] == second_meta["history"] and first_meta["step"] == second_meta["step"]
    assert {k: v for k, v in run_options(first).items() if k != "out"} == \
        {k: v for k, v in run_options(second).items() if k != "out"}


def test_every_option_is_a_key():
    parser = build_parser()
    train = parser.commands["train"]
    args, _ = parser.parse_known_args(["train", "vae", "--data", "digits"])
    written = resolved_options(args, train)
    # Everything written reads back, and so does every option a file may set but a run never writes.
    apply_config(train, written, "written")
    apply_config(train, {"resume": True, "overwrite": False, "quiet": True, "debug": False}, "flags")
    flags = {a.dest for a in train._actions if a.option_strings or a.dest == "model"} - {"help", "config"}
    assert flags == set(option_actions(train)) == {k.replace("-", "_") for k in written} | set(NOT_WRITTEN)


@pytest.mark.parametrize("values, message", [
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"batch-size": 0}, "batch-size '0': must be a positive integer"),
    ({"batch-size": "many"}, "batch-size 'many': expected an integer"),
    ({"hidden": True}, "hidden must be a number"),
    ({"conditional": "yes"}, "conditional must be true or false"),
    ({"model": "gpt"}, "model must be one of pixelcnn"),
    ({"loss": "l2"}, "loss must be one of minimax"),
    ({"lr": -1.0}, "lr '-1.0': must be"),
    ({"config": "other.toml"}, "unknown key 'config'"),
])
def test_bad_keys_and_values_name_the_key(tmp_path, capsys, values, message):
    config = toml_file(tmp_path / "bad.toml", {**TINY, **values})
    err = refused(["train", "--config", config, "--out", str(tmp_path / "run")], capsys)
    assert f"--config {config}: " in err and message in err, err
    assert not os.path.exists(tmp_path / "run")


def test_bad_files(tmp_path, capsys):
    assert "No such file" in refused(["train", "--config", str(tmp_path / "none.toml")], capsys)
    assert "expected a .toml file" in refused(["train", "--config", str(tmp_path / "exp.yaml")], capsys)
    (tmp_path / "broken.toml").write_text("model = \n")
    assert "not valid TOML" in refused(["train", "--config", str(tmp_path / "broken.toml")], capsys)
    (tmp_path / "nested.toml").write_text('[train]\nmodel = "vae"\n')
    assert "unknown key 'train'" in refused(["train", "--config", str(tmp_path / "nested.toml")], capsys)
    (tmp_path / "list.json").write_text("[1, 2]")
    assert "expected an object of options" in refused(["train", "--config", str(tmp_path / "list.json")], capsys)
    (tmp_path / "future.json").write_text(json.dumps({"format": "fastgen-run-config", "version": 99, "options": {}}))
    assert "version 99" in refused(["train", "--config", str(tmp_path / "future.json")], capsys)
    (tmp_path / "deep.json").write_text("[" * 100_000)
    assert "nested too deeply" in refused(["train", "--config", str(tmp_path / "deep.json")], capsys)
    (tmp_path / "deep.toml").write_text("a = " + "[" * 50_000)
    assert "nested too deeply" in refused(["train", "--config", str(tmp_path / "deep.toml")], capsys)
    no_model = toml_file(tmp_path / "no-model.toml", {"data": "digits"})
    assert "required: model" in refused(["train", "--config", no_model], capsys)
    # A checkpoint's config.json describes a model, not a run: it is refused with a pointer.
    run = str(tmp_path / "run")
    assert main(["train", "--config", toml_file(tmp_path / "tiny.toml", TINY), "--out", run]) == 0
    err = refused(["train", "--config", os.path.join(run, "last", "config.json")], capsys)
    assert "checkpoint's config" in err


def test_a_run_never_replaces_a_config_json_that_is_not_a_runs(tmp_path, capsys):
    config = toml_file(tmp_path / "tiny.toml", TINY)
    first = str(tmp_path / "first")
    assert main(["train", "--config", config, "--out", first]) == 0
    checkpoint = os.path.join(first, "best")
    before = open(os.path.join(checkpoint, "config.json")).read()
    assert "a checkpoint directory" in refused(["train", "--config", config, "--out", checkpoint], capsys)
    assert open(os.path.join(checkpoint, "config.json")).read() == before
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}')
    assert "not a run's" in refused(["train", "--config", config, "--out", str(mine), "--overwrite"], capsys)
    assert (mine / "config.json").read_text() == '{"my": "settings"}'


def test_resume_keeps_the_first_options_and_lists_what_it_changed(tmp_path, capsys):
    run = str(tmp_path / "run")
    config = toml_file(tmp_path / "tiny.toml", TINY)
    assert main(["train", "--config", config, "--out", run]) == 0
    started = run_options(run)
    # A refused resume (another model) changes nothing.
    refused(["train", "--config", config, "gated-pixelcnn", "--out", run, "--resume"], capsys)
    assert run_options(run) == started and "resumes" not in json.loads(open(os.path.join(run, "config.json")).read())
    assert main(["train", "--config", config, "--out", run, "--resume", "--epochs", "2", "--lr", "0.002"]) == 0
    document = json.loads(open(os.path.join(run, "config.json")).read())
    assert document["options"] == started and document["resumes"] == [{"epochs": 2, "lr": 0.002}]


def test_the_same_option_twice_and_files_that_are_not_files(tmp_path, capsys):
    twice = tmp_path / "twice.toml"
    twice.write_text('model = "pixelcnn"\ndata = "digits"\nbatch_size = 3\n"batch-size" = 4\n')
    assert "'batch_size' and 'batch-size' are the same option" in refused(["train", "--config", str(twice)], capsys)
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)
    assert "not a regular file" in refused(["train", "--config", str(fifo)], capsys)


def test_the_command_line_turns_off_a_switch_the_file_turned_on(tmp_path, capsys):
    run = str(tmp_path / "run")
    config = toml_file(tmp_path / "on.toml", {**TINY, "conditional": True, "amp": True})
    assert main(["train", "--config", config, "--no-conditional", "--no-amp", "--out", run]) == 0
    options = run_options(run)
    assert options["conditional"] is False and options["amp"] is False
