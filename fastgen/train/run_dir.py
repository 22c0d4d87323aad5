"""The run directory a trainer writes: what counts as an existing run, the orphans a killed run
leaves behind, and the rule that protects a finished run.

A directory holds a run when it has a checkpoint (``best``, ``last``, or their ``.old`` copies) or a
``metrics.jsonl``. Training into it then needs a decision: resume the run (``resume=True``,
``--resume``) or replace it (``overwrite=True``, ``--overwrite``). Resuming needs ``last`` (or
``last.old``, left by a replacement that was interrupted); a run that has only ``best`` cannot be
resumed, and starting it afresh would overwrite ``best`` with a worse model.
"""
from __future__ import annotations

import glob
import os
import shutil

from fastgen.train.checkpoint import checkpoint_exists

CHECKPOINTS = ("best", "last")
METRICS = "metrics.jsonl"


class RunDirectoryError(ValueError):
    """Training into ``out_dir`` would lose a run, or there is no run to resume."""


def existing_run(out_dir: str) -> list[str]:
    """The entries of ``out_dir`` that make it hold a run (empty: a fresh directory)."""
    found = [f"{name}/" for name in CHECKPOINTS if checkpoint_exists(os.path.join(out_dir, name))]
    if os.path.exists(os.path.join(out_dir, METRICS)):
        found.append(METRICS)
    return found


def remove_orphans(out_dir: str) -> list[str]:
    """Remove what an interrupted checkpoint or file write leaves behind: the temporary checkpoint
    directories ``.<name>.tmp-*`` and the temporary files ``.tmp-*`` (in ``out_dir`` and
    ``samples/``), and a ``<name>.old`` whose replacement ``<name>`` is complete. Returns their names."""
    removed = []
    for pattern in (".*.tmp-*", ".tmp-*", os.path.join("samples", ".tmp-*")):
        for entry in glob.glob(os.path.join(glob.escape(out_dir), pattern)):
            shutil.rmtree(entry, ignore_errors=True) if os.path.isdir(entry) else os.unlink(entry)
            removed.append(os.path.relpath(entry, out_dir))
    for name in CHECKPOINTS:
        path = os.path.join(out_dir, name)
        if os.path.isdir(path + ".old") and os.path.isfile(os.path.join(path, "config.json")):
            shutil.rmtree(path + ".old", ignore_errors=True)
            removed.append(name + ".old")
    return removed


def clear_run(out_dir: str) -> None:
    """Delete the files of a previous run in ``out_dir`` (its checkpoints, metrics log, grids and
    TensorBoard events) and nothing else: ``out_dir`` may hold files of the user's."""
    for name in CHECKPOINTS:
        for path in (os.path.join(out_dir, name), os.path.join(out_dir, name + ".old")):
            shutil.rmtree(path, ignore_errors=True)
    for path in [os.path.join(out_dir, METRICS), *glob.glob(os.path.join(glob.escape(out_dir), "samples",
                                                                          "epoch_*.png"))]:
        if os.path.isfile(path):
            os.unlink(path)
    shutil.rmtree(os.path.join(out_dir, "tensorboard"), ignore_errors=True)


def check_run_directory(out_dir: str, *, resume: bool, overwrite: bool) -> None:
    """Refuse a start that would lose a run: training afresh into a directory holding one without
    ``overwrite``, ``resume`` where there is no ``last`` checkpoint, or both flags at once."""
    if resume and overwrite:
        raise RunDirectoryError("resume and overwrite exclude each other: resume continues the run in "
                                f"{out_dir}, overwrite replaces it")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise RunDirectoryError(f"{out_dir}: not a directory (the run directory must be one)")
    found = existing_run(out_dir)
    if resume and not checkpoint_exists(os.path.join(out_dir, "last")):
        have = f" (it holds {', '.join(found)})" if found else ""
        raise RunDirectoryError(f"{out_dir}: nothing to resume, there is no last/ checkpoint{have}; start a new "
                                "run without resume, or with overwrite to replace what is there")
    if found and not resume and not overwrite:
        raise RunDirectoryError(f"{out_dir} already holds a run ({', '.join(found)}): resume it (--resume, "
                                "fit(resume=True)) or replace it (--overwrite, fit(overwrite=True))")
