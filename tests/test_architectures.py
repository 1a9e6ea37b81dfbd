"""CNN and LSTM runs (TrainConfig.architecture): the config's rules, the run id of MLPs, the
networks' masks against a dense reference, the nulls, and a short training run of each."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sparsetopo.errors import SparsetopoError
from sparsetopo.sweep.spec import expand, load_spec, parse_spec, run_id
from sparsetopo.train import TrainConfig, train
from sparsetopo.train.architectures import build_architecture, image_side

CNN = dict(architecture="cnn", hidden=(8, 16, 16), construction="regular_rotating", density=0.25)
LSTM = dict(architecture="lstm", hidden=(32,), construction="random_regular", density=0.25)


def test_an_mlp_keeps_its_run_id():
    # the id the default config had before architecture and density existed
    assert run_id(TrainConfig()) == "699059cc204ada6b"
    assert run_id(TrainConfig(architecture="mlp", density=1.0)) == run_id(TrainConfig())
    assert run_id(TrainConfig(**CNN)) != run_id(TrainConfig(**{**CNN, "density": 0.5}))


@pytest.mark.parametrize("fields, message", [
    (dict(architecture="gru"), "unknown architecture 'gru'"),
    (dict(density=0.5), "an mlp gives its sparsity as degrees"),
    (dict(CNN, degrees=(2, 2, 2, 2)), "a cnn gives its sparsity as density"),
    (dict(CNN, hidden=(8,)), "a cnn needs hidden = a list of >= 2"),
    (dict(LSTM, hidden=(8, 8)), "an lstm has one hidden size"),
    (dict(CNN, construction="fully_connected"), "use density = 1"),
    (dict(CNN, density=0.0), "density=0.0 must be a fraction in (0, 1]"),
    (dict(CNN, block=4), "keep block = 1"),
])
def test_a_config_that_does_not_fit_its_architecture_is_refused(fields, message):
    with pytest.raises(SparsetopoError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        TrainConfig(**fields)


def test_the_cnn_sparsifies_every_conv_after_the_first_at_its_density():
    net = build_architecture(TrainConfig(**CNN), 64, 10)
    graphs = net.layers
    assert [(g.topology.n_in, g.topology.n_out, g.topology.k) for g in graphs] == [(8, 16, 4), (16, 16, 4)]
    for (_, weight, mask), g in zip(net.masked(), graphs):
        # mask[out, in] is the topology's dense adjacency (in x out), transposed, on every kernel entry
        expected = torch.from_numpy(np.asarray(g.topology.mask(), dtype=np.float32)).T
        assert torch.equal(mask[:, :, 0, 0], expected) and torch.equal(mask[:, :, 2, 1], expected)
    first = net.features[0]
    assert type(first) is torch.nn.Conv2d   # one input channel: nothing to choose
    assert net(torch.rand(3, 64)).shape == (3, 10)


def test_the_lstm_masks_w_ih_and_w_hh_and_reads_rows():
    net = build_architecture(TrainConfig(**LSTM), 64, 10)
    (ih, w_ih, m_ih), (hh, w_hh, m_hh) = net.masked()
    assert (ih, hh) == ("weight_ih_l0", "weight_hh_l0")
    assert w_ih.shape == (4 * 32, 8) and w_hh.shape == (4 * 32, 32)
    assert float(m_hh.mean()) == pytest.approx(8 / 32)
    # the masked LSTM equals a dense one holding the masked weights
    dense = torch.nn.LSTM(8, 32, batch_first=True)
    with torch.no_grad():
        dense.weight_ih_l0.copy_(w_ih * m_ih)
        dense.weight_hh_l0.copy_(w_hh * m_hh)
        dense.bias_ih_l0.copy_(net.lstm.bias_ih_l0)
        dense.bias_hh_l0.copy_(net.lstm.bias_hh_l0)
        x = torch.rand(5, 64)
        out, _ = dense(x.reshape(5, 8, 8))
        assert torch.allclose(net(x), net.head(out[:, -1]), atol=1e-6)


def test_the_lstm_null_permutes_pixels_within_each_row():
    config = TrainConfig(**LSTM)
    plain, permuted = build_architecture(config, 64, 10), build_architecture(
        TrainConfig(**LSTM, permute_inputs=1), 64, 10)
    perm = permuted.row_perm
    assert sorted(perm.tolist()) == list(range(8)) and perm.tolist() != list(range(8))
    x = torch.rand(4, 64)
    rows = x.reshape(4, 8, 8)[:, :, perm].reshape(4, 64)   # every row's pixels in the same new order
    with torch.no_grad():   # same seed: same weights and graph, so the null is the input order alone
        assert torch.allclose(permuted(x), plain(rows), atol=1e-6)


def test_the_cnn_null_permutes_every_sparsified_conv_s_input_channels():
    plain = build_architecture(TrainConfig(**CNN), 64, 10)
    permuted = build_architecture(TrainConfig(**CNN, permute_inputs=1), 64, 10)
    wrappers = [m for m in permuted.features if isinstance(m, torch.nn.Sequential)]
    assert len(wrappers) == 2
    perms = [w[0].perm.tolist() for w in wrappers]
    assert perms[0] != list(range(8)) and sorted(perms[1]) == list(range(16))
    # the graphs are the same: only the order of the channels they read differs
    assert [g.topology.fingerprint for g in plain.layers] == [g.topology.fingerprint for g in permuted.layers]
    conv = wrappers[0][1]
    x = torch.rand(2, 8, 6, 6)
    with torch.no_grad():
        assert torch.allclose(wrappers[0](x), conv(x[:, torch.tensor(perms[0])]))


def test_images_must_be_square():
    with pytest.raises(SparsetopoError, match="square images"):
        image_side(30, "cnn")


@pytest.mark.parametrize("fields", [CNN, LSTM])
def test_a_short_run_learns_digits(fields):
    config = TrainConfig(dataset="digits", epochs=2, batch_size=32, loss="cross_entropy", optimizer="adam",
                         lr=0.01, limit_train=600, seed=3, **fields)
    result = train(config)
    again = train(config)
    assert result.status == "ok" and len(result.history) == 2
    assert result.test_accuracy > 0.3                     # ten classes: chance is 0.1
    assert result.test_accuracy == again.test_accuracy    # every number from the run's seed
    assert [layer["construction"] for layer in result.layers] == [fields["construction"]] * 2
    assert result.weight_stats[0]["nnz"] == result.layers[0]["n_in"] * result.layers[0]["k"] * (
        9 if fields["architecture"] == "cnn" else 4)


def test_spec_files_name_the_architecture_and_the_presets_expand():
    spec = parse_spec('[protocol]\ndataset = "digits"\narchitecture = "lstm"\nhidden = [16]\n'
                      '[grid.a]\nconstructions = ["random_edge"]\ndensity = [0.25, 0.5]\nseeds = 2\n')
    configs = expand(spec)
    assert [(c.architecture, c.density, c.seed) for c in configs] == [
        ("lstm", 0.25, 0), ("lstm", 0.25, 1), ("lstm", 0.5, 0), ("lstm", 0.5, 1)]
    for name, n, kind in (("cnn", 78, "cnn"), ("recurrent", 54, "lstm")):
        configs = expand(load_spec(name))
        assert len(configs) == n and {c.architecture for c in configs} == {kind}
        assert {c.permute_inputs for c in configs} == {None, 1}
        assert min(c.seed for c in configs) == 0 and max(c.seed for c in configs) == 2


def test_resuming_a_cnn_run_is_refused_not_ignored(tmp_path):
    config = TrainConfig(dataset="digits", epochs=1, limit_train=64, **CNN)
    with pytest.raises(SparsetopoError, match="keeps no epoch checkpoint"):
        train(config, checkpoint_dir=tmp_path, resume=True)


def test_the_progress_line_names_a_cnn_s_density(capsys):
    from types import SimpleNamespace

    from sparsetopo.cli.progress import Progress

    event = SimpleNamespace(config=TrainConfig(**CNN), test_accuracy=0.5, status="ok", error=None, run_id="abc",
                            seconds=1.0, cpus=None, done=1, total=2)
    with Progress("run") as progress:
        progress.on_run(event)
    assert "regular_rotating hidden 8,16,16 cnn density 0.25 seed 0" in capsys.readouterr().err


def test_a_recipe_cannot_change_the_network_s_architecture_or_density():
    text = ('[protocol]\ndataset = "digits"\narchitecture = "lstm"\nhidden = [16]\n[recipes.other]\n{field}\n'
            '[grid.a]\nconstructions = ["random_edge"]\ndensity = [0.25]\nrecipes = ["other"]\n')
    for field in ('architecture = "cnn"', "density = 0.5"):
        with pytest.raises(SparsetopoError, match="a recipe says how networks train, not which network"):
            parse_spec(text.format(field=field))


def test_a_sweep_worker_trains_a_cnn_alone_and_measures_its_channel_graphs():
    from sparsetopo.sweep.worker import run_chunk

    configs = [TrainConfig(dataset="digits", epochs=1, limit_train=64, seed=s, **CNN).to_dict() for s in (0, 1)]
    rows = run_chunk(configs, population=True)   # the population engines hold MLPs only
    assert [row.get("error") for row in rows] == [None, None]
    assert {row["trained_with"] for row in rows} == {"train"}
    assert {row["backend"] for row in rows} == {"autograd/masked"}
    layers = json.loads(rows[0]["layers"])
    assert [(layer["n_in"], layer["n_out"], layer["k"]) for layer in layers] == [(8, 16, 4), (16, 16, 4)]
    assert rows[0]["metrics"]["network"]["algebraic_connectivity"] is not None
    # 4 of 16 output channels per input channel, each edge a 3x3 kernel: density 0.25, not 9 x 0.25
    assert rows[0]["connections"] == (8 * 4 + 16 * 4) * 9
    assert rows[0]["density"] == pytest.approx(0.25)


def test_a_sweep_worker_stores_a_dense_lstm_at_density_1():
    from sparsetopo.sweep.worker import run_chunk

    dense = dict(LSTM, construction="fully_connected", density=1.0)
    row, = run_chunk([TrainConfig(dataset="digits", epochs=1, limit_train=64, **dense).to_dict()], population=False)
    assert row.get("error") is None
    assert row["connections"] == 4 * (8 * 32 + 32 * 32)   # the four gates of W_ih and W_hh
    assert row["density"] == pytest.approx(1.0)


def test_the_train_command_trains_a_cnn_as_the_library_does(tmp_path, capsys):
    from sparsetopo.cli import main

    argv = ["train", "--dataset", "digits", "--architecture", "cnn", "--hidden", "8,16,16", "--density", "0.25",
            "--construction", "regular_rotating", "--epochs", "1", "--limit-train", "200", "--loss",
            "cross_entropy", "--optimizer", "adam", "--lr", "0.01", "--out", str(tmp_path / "run"), "--json"]
    assert main(argv) == 0
    payload = json.loads(capsys.readouterr().out)
    expected = train(TrainConfig(dataset="digits", epochs=1, limit_train=200, loss="cross_entropy",
                                 optimizer="adam", lr=0.01, **CNN))
    assert payload["config"]["architecture"] == "cnn" and payload["config"]["density"] == 0.25
    assert payload["test_accuracy"] == expected.test_accuracy
    assert [layer["k"] for layer in payload["layers"]] == [layer["k"] for layer in expected.layers] == [4, 4]
    assert json.loads((tmp_path / "run" / "result.json").read_text())["test_accuracy"] == expected.test_accuracy


@pytest.mark.parametrize("extra, message", [
    (["--architecture", "lstm", "--hidden", "32", "-k", "3"], "an lstm gives its sparsity as density"),
    (["--density", "0.5"], "an mlp gives its sparsity as degrees"),
    (["--architecture", "cnn", "--hidden", "24", "--density", "0.25"], "a cnn needs hidden"),
])
def test_the_train_command_refuses_a_network_that_does_not_fit_in_one_line(extra, message, capsys):
    from sparsetopo.cli import main

    assert main(["train", "--dataset", "digits", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
