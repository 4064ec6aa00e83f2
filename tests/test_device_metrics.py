"""gmlib.device selection and gmlib.metrics unit conversions."""
import math

import pytest
import torch

from gmlib import data, describe_device, get_device, metrics, nets, train
from gmlib.conditional import ConditionalGaussian


def test_explicit_device_and_environment_override(monkeypatch):
    monkeypatch.setenv("GMLIB_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    assert get_device("cpu") == torch.device("cpu")
    monkeypatch.delenv("GMLIB_DEVICE")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert get_device().type == expected
    assert "cpu" in describe_device("cpu")


def test_bad_device_requests(monkeypatch):
    with pytest.raises(ValueError, match="unknown device"):
        get_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            get_device("cuda")
        monkeypatch.setenv("GMLIB_DEVICE", "cuda")
        with pytest.raises(ValueError, match="CUDA is not available"):
            get_device()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_matches_the_cpu_closely():
    x, y = data.heteroscedastic_1d(512, seed=0)
    results = {}
    for dev in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = ConditionalGaussian(nets.mlp(1, [32], 2), 1, 1, device=dev)
        hist = train(model, (x, y), epochs=5, device=dev, progress=False)
        assert next(model.parameters()).device.type == dev
        results[dev] = hist.train_loss[-1]
    assert results["cuda"] == pytest.approx(results["cpu"], rel=1e-3)


def test_bits_per_dim_conversions():
    assert metrics.nats_to_bits_per_dim(64 * math.log(2), 64) == pytest.approx(1.0)
    x = torch.tensor([10.0, 97.0])
    torch.testing.assert_close(metrics.bits_per_dim_to_nats(metrics.nats_to_bits_per_dim(x, 64), 64), x)
    # a uniform distribution over 17 levels in each of 64 pixels
    assert metrics.nats_to_bits_per_dim(64 * math.log(17), 64) == pytest.approx(math.log2(17))
    with pytest.raises(ValueError, match="dims"):
        metrics.nats_to_bits_per_dim(1.0, 0)
