"""Config files for ``fastgen train``.

``fastgen train --config FILE`` reads the options of a run from FILE: a TOML file (a flat table
whose keys are the options of ``fastgen train``, spelt as the flags are or with underscores:
``batch-size = 32``, ``weight_norm = true``, ``model = "pixelcnnpp"``), or the ``config.json``
every ``fastgen train`` writes into its run directory (the options it ran with, resolved:
defaults included). Flags given on the command line override the file. An unknown key, or a
value its flag would refuse, is an error naming the key.

    fastgen train --config experiment.toml --out runs/a
    fastgen train --config runs/a/config.json --out runs/b      # repeats run a, bit for bit

How a run is carried out rather than what it is (``--resume``, ``--overwrite``, ``--quiet``,
``--debug``) is accepted in a file but never written to a run's config.json.
"""
from __future__ import annotations

import argparse
import os
from typing import Any

import torch

from fastgen.train.checkpoint import (CONFIG, FORMAT, RUN_CONFIG_FORMAT, atomic_write, config_format, dumps_strict,
                                      loads_strict, read_json)

VERSION = 1
NOT_WRITTEN = ("resume", "overwrite", "quiet", "debug")
MAX_FILE_BYTES = 1 << 20


def option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's options (and positionals) by destination: the keys a config file may set."""
    return {action.dest: action for action in parser._actions  # argparse keeps no public list of them
            if action.dest not in ("help", "config", argparse.SUPPRESS)}


def read_config_file(path: str) -> dict[str, Any]:
    """The options in ``path``: a ``.toml`` file, or a ``.json`` file (a run's config.json, or a
    flat object of options)."""
    if not path.endswith((".toml", ".json")):
        raise ValueError(f"--config {path}: expected a .toml file or a run's config.json")
    if os.path.isdir(path):
        raise ValueError(f"--config {path}: is a directory (a run's options are in {os.path.join(path, CONFIG)})")
    if os.path.exists(path) and not os.path.isfile(path):  # a FIFO or a device would block or never end
        raise ValueError(f"--config {path}: not a regular file")
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"--config {path}: larger than {MAX_FILE_BYTES} bytes, too large for a config file")
    try:
        text = data.decode("utf-8")
        values = _toml_loads(text) if path.endswith(".toml") else loads_strict(text)
    except ValueError as e:  # tomllib.TOMLDecodeError, json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"--config {path}: not valid {'TOML' if path.endswith('.toml') else 'JSON'} ({e})") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected an object of options, got a {type(values).__name__}")
    if values.get("format") == FORMAT:
        raise ValueError(f"--config {path}: this is a checkpoint's config; the options of a run are in config.json "
                         "of its run directory")
    if values.get("format") == RUN_CONFIG_FORMAT:
        version = values.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= VERSION:
            raise ValueError(f"--config {path}: run config version {version!r}, this fastgen reads 1 to {VERSION}")
        values = values.get("options")
        if not isinstance(values, dict):
            raise ValueError(f"--config {path}: \"options\" must be an object")
    return values


def _toml_loads(text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise ValueError("reading TOML needs Python 3.11 or later, or the tomli package") from None
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _value(action: argparse.Action, key: str, value: Any) -> Any:
    """``value`` as the flag would parse it (its type, range and choices checked)."""
    if isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction)):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{key} must be a {'string' if action.type is None else 'number'}, got {value!r}")
    text = str(value)
    try:
        parsed = action.type(text) if action.type is not None else text
    except (argparse.ArgumentTypeError, ValueError) as e:
        raise ValueError(f"{key} {text!r}: {e}") from None
    if action.choices is not None and parsed not in action.choices:
        raise ValueError(f"{key} must be one of {', '.join(map(str, action.choices))}, got {value!r}")
    return parsed


def apply_config(parser: argparse.ArgumentParser, values: dict[str, Any], source: str) -> None:
    """Make ``values`` the defaults of ``parser`` (so that flags on the command line override
    them). A null value leaves the flag's own default."""
    actions = option_actions(parser)
    defaults, keys = {}, {}
    for key, value in values.items():
        dest = key.replace("-", "_")
        if dest not in actions:
            raise ValueError(f"--config {source}: unknown key {key!r} (not an option of {parser.prog})")
        if dest in keys:
            raise ValueError(f"--config {source}: {keys[dest]!r} and {key!r} are the same option")
        keys[dest] = key
        if value is not None:
            try:
                defaults[dest] = _value(actions[dest], key, value)
            except ValueError as e:
                raise ValueError(f"--config {source}: {e}") from None
    parser.set_defaults(**defaults)


def missing_required(args: argparse.Namespace) -> list[str]:
    """The train arguments ``args`` lacks that neither the command line nor the config file gave.
    (The parser cannot require them: a config file may give them.)"""
    return [name for dest, name in (("model", "model"), ("data", "--data")) if getattr(args, dest, None) is None]


def resolved_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Every option of the run as it was resolved (defaults included), keyed as the flags are spelt."""
    return {dest.replace("_", "-"): getattr(args, dest) for dest in option_actions(parser)
            if dest not in NOT_WRITTEN and hasattr(args, dest)}


def check_run_config_file(out_dir: str) -> None:
    """Refuse a run directory whose config.json a run would replace but is not a run's: a
    checkpoint directory given as --out, or a file of the user's."""
    file = os.path.join(out_dir, CONFIG)
    found = config_format(file)
    if os.path.lexists(file) and found != RUN_CONFIG_FORMAT:
        kind = "a checkpoint directory" if found == FORMAT else "a config.json that is not a run's"
        raise ValueError(f"--out {out_dir}: {kind}; a run writes its options to {file}: choose another --out")


def _write(path: str, document: dict[str, Any]) -> None:
    atomic_write(path, lambda f: f.write((dumps_strict(document, indent=1) + "\n").encode()))


def write_run_config(out_dir: str, options: dict[str, Any], **extra: Any) -> str:
    """Write ``options`` (and ``extra`` top-level fields) as ``out_dir/config.json`` (atomically)
    for a new run; returns its path."""
    import fastgen

    path = os.path.join(out_dir, CONFIG)
    _write(path, {"format": RUN_CONFIG_FORMAT, "version": VERSION, "command": "train", "options": options,
                  "fastgen": fastgen.__version__, "torch": torch.__version__, **extra})
    return path


def note_resume(out_dir: str, options: dict[str, Any]) -> None:
    """After a resumed run: the options it started with stay in config.json (they repeat the run
    as first begun), and the ones the resume changed (more epochs, a new lr) are appended to its
    ``resumes`` list. A run from before config.json existed gets one, marked as written on resume."""
    path = os.path.join(out_dir, CONFIG)
    if config_format(path) != RUN_CONFIG_FORMAT:
        write_run_config(out_dir, options, written_on_resume=True)
        return
    document = read_json(path)
    changed = {k: v for k, v in options.items() if k != "out" and document["options"].get(k) != v}
    if changed:
        document["resumes"] = [*document.get("resumes", []), changed]
        _write(path, document)
