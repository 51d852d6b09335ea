"""``python -m cnn.train``: end to end with short settings (JSON, PNG, save/resume), the
augmentation helper, and argument errors."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import child_env

from cnn import augment, models, train
from cnn.serialization import load_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_end_to_end_json_png_and_last_line(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out_json, out_png = tmp_path / "run.json", tmp_path / "run.png"
    status = train.main(["--epochs", "1", "--limit", "512", "--batch-size", "64", "--verbose", "2",
                         "--json", str(out_json), "--plot", str(out_png)])
    assert status == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"test accuracy: [01]\.\d{4}", lines[-1])
    assert any(line.startswith("true\\pred") for line in lines)  # the confusion matrix
    report = json.loads(out_json.read_text())
    assert report["test_accuracy"] == pytest.approx(float(lines[-1].split()[-1]), abs=5e-5)
    assert report["train_images"] == 512 and report["test_images"] == 512
    assert report["epochs"] == [0] and len(report["history"]["loss"]) == 1
    assert report["train_seconds"] > 0 and report["images_per_second"] > 0
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 512
    assert np.trace(cm) / 512 == pytest.approx(report["test_accuracy"])
    assert out_png.read_bytes()[:8] == PNG_MAGIC


def test_save_then_resume_continues_the_run(tmp_path, capsys):
    path = tmp_path / "m.npz"
    common = ["--limit", "256", "--batch-size", "32", "--verbose", "0", "--model", "seed-mlp"]
    assert train.main(common + ["--epochs", "2", "--save", str(path)]) == 0
    two = load_model(path)
    assert two.train_state["epoch"] == 2
    assert train.main(common + ["--epochs", "1", "--save", str(path)]) == 0
    assert train.main(common + ["--epochs", "2", "--resume", str(path), "--save", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "resuming" in out and "warning" not in err  # --model seed-mlp is the checkpoint's
    resumed = load_model(path)
    assert resumed.train_state["epoch"] == 2
    for a, b in zip(resumed.get_weights(), two.get_weights()):
        np.testing.assert_array_equal(a, b)


_OVERRIDDEN = ["--model", "cnn", "--optimizer", "adam", "--lr", "0.5", "--momentum", "0.5",
               "--schedule", "cosine", "--seed", "3"]
_SAME_AS_CHECKPOINT = ["--model", "seed-mlp", "--optimizer", "sgd", "--lr", "0.03", "--momentum", "0",
                       "--schedule", "constant", "--seed", "0"]


@pytest.mark.parametrize("extra, ignored", [
    ([], []),
    (_SAME_AS_CHECKPOINT, []),
    (["--lr", "0.5"], ["--lr 0.5 (the checkpoint has 0.03)"]),
    (_OVERRIDDEN, ["--model cnn (the checkpoint has seed-mlp)", "--optimizer adam (the checkpoint has sgd)",
                   "--lr 0.5 (the checkpoint has 0.03)", "--momentum 0.5 (the checkpoint has 0.0)",
                   "--schedule cosine (the checkpoint has constant)", "--seed 3 (the checkpoint has 0)"]),
])
def test_resume_warns_about_the_options_the_checkpoint_overrides(tmp_path, capsys, extra, ignored):
    """Model/optimizer options given with --resume that differ from the checkpoint are named in
    one warning; the run still uses the checkpoint's values (and its model's defaults for the
    other options), so it ends where an uninterrupted run does."""
    path = tmp_path / "m.npz"
    common = ["--limit", "256", "--batch-size", "32", "--verbose", "0"]
    assert train.main(common + ["--model", "seed-mlp", "--epochs", "2", "--save", str(tmp_path / "two.npz")]) == 0
    assert train.main(common + ["--model", "seed-mlp", "--epochs", "1", "--save", str(path)]) == 0
    capsys.readouterr()
    assert train.main(common + ["--epochs", "2", "--resume", str(path), "--save", str(path)] + extra) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    if not ignored:
        assert warnings == [], err
    else:
        assert len(warnings) == 1, err
        assert warnings[0].startswith(f"warning: --resume {path}: the checkpoint's model, optimizer "
                                      f"and seed are used, so th")
        assert warnings[0].endswith("ignored: " + ", ".join(ignored)), warnings[0]
    for a, b in zip(load_model(path).get_weights(), load_model(tmp_path / "two.npz").get_weights()):
        np.testing.assert_array_equal(a, b)


def test_resume_warns_about_an_option_that_cannot_take_effect(tmp_path, capsys):
    from cnn import Sequential, layers
    model = Sequential([layers.Flatten(), layers.Dense(10, activation="softmax")], input_shape=(1, 28, 28), seed=0)
    model.compile(optimizer="adam")
    model.save(tmp_path / "adam.npz")
    assert train.main(["--resume", str(tmp_path / "adam.npz"), "--momentum", "0.9", "--epochs", "1",
                       "--limit", "32", "--batch-size", "16", "--verbose", "0"]) == 0
    err = capsys.readouterr().err
    assert "ignored: --momentum 0.9 (the checkpoint's adam optimizer has no momentum)" in err, err


def test_model_and_seed_options_default_to_not_given_and_help_says_what_resume_ignores(capsys):
    args = train._parser().parse_args([])
    assert args.model is None and args.seed is None  # so --resume can tell what was typed
    with pytest.raises(SystemExit):
        train.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "bn4 (default" in text and "seed-mlp" in text and "lenet5" in text \
        and "resnet8" in text and "--limit pick (0)" in text
    resume = text[text.index("--resume PATH continue"):]
    assert ("--model, --optimizer, --lr, --momentum, --schedule and --seed are not applied, and a "
            "warning on stderr names any given with a value the checkpoint does not hold") in resume


def test_seed_mlp_is_the_seed_network(tmp_path):
    model = models.build("seed-mlp", input_shape=(1, 28, 28), classes=10, seed=0)
    assert [type(layer).__name__ for layer in model.layers] == ["Flatten", "Dense", "Dense"]
    assert model.layers[1].units == 512 and model.layers[1].activation.name == "leaky_relu"
    assert model.layers[2].activation.name == "softmax"
    d = train.DEFAULTS["seed-mlp"]
    assert (d["lr"], d["batch_size"], d["optimizer"], d["loss"]) == (0.03, 64, "sgd", "mse")


def test_random_shift(rng):
    x = np.zeros((50, 1, 7, 7), np.float32)
    x[:, 0, 3, 3] = 1.0
    out = augment.random_shift(x, rng, 2)
    assert out.shape == x.shape and out.dtype == x.dtype and out.flags.c_contiguous
    rows, cols = np.nonzero(out[:, 0].sum(axis=2))[1], np.nonzero(out[:, 0].sum(axis=1))[1]
    assert set(rows) <= set(range(1, 6)) and set(cols) <= set(range(1, 6))
    assert len(set(zip(rows, cols))) > 10  # the offsets vary per image
    np.testing.assert_array_equal(out.sum(axis=(1, 2, 3)), 1.0)  # nothing lost within 2 px
    assert augment.random_shift(x, rng, 0) is x


def test_affine_warp_matches_scipy(rng):
    from scipy.ndimage import affine_transform
    x = rng.random((3, 2, 9, 11))
    angle, scale = np.array([0.3, -1.0, 2.5]), np.array([1.1, 0.8, 1.0])
    ty, tx = np.array([1.5, -0.3, 30.0]), np.array([-2.2, 0.7, 0.0])
    out = augment.affine_warp(x, angle, scale, ty, tx)
    centre = np.array([4.0, 5.0])
    for n in range(3):
        c, s = np.cos(angle[n]), np.sin(angle[n])
        m = np.array([[c, -s], [s, c]]) / scale[n]
        offset = centre - m @ centre - np.array([ty[n], tx[n]])
        for ch in range(2):
            want = affine_transform(x[n, ch], m, offset=offset, order=1, mode="grid-constant")
            np.testing.assert_allclose(out[n, ch], want, atol=1e-12)
    assert not out[2].any()  # shifted 30 px down: nothing left


def test_random_affine_and_make_augment(rng):
    x = rng.random((8, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(augment.random_affine(x, rng, 0, 0, 0), x, atol=1e-6)
    out = augment.random_affine(x, rng, 2, 10, 0.1)
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1 + 1e-6  # bilinear: convex combinations of pixels
    assert augment.make_augment(0, 0, 0) is None
    whole = augment.make_augment(2, 0, 0)(x, np.random.default_rng(1))
    assert set(np.unique(whole)) <= set(np.unique(x)) | {0.0}  # whole-pixel shifts copy pixels
    with pytest.raises(ValueError, match="scale"):
        augment.make_augment(2, 10, 1.0)


@pytest.mark.parametrize("argv", [["--epochs", "-1"], ["--batch-size", "0"], ["--lr", "nan"],
                                  ["--model", "resnet"], ["--optimizer", "rmsprop"], ["--bogus"],
                                  ["--rotate", "-5"], ["--shift", "inf"]])
def test_bad_arguments_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(argv)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, capsys, tmp_path):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    with pytest.raises(SystemExit):
        train.main(["--plot", str(tmp_path / "p.png")])
    assert "matplotlib" in capsys.readouterr().err


def test_missing_data_dir_is_reported(tmp_path, capsys):
    assert train.main(["--data-dir", str(tmp_path / "nowhere"), "--epochs", "1"]) == 1
    assert capsys.readouterr().err.startswith("error:")


def test_runs_as_a_module(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cnn.train", "--epochs", "1", "--limit", "128",
                           "--model", "seed-mlp", "--verbose", "0", "--threads", "1"],
                          capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=child_env())
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"test accuracy: [01]\.\d{4}", proc.stdout.strip().splitlines()[-1])
