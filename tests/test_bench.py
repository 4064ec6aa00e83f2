"""The benchmark scripts run end to end (tiny settings; their figures are not checked here).

Speed claims are printed by ``make bench``, never asserted by a timed test; this only keeps
the scripts from rotting between the runs that produce the README's figures.
"""
import math

import pytest

from gmlib.bench import autoregressive, flows, gan, latent, rbm, sequences, vae

pytestmark = pytest.mark.usefixtures("one_thread")


def test_latent_bench_runs_and_agrees_with_sklearn(capsys):
    assert latent.main(["--repeats", "1", "--iters", "2", "--missing-iters", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "final log-likelihoods agree to 1e-6: yes" in out


def test_sequences_bench_runs(capsys):
    sequences.main(["--repeats", "1", "--batch", "3", "--length", "5", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "HMM forward" in out and "Kalman filter" in out


def test_rbm_bench_runs_and_reports_both_libraries(capsys, monkeypatch):
    monkeypatch.setattr(rbm, "GMLIB_GRID", [(0.01, 100)])
    monkeypatch.setattr(rbm, "SKLEARN_GRID", [(0.1, 10)])
    status = rbm.main(["--hidden", "8", "--epochs", "1", "--select-chains", "4", "--select-betas", "10",
                       "--ais-runs", "2", "--ais-chains", "4", "--ais-betas", "10", "--device", "cpu"])
    out = capsys.readouterr().out
    assert status in (0, 1)  # 1 only says that gmlib lost at this toy size
    assert ("gmlib better" in out) == (status == 0)
    assert out.count("scikit-learn") >= 3 and "time per epoch of the selected settings" in out


def test_rbm_bench_refuses_bad_settings():
    with pytest.raises(SystemExit):
        rbm.main(["--ais-runs", "1"])


def test_vae_bench_runs_and_judges_the_targets(capsys):
    status = vae.main(["--set", "epochs=1", "--set", "channels=4", "--set", "hidden=8", "--k", "5",
                       "--elbo-samples", "2", "--device", "cpu"])
    out = capsys.readouterr().out
    assert status == 1 and "MISSED test negative ELBO <= 92" in out  # one epoch of a tiny model cannot pass
    assert "IWAE-5 NLL" in out and "saved" not in out


def test_vae_bench_refuses_unknown_recipe_fields():
    with pytest.raises(SystemExit):
        vae.main(["--set", "width=3"])


def test_gan_bench_runs_and_prints_the_floor(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("GMLIB_CACHE", str(tmp_path))  # a fresh classifier cache: the bench must build its own
    from gmlib import metrics

    metrics.digit_classifier.cache_clear()
    try:
        status = gan.main(["--seeds", "1", "--epochs", "1", "--n", "50", "--device", "cpu"])
    finally:
        metrics.digit_classifier.cache_clear()
    out = capsys.readouterr().out
    assert status == 0
    floor = float(out.split("floor: real training images vs test")[1].split()[0])
    sample = float(out.split("DCGAN samples vs test (mean ± sd over seeds)")[1].split()[0])
    assert 0 < floor < sample  # one epoch of a DCGAN is far from the real images
    assert "training time" in out and "Chapter 5 VAE samples" in out


def test_gan_bench_refuses_bad_settings():
    with pytest.raises(SystemExit):
        gan.main(["--preset", "huge"])
    with pytest.raises(SystemExit):
        gan.main(["--seeds", "0"])


def test_flows_bench_runs_and_judges_the_target(capsys):
    status = flows.main(["--set", "epochs=1", "--set", "hidden=4", "--set", "n_layers=1", "--set", "dequantizer_hidden=4",
                         "--k", "3", "--bound-samples", "2", "--device", "cpu"])
    out = capsys.readouterr().out
    assert status == 1 and "MISSED test variational bound <= 85" in out  # one epoch of a tiny flow cannot pass
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in out.splitlines()
            if line.startswith(("val ", "test "))}
    for split in ("val", "test"):
        variational, uniform, estimate = rows[split][0], rows[split][3], rows[split][6]
        # negative log-likelihoods of 64 pixels at 17 levels: positive, and after an epoch within twice
        # what the uniform distribution on the 17 levels scores (64 ln 17); bits/dim = nats / (64 ln 2)
        assert 0 < variational < 64 * math.log(17) * 2 and 0 < uniform and 0 < estimate
        assert rows[split][2] == pytest.approx(variational / (64 * math.log(2)), abs=1e-3)
    assert "a sample" in out and "saved" not in out


def test_flows_bench_refuses_bad_settings():
    with pytest.raises(SystemExit):
        flows.main(["--set", "width=3"])
    with pytest.raises(SystemExit):
        flows.main(["--preset", "huge"])
    with pytest.raises(SystemExit):
        flows.main(["--preset", "mnist", "--save"])


def test_autoregressive_bench_runs_and_judges_the_target(capsys):
    status = autoregressive.main(["--no-baselines", "--set", "epochs=1", "--set", "width=4", "--set", "n_layers=1",
                                  "--set", "scans=rows,cols-up", "--device", "cpu", "--threads", "1"])
    out = capsys.readouterr().out
    assert status == 1 and "MISSED main model's test NLL <= 77" in out  # one epoch of a tiny model cannot pass
    row = next(line for line in out.splitlines() if line.startswith("gated PixelCNN, 2 scans "))
    values = [float(v) for v in row.split()[4:]]  # after the name's four words
    test, se, bpd, val = values[:4]
    # exact NLLs of 64 pixels at 17 levels: positive, below twice the uniform distribution's 64 ln 17
    assert 0 < test < 2 * 64 * math.log(17) and 0 < val < 2 * 64 * math.log(17) and 0 < se < 5
    assert bpd == pytest.approx(test / (64 * math.log(2)), abs=1e-3)
    assert "each scan alone (test NLL): rows " in out and ", cols-up " in out and "saved" not in out


def test_autoregressive_bench_refuses_bad_settings():
    with pytest.raises(SystemExit):
        autoregressive.main(["--set", "depth=3"])
    with pytest.raises(SystemExit):
        autoregressive.main(["--set", "patience=soon"])
    with pytest.raises(SystemExit):
        autoregressive.main(["--preset", "mnist", "--save"])
    with pytest.raises(SystemExit):
        autoregressive.main(["--save", "--no-baselines"])


def test_diffusion_bench_runs_saves_and_judges_the_targets(capsys, tmp_path):
    from gmlib.bench import diffusion
    from gmlib.pretrained import load_diffusion_digits

    out = tmp_path / "diffusion.pt"
    status = diffusion.main(["--set", "epochs=1", "--set", "channels=8", "--quick-check", "--n-fd", "20",
                             "--t-samples", "2", "--device", "cpu", "--threads", "1", "--save", "--output", str(out)])
    text = capsys.readouterr().out
    assert status == 1  # one epoch misses the targets, and says so
    assert "MISSED diffusion test bound <= 78 nats" in text and "real-data floor" in text
    assert "classifier-free guidance" in text and "dequantised bound" in text
    models = load_diffusion_digits(out, device="cpu")
    assert list(models) == ["diffusion", "flow matching", "conditional"]
    info = models["diffusion"][1]
    assert {"test_nll", "test_nll_se", "test_nll_mc_se", "fd_ddpm", "fd_ddim", "fd_floor", "fd_dcgan"} <= set(info)
    assert set(models["conditional"][1]["guidance"]) == set(diffusion.GUIDANCE)


def test_diffusion_bench_refuses_bad_settings():
    from gmlib.bench import diffusion

    with pytest.raises(SystemExit):
        diffusion.main(["--set", "depth=3"])
    with pytest.raises(SystemExit):
        diffusion.main(["--preset", "mnist", "--save"])
    with pytest.raises(SystemExit):
        diffusion.main(["--save", "--no-companions"])
    with pytest.raises(SystemExit):
        diffusion.main(["--t-samples", "1"])
