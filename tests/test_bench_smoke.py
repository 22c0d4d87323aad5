"""The benchmark harness at tiny sizes, so it cannot rot. Figures come from `make bench`, not here."""
import csv
import os

from bench.__main__ import OPS, main
from bench.harness import COLUMNS
from bench.table import main as table_main


def test_harness_runs_every_op_and_provider(tmp_path, capsys):
    out = tmp_path / "results.csv"
    assert main(["--quick", "--repeats", "2", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert rows and set(rows[0]) == set(COLUMNS)
    assert {r["op"] for r in rows} == set(OPS)
    assert {r["provider"] for r in rows} == {"reference", "compiled", "fastgen"}
    assert {r["mode"] for r in rows} == {"fwd", "fwd+bwd"}
    assert all(float(r["median_ms"]) > 0 and float(r["p20_ms"]) <= float(r["p80_ms"]) for r in rows)
    table = capsys.readouterr().out
    assert "vs ref" in table and "masked_conv2d" in table


def test_markdown_table_of_latest_run(tmp_path, capsys):
    out = tmp_path / "results.csv"
    main(["--quick", "--op", "gated_activation", "--providers", "reference,fastgen", "--modes", "fwd", "--repeats",
          "2", "--out", str(out)])
    capsys.readouterr()
    other = tmp_path / "quality.csv"  # another benchmark's results, with no op column: skipped
    other.write_text("model,bits_per_dim\nvae,1.9\n")
    assert table_main([str(other), str(out), "--op", "gated_activation"]) == 0
    table = capsys.readouterr().out
    assert "| gated_activation |" in table and "| fwd |" in table and "vae" not in table


def test_cli_passes_options_to_the_harness(tmp_path):
    from fastgen.cli import main as cli_main

    out = tmp_path / "cli.csv"
    assert cli_main(["bench", "--quick", "--op", "gated_activation", "--providers", "fastgen", "--modes", "fwd",
                     "--repeats", "1", "--out", str(out)]) == 0
    assert out.read_text().count("gated_activation") == 2  # two quick shapes


def test_demo_figures_of_a_finished_run(tmp_path, capsys):
    from bench.demo_figures import main as figures_main
    from fastgen.data import digits
    from fastgen.models import GatedPixelCNN
    from fastgen.train import TrainConfig, Trainer

    model = GatedPixelCNN(1, 17, 8, hidden_channels=8, n_layers=2, kernel_size=3, n_classes=10)
    config = TrainConfig(epochs=1, batch_size=128, grid_samples=0, progress=False)
    Trainer(model, digits("train"), digits("val"), str(tmp_path / "run"), config).fit()
    out = tmp_path / "figures.txt"
    assert figures_main(["--run", str(tmp_path / "run"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "test NLL:" in text and "baseline: 2.43" in text and text.count("samples labelled as their class") == 2


def test_sampling_benchmark_runs_every_provider(tmp_path, capsys):
    from bench.bench_sampling import main as sampling_main

    out = tmp_path / "sampling.csv"
    assert sampling_main(["--quick", "--batch", "1", "--repeats", "1", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert {(r["model"], r["provider"]) for r in rows} == {
        (m, p) for m in ("GatedPixelCNN", "PixelCNN", "PixelCNNpp") for p in ("forward", "cached", "cached-eager", "naive")}
    assert all(float(r["median_ms"]) > 0 for r in rows)
    assert "scaled by 8" in capsys.readouterr().out
    assert sampling_main(["--markdown", "--out", str(out)]) == 0
    assert "| PixelCNN | 1 |" in capsys.readouterr().out


def test_interop_benchmark_runs(capsys):
    from bench.bench_interop import main as interop_main

    assert interop_main(["--quick", "--repeats", "1", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "max relative error vs source (float32)" in out and "speed-up" in out


def test_training_step_benchmark_runs_every_model_and_provider(tmp_path, capsys, monkeypatch):
    import bench.bench_train as bench_train
    from bench.__main__ import main as bench_main

    out = tmp_path / "train.csv"
    # torch.compile of every tiny model takes minutes on two cores: plain and fastgen for every model, the
    # compiled provider for one.
    assert bench_train.main(["--quick", "--repeats", "1", "--providers", "plain,fastgen", "--out", str(out)]) == 0
    assert bench_train.main(["--quick", "--repeats", "1", "--model", "PixelCNN", "--providers", "compiled",
                             "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert rows and set(rows[0]) == set(bench_train.COLUMNS)
    assert {(r["model"], r["provider"]) for r in rows} == {
        (m, p) for m in bench_train.MODELS for p in ("plain", "fastgen")} | {("PixelCNN", "compiled")}
    # The fairness check ran and passed for every model (it raises otherwise): same loss to float32 rounding.
    assert all(float(r["loss_rel_diff"]) <= bench_train.LOSS_RTOL for r in rows)
    timed = [r for r in rows if not r["note"].startswith("compile failed")]
    assert all(float(r["median_ms"]) > 0 and float(r["images_per_s"]) > 0 for r in timed)
    compiled = next(r for r in rows if r["provider"] == "compiled")
    assert compiled["note"].startswith("compile failed") or float(compiled["compile_s"]) > 0
    text = capsys.readouterr().out
    assert "plain vs fastgen" in text and "max |diff|" in text and "| DCGAN | fp32 |" in text
    assert bench_train.main(["--markdown", "--out", str(out)]) == 0
    assert "| PixelCNN | fp32 | 4 |" in capsys.readouterr().out

    seen = []
    monkeypatch.setattr(bench_train, "main", lambda argv: seen.append(argv) or 0)
    assert bench_main(["--train", "--quick", "--repeats", "1", "--device", "cpu", "--out", str(out)]) == 0
    assert seen == [["--device", "cpu", "--quick", "--repeats", "1", "--out", str(out)]]


def test_translation_step_benchmark_runs(tmp_path, capsys):
    """Tiny Pix2Pix and CycleGAN steps; the script stops if the eager copy's first losses differ
    from fastgen's (the same networks)."""
    import bench.bench_translation_step as bench_step

    out = tmp_path / "translation.csv"
    assert bench_step.main(["--quick", "--repeats", "1", "--providers", "plain,fastgen", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert {(r["model"], r["provider"]) for r in rows} == {(m, p) for m in ("Pix2Pix", "CycleGAN")
                                                          for p in ("plain", "fastgen")}


def test_progan_step_benchmark_runs(tmp_path):
    """A tiny ProgressiveGAN's step at three stages, fastgen against every op as its reference; the
    script stops if their first losses differ."""
    import bench.bench_progan_step as bench_step

    out = tmp_path / "progan.csv"
    assert bench_step.main(["--quick", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["stage"][0], r["provider"]) for r in rows] == [(s, p) for s in "012" for p in ("plain", "fastgen")]
    assert all(0 < float(r["ops_share"]) < 1 for r in rows if r["provider"] == "fastgen")


def test_progan_digits_report_runs(tmp_path, monkeypatch):
    """The figures' script end to end on a tiny schedule (its numbers mean nothing at this size)."""
    import bench.progan_digits as figures

    monkeypatch.setattr(figures, "PROGAN", {"latent_dim": 8, "max_channels": 4})
    monkeypatch.setattr(figures, "DOCS_DIR", str(tmp_path / "docs"))
    (tmp_path / "docs").mkdir()
    out = tmp_path / "report.txt"
    assert figures.main(["--fade-images", "64", "--stable-images", "64", "--dcgan-epochs", "1", "--work",
                         str(tmp_path / "work"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "EMA generator" in text and "trained generator" in text and text.count("seed ") == 3
    assert sorted(os.listdir(tmp_path / "docs")) == [f"progan-digits-stage-{s}.png" for s in (1, 2, 3, 4)]


def test_step_bound_counts_only_the_taps_the_masks_keep():
    import torch

    from bench.step_bound import kept_multiply_adds
    from fastgen.nn import MaskedConv2d

    layers = torch.nn.Sequential(MaskedConv2d(2, 3, 3, "B", 1), MaskedConv2d(3, 2, 7, "A", 1),
                                 MaskedConv2d(2, 4, 1, "B", 1))
    # 3x3 'B' keeps 5 of 9 taps, 7x7 'A' 24 of 49, 1x1 'B' its one
    assert kept_multiply_adds(layers, batch=2, pixels=10) == (5 * 3 * 2 + 24 * 2 * 3 + 1 * 4 * 2) * 2 * 10
