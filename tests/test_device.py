"""The device a run computes on: config, run ids, results; CUDA cases skip without a GPU."""

import dataclasses

import pytest
import torch

from sparsetopo import SparsetopoError
from sparsetopo.cli import main
from sparsetopo.sweep.spec import parse_spec, expand, run_id
from sparsetopo.train import TrainConfig, train
from sparsetopo.train.population import train_population

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def test_run_ids_of_cpu_configs_are_unchanged_by_the_device_field():
    # computed by the code before TrainConfig had a device field
    assert run_id(TrainConfig()) == "699059cc204ada6b"
    assert run_id(TrainConfig(dataset="digits", hidden=(100,), degrees=(16, 10), epochs=100, lr=0.5)) == \
        "a8c05e015dd134ff"
    assert run_id(TrainConfig(dataset="digits", hidden=(32,), construction="random_regular", degrees=(8, 10),
                              dropout=(0.2, 0.5), seed=3, backend="masked", device="cpu")) == "37789fa2ccee1f6c"
    assert run_id(TrainConfig(device="cuda")) != run_id(TrainConfig())
    assert run_id(TrainConfig(device="cuda")) != run_id(TrainConfig(device="cuda:1"))


def test_device_is_validated_and_recorded():
    assert TrainConfig(device="cuda:1").device == "cuda:1"
    for bad in ("tpu", "cuda:x", 3, ""):
        with pytest.raises(SparsetopoError, match="choose 'cpu', 'cuda' or 'cuda:N'"):
            TrainConfig(device=bad)
    with pytest.raises(SparsetopoError, match="backend='sparse' computes on CPU only"):
        TrainConfig(device="cuda", backend="sparse")
    assert TrainConfig.from_dict({"device": "cuda"}).to_dict()["device"] == "cuda"


def test_a_spec_may_set_the_device():
    spec = parse_spec('[protocol]\ndataset = "digits"\ndevice = "cuda"\nepochs = 1\n'
                      '[grid.a]\nhidden = [[16]]\ndegrees_in = [4]\ndegrees_out = [10]\n')
    assert {c.device for c in expand(spec)} == {"cuda"}


def test_explicit_cpu_equals_the_default(digits):
    kw = dict(dataset="digits", hidden=(16,), degrees=(4, 10), epochs=2, lr=0.5, dropout=(0.2, 0.5), seed=1)
    a, b = train(TrainConfig(**kw), dataset=digits), train(TrainConfig(device="cpu", **kw), dataset=digits)
    assert a.test_accuracy == b.test_accuracy and a.weight_stats == b.weight_stats
    assert b.to_dict()["config"]["device"] == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_one_clear_error(digits, capsys):
    with pytest.raises(SparsetopoError, match="sees no CUDA GPU"):
        train(TrainConfig(dataset="digits", hidden=(8,), epochs=1, device="cuda"), dataset=digits)
    assert main(["train", "--dataset", "digits", "--hidden", "8", "--epochs", "1", "--device", "cuda"]) == 2
    assert "use device='cpu'" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits", "--hidden", "8", "--epochs", "1", "--device", "gpu"]) == 2


@CUDA
@pytest.mark.parametrize("dropout", [(0.0, 0.0), (0.2, 0.5)])
def test_training_on_cuda_matches_cpu(digits, dropout):
    kw = dict(dataset="digits", hidden=(32,), degrees=(8, 10), epochs=3, lr=0.5, dropout=dropout,
              construction="random_regular", seed=2, backend="masked")
    cpu = train(TrainConfig(**kw), dataset=digits)
    gpu = train(TrainConfig(device="cuda", **kw), dataset=digits)
    assert gpu.backend == "autograd/masked" and gpu.to_dict()["config"]["device"] == "cuda"
    assert abs(cpu.test_accuracy - gpu.test_accuracy) <= 0.01
    for c, g in zip(cpu.weight_stats, gpu.weight_stats):
        assert c["nnz"] == g["nnz"] and abs(c["mean"] - g["mean"]) < 1e-3
    auto = train(TrainConfig(device="cuda", **{**kw, "backend": "auto"}), dataset=digits)
    assert auto.backend == "autograd/masked"


@CUDA
def test_population_torch_engine_on_cuda(digits):
    configs = [TrainConfig(dataset="digits", hidden=(16,), degrees=(4, 10), epochs=2, lr=0.5, seed=s,
                           device="cuda") for s in range(3)]
    results = train_population(configs, dataset=digits, max_members=3)
    assert {r.backend for r in results} == {"torch-population/masked"}
    single = train(configs[1], dataset=digits)
    assert abs(results[1].test_accuracy - single.test_accuracy) <= 0.01
    with pytest.raises(SparsetopoError, match="engine='fused' runs on CPU only"):
        train_population(configs, dataset=digits, engine="fused")


@CUDA
def test_block_population_on_cuda_matches_cpu(digits):
    """The torch stack of block members (one union block layer per layer) runs on CUDA and
    ends where the same population ends on the CPU."""
    configs = [TrainConfig(dataset="digits", hidden=(20,), degrees=(1, None), epochs=2, lr=0.5, seed=s, block=8,
                           batch_size=64) for s in range(3)]
    cpu = train_population(configs, dataset=digits)
    gpu = train_population([dataclasses.replace(c, device="cuda") for c in configs], dataset=digits)
    assert {r.backend for r in gpu} == {"torch-population/block"}
    for c, g in zip(cpu, gpu):
        for a, b in zip(c.model.layers, g.model.layers):
            torch.testing.assert_close(a.tiles.cpu(), b.tiles.detach().cpu(), rtol=1e-4, atol=1e-5)
