"""The edges of sparsify, save/load and export, one test per case: each odd model, file or command
gives the right answer (the masked backend's, or the dense model's) or one clear error naming
the module, value or file; from the CLI, one line, exit code 2 (130 for an interrupt), no
traceback and nothing left half-written.
"""

from __future__ import annotations

import copy
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sparsetopo import SparsetopoError
from sparsetopo.nn import CoverageWarning, sparsify, summary

st = pytest.importorskip("safetensors.torch")
from sparsetopo.io import load, save  # noqa: E402
from sparsetopo.onnx import onnx_difference  # noqa: E402
from test_cli_safety import TINY, assert_refused  # noqa: E402

def cli(*args, cwd, preexec_fn=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sparsetopo", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=preexec_fn)


def refused(result: subprocess.CompletedProcess, *needles: str) -> str:
    """The one error line of a refused command (exit 2, no traceback: assert_refused)."""
    assert_refused(result, *needles)
    return result.stderr.strip()


def file_size_limit(limit: int):
    """For a subprocess: writes beyond ``limit`` bytes fail as on a full disk (EFBIG, not a signal)."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def masked_twin(model_fn, **kwargs):
    """The same sparsified model twice (same weights): on the sparse backend and on the masked one."""
    base = model_fn()
    return (sparsify(copy.deepcopy(base), backend="sparse", **kwargs),
            sparsify(copy.deepcopy(base), backend="masked", **kwargs))


# -- 1. a narrower input is refused, not read past its end ------------------------------------
def test_1_wrong_input_width_is_refused_by_the_sparse_backend():
    layer = sparsify(nn.Linear(784, 300), "random_regular", density=0.1)
    assert layer.backend == "sparse"  # what auto picks, as in the report
    with pytest.raises(SparsetopoError, match=r"\(2, 3\).*784"):
        layer(torch.randn(2, 3))
    with pytest.raises(SparsetopoError, match=r"\(2, 785\)"):
        layer(torch.randn(2, 785))


# -- 2. second-order gradients: refused on the sparse backend, exact on the masked one ---------
def test_2_create_graph_is_refused_by_the_sparse_backend_and_exact_on_masked():
    sparse, masked = masked_twin(lambda: nn.Linear(20, 30), construction="random_regular", density=0.5)
    x = torch.randn(8, 20, generator=torch.Generator().manual_seed(0), requires_grad=True)

    def penalty(layer):
        y = torch.tanh(layer(x))
        grad_x, = torch.autograd.grad(y.sum(), x, create_graph=True)
        return y.pow(2).mean() + grad_x.pow(2).sum()

    loss = penalty(masked)
    loss.backward()
    reference = masked.bias.grad.clone()
    with pytest.raises(SparsetopoError, match="create_graph"):
        penalty(sparse).backward()
    # a plain first-order step still matches masked after the refusal
    sparse.zero_grad()
    masked.zero_grad()
    for layer in (sparse, masked):
        torch.tanh(layer(x.detach())).pow(2).mean().backward()
    torch.testing.assert_close(sparse.bias.grad, masked.bias.grad, atol=1e-6, rtol=1e-5)
    assert reference.abs().max() > 0


# -- 3. torch's fused transformer kernels decline around sparse layers --------------------------
@pytest.mark.parametrize("backend", ["masked", "sparse"])
def test_3_transformer_encoder_layer_eval_equals_train_without_dropout(backend):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 16, dropout=0.0, batch_first=True)  # square linear1: no shape error
    dense_out_proj = layer.self_attn.out_proj
    layer = sparsify(layer, "random_regular", density=0.5, backend=backend)
    assert layer.self_attn.out_proj is dense_out_proj  # masked in place, with its attention
    src = torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(1))
    layer.train()
    trained = layer(src).detach()
    layer.eval()
    with torch.no_grad():
        evaluated = layer(src)
    torch.testing.assert_close(evaluated, trained, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["masked", "sparse"])
def test_3_transformer_encoder_with_padding_mask_eval_equals_train(backend):
    torch.manual_seed(0)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True), 2,
                                    enable_nested_tensor=True)
    encoder = sparsify(encoder, "random_regular", density=0.5, backend=backend)
    src = torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(1))
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[0, 3:] = True
    encoder.train()
    trained = encoder(src, src_key_padding_mask=pad).detach()
    encoder.eval()
    with torch.no_grad():
        evaluated = encoder(src, src_key_padding_mask=pad)
    torch.testing.assert_close(evaluated[~pad], trained[~pad], atol=1e-5, rtol=1e-5)


def test_3_multihead_attention_out_proj_is_named_when_selected():
    mha = nn.MultiheadAttention(16, 2, batch_first=True)
    with pytest.raises(SparsetopoError, match="out_proj"):
        sparsify(mha, "random_regular", density=0.5, include=["out_proj"])


# -- 4. a module used twice stays one module through save and load -----------------------------
def test_4_module_used_twice_survives_save_load_and_export(tmp_path):
    lin = nn.Linear(8, 8)
    model = sparsify(nn.Sequential(lin, nn.ReLU(), lin), "random_regular", density=0.5, seed=3)
    assert model[0] is model[2]
    path = save(model, tmp_path / "twice.safetensors", input_shape=(1, 8))
    loaded = load(path)
    assert len(loaded) == 3 and loaded[0] is loaded[2]
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded(x), model(x))
    result = cli("export", path, "--onnx", tmp_path / "twice.onnx", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    difference = float(result.stdout.rsplit(" ", 1)[1])
    assert difference < 1e-5
    assert onnx_difference(model, tmp_path / "twice.onnx", x) < 1e-5  # the ONNX file computes all three layers


# -- 5. tied weights: an embedding and its head share one mask; other ties stay dense -----------------------
def test_5_tied_linear_weights_stay_dense_naming_both():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    model[2].weight = model[0].weight
    with pytest.raises(SparsetopoError, match=r"nothing to sparsify.*'0' and '2'.*tied"):
        sparsify(model, "random_regular", density=0.5)
    assert type(model[0]) is nn.Linear and model[2].weight is model[0].weight  # refused before any change


class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.hidden = nn.Linear(8, 8)
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(torch.relu(self.hidden(self.embed(tokens))))


def test_5_embedding_tied_to_the_output_layer_shares_one_mask_and_stays_tied():
    model = sparsify(TiedLM(), "random_regular", density=0.5)
    assert model.head.weight is model.embed.weight  # the tie is kept: one parameter
    assert type(model.head).__name__ == "TiedSparseLinear" and type(model.embed).__name__ == "SparseEmbedding"
    assert torch.equal(model.head.weight_mask, model.embed.weight_mask)
    assert int(model.embed.weight_mask.sum()) == 5 * 8   # k = 5 of 10 tokens for each of 8 coordinates
    assert not model.embed.weight[model.embed.weight_mask == 0].any()
    assert summary(model).sparse_share == 1.0 and not summary(model).dense


def test_5_a_tied_pair_with_one_end_excluded_stays_dense_at_both_ends():
    with pytest.raises(SparsetopoError, match=r"'embed' and 'head'.*partner stays dense"):
        sparsify(TiedLM(), "random_regular", density=0.5, exclude=["head"], strict=True)
    model = sparsify(TiedLM(), "random_regular", density=0.5, exclude=["head"])
    assert model.head.weight is model.embed.weight and type(model.embed) is nn.Embedding
    reasons = {layer.name: (layer.reason, layer.chosen) for layer in summary(model).dense}
    assert reasons["embed"] == ("weight tied to 'head.weight': both ends stay dense (its partner stays dense)", False)
    assert reasons["head"][1]


# -- 6. float64 survives save and load ---------------------------------------------------------
@pytest.mark.parametrize("given_model", [False, True])
def test_6_float64_survives_save_and_load(tmp_path, given_model):
    def make():
        return nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.LayerNorm(6), nn.Linear(6, 3)).double()

    model = sparsify(make(), "random_regular", density=0.5, include=["0"])
    path = save(model, tmp_path / "f64.safetensors")
    loaded = load(path, model=make() if given_model else None)
    assert {p.dtype for p in loaded.parameters()} == {torch.float64}
    x = torch.randn(5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded(x), model(x), atol=1e-12, rtol=1e-12)


# -- 7. hand-edited metadata: one clear error naming the file and the field ---------------------
def rewrite(path: Path, edit) -> Path:
    """The file at ``path`` with its sparsetopo metadata passed through ``edit`` (dict -> dict
    or str)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["sparsetopo"])
    tensors = st.load_file(str(path))
    edited = edit(meta)
    st.save_file(tensors, str(path), metadata={"sparsetopo": edited if isinstance(edited, str) else json.dumps(edited)})
    return path


def _without(meta, *keys):
    d = meta
    for key in keys[:-1]:
        d = d[key]
    del d[keys[-1]]
    return meta


def _set(meta, value, *keys):
    d = meta
    for key in keys[:-1]:
        d = d[key]
    d[keys[-1]] = value
    return meta


EDITS = {
    "missing version": (lambda m: _without(m, "layers", "0", "version"), "version=None"),
    "missing layers": (lambda m: _without(m, "layers"), "'layers'"),
    "not JSON": (lambda m: "{not json", "not JSON"),
    "kind lstm": (lambda m: _set(m, "lstm", "layers", "0", "kind"), "kind='lstm'"),
    "unknown kwarg": (lambda m: _set(m, {"inplace": False, "colour": 3}, "architecture", "children", 1, 1, "kwargs"),
                      "colour"),
    "unknown alias": (lambda m: _set(m, {"alias": "9"}, "architecture", "children", 1, 1), "'9'"),
    "bias false over a bias": (lambda m: _set(m, False, "layers", "0", "bias"), "bias"),
}


@pytest.mark.parametrize("case", list(EDITS))
def test_7_hand_edited_metadata_is_refused_by_load_and_export(tmp_path, case):
    edit, needle = EDITS[case]
    model = sparsify(nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3)), "random_regular", density=0.5)
    path = rewrite(save(model, tmp_path / "m.safetensors", input_shape=(1, 8)), edit)
    with pytest.raises(SparsetopoError, match="m.safetensors") as info:
        load(path)
    assert needle in str(info.value)
    assert_refused(cli("export", path, "--onnx", tmp_path / "m.onnx", cwd=tmp_path), "m.safetensors")
    assert not (tmp_path / "m.onnx").exists()


def test_7_conv_kernel_size_of_the_given_model_must_match_the_file(tmp_path):
    model = sparsify(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), "random_regular", density=0.5)
    path = save(model, tmp_path / "cnn.safetensors")
    with pytest.raises(SparsetopoError, match=r"kernel_size=\[5, 5\].*\[3, 3\]"):
        load(path, model=nn.Sequential(nn.Conv2d(3, 8, 5), nn.ReLU()))
    with pytest.raises(SparsetopoError, match="bias"):
        load(path, model=nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.ReLU()))


# -- 8. sparsetopo export: shapes and opsets refused in one line --------------------------------
@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    mlp = sparsify(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), "random_regular", density=0.5)
    cnn = sparsify(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten()), "random_regular", density=0.5)
    return folder, save(mlp, folder / "mlp.safetensors"), save(cnn, folder / "cnn.safetensors", input_shape=(1, 3, 8, 8))


@pytest.mark.parametrize("which, args, needles", [
    ("mlp", ["--input-shape", "1,63"], ["1,63", "64"]),
    ("cnn", ["--input-shape", "1,2,8,8"], ["1,2,8,8", "3"]),
    ("mlp", ["--input-shape", "1,64", "--opset", "3"], ["opset=3"]),
    ("mlp", ["--input-shape", "1,64", "--opset", "99"], ["opset=99"]),
])
def test_8_export_refuses_bad_shapes_and_opsets_in_one_line(saved_models, which, args, needles):
    folder, mlp, cnn = saved_models
    onnx = folder / f"{which}-{args[-1]}.onnx"
    result = cli("export", mlp if which == "mlp" else cnn, "--onnx", onnx, *args, cwd=folder)
    assert_refused(result, *needles)
    assert result.stdout == ""  # no exporter IR either
    assert not onnx.exists()


# -- 9. train: a damaged checkpoint and a full disk ---------------------------------------------
TRAIN = ["train", "--dataset", "digits", "--hidden", "16", "-k", "4,5", "--epochs", "2", "--lr", "0.5"]


def test_9_a_damaged_checkpoint_is_named(tmp_path):
    out = tmp_path / "run"
    assert cli(*TRAIN, "--epochs", "1", "--out", out, cwd=tmp_path).returncode == 0
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    assert_refused(cli(*TRAIN, "--out", out, "--resume", cwd=tmp_path), "checkpoint.pt", "--overwrite")


def test_9_a_full_disk_under_out_names_the_file(tmp_path):
    # the same run once without the limit first: numba's cache files for the kernels it calls are
    # written then, so the limited run's only large write is its checkpoint, whatever ran before
    warm = cli("train", "--dataset", "digits", "--hidden", "300", "-k", "30,10", "--epochs", "1", "--out",
               tmp_path / "warm", cwd=tmp_path)
    assert warm.returncode == 0, warm.stderr
    out = tmp_path / "run"
    result = cli("train", "--dataset", "digits", "--hidden", "300", "-k", "30,10", "--epochs", "2", "--out", out,
                 cwd=tmp_path, preexec_fn=file_size_limit(20_000))
    assert_refused(result, "checkpoint.pt")
    assert sorted(p.name for p in out.iterdir()) == []  # no half-written checkpoint, no temporary file


# -- 10. Ctrl-C with the sparse backend --------------------------------------------------------
def test_10_an_interrupt_inside_a_sparse_kernel_stays_a_keyboard_interrupt():
    """SIGALRM raising KeyboardInterrupt at random moments of sparse training steps: wherever it
    lands (a numba kernel returning included), the caller sees a KeyboardInterrupt."""
    model = sparsify(nn.Sequential(nn.Dropout(0.1), nn.Linear(64, 300), nn.Sigmoid(), nn.Dropout(0.1),
                                   nn.Linear(300, 10)), "regular_rotating", density=0.5, backend="sparse")
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        model(x).sum().backward()

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    seen, timing = [], random.Random(0)
    try:
        for _ in range(60):
            signal.setitimer(signal.ITIMER_REAL, timing.uniform(0.0005, 0.01))
            try:
                while True:
                    model(x).sum().backward()
            except BaseException as exc:  # noqa: BLE001 - what type it is, is the point
                seen.append(type(exc).__name__)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert set(seen) == {"KeyboardInterrupt"}, {name: seen.count(name) for name in set(seen)}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_10_ctrl_c_during_sparse_training_with_dropout_exits_130_and_resumes(tmp_path, signum):
    out = tmp_path / "run"
    args = ["train", "--dataset", "digits", "--hidden", "300", "-k", "30,10", "--epochs", "40", "--lr", "0.5",
            "--dropout", "0.1,0.1", "--backend", "sparse", "--out", out]
    proc = subprocess.Popen([sys.executable, "-m", "sparsetopo", *map(str, args)], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "sparsetopo: interrupted"
    resumed = cli(*args, "--resume", "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert len(json.loads(resumed.stdout)["history"]) == 40


# -- 11. smaller promises ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    (folder / "tiny.toml").write_text(TINY)
    result = cli("sweep", "run", folder / "tiny.toml", "--db", folder / "out" / "sweep.sqlite", "--executor", "inline",
                 cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder


def test_11a_reproduce_into_another_sweeps_store_advises_its_own_options(tiny_store):
    line = refused(cli("reproduce", "--preset", "quick", "--out", tiny_store / "out", "--executor", "inline",
                              cwd=tiny_store), "--out")
    assert "--add" not in line and "--yes" not in line.replace("sweep run", "")


def test_11a_reproduce_of_a_huge_grid_names_the_commands_that_run_it(tmp_path):
    line = refused(cli("reproduce", "--preset", "paper", "--out", tmp_path / "p", "--workers", "1",
                              cwd=tmp_path), "sparsetopo sweep run paper", "sparsetopo report")
    assert "add --yes" not in line and "allow_huge" not in line
    assert not (tmp_path / "p").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_11b_a_cuda_recipe_without_a_gpu_leaves_no_store(tmp_path):
    (tmp_path / "cuda.toml").write_text(TINY.replace('backend = "masked"', 'backend = "masked"\ndevice = "cuda"'))
    assert_refused(cli("sweep", "run", tmp_path / "cuda.toml", "--db", tmp_path / "cuda.sqlite", cwd=tmp_path),
                   "device='cuda'")
    assert not (tmp_path / "cuda.sqlite").exists()


def test_11c_a_full_disk_under_sweep_run_leaves_no_file(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY)
    result = cli("sweep", "run", tmp_path / "tiny.toml", "--db", tmp_path / "s" / "x.sqlite", "--executor", "inline",
                 cwd=tmp_path, preexec_fn=file_size_limit(1000))
    line = refused(result, "x.sqlite", "could not be written")
    assert "not a sweep store" not in line
    assert list((tmp_path / "s").iterdir()) == []


def test_11d_a_topology_too_large_for_memory_is_refused(tmp_path):
    assert_refused(cli("topology", "random_regular", "--n-in", "100000000000", "--n-out", "10", "-k", "3",
                       cwd=tmp_path), "n_in=100,000,000,000", "GiB")


def test_11e_a_numpy_density_is_a_density():
    x = torch.randn(3, 20, generator=torch.Generator().manual_seed(0))
    from_numpy = sparsify(nn.Linear(20, 10), "random_regular", density=np.float32(0.5), seed=1,
                           keep_weights=False)
    from_float = sparsify(nn.Linear(20, 10), "random_regular", density=0.5, seed=1, keep_weights=False)
    assert from_numpy.topology.k == 5
    torch.testing.assert_close(from_numpy(x), from_float(x))


@pytest.mark.parametrize("backend", ["masked", "sparse"])
def test_11f_a_frozen_layer_stays_frozen(backend):
    model = nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 4))
    model[0].requires_grad_(False)
    model = sparsify(model, "random_regular", density=0.5, backend=backend)
    assert [p.requires_grad for p in model[0].parameters()] == [False, False]
    assert all(p.requires_grad for p in model[2].parameters())


def test_11g_a_weight_normed_linear_is_named_not_left_dense_silently():
    from torch.nn.utils.parametrizations import weight_norm

    model = nn.Sequential(weight_norm(nn.Linear(20, 10)), nn.ReLU(), nn.Linear(10, 4))
    with pytest.raises(SparsetopoError, match=r"'0' is a parametrized Linear.*exclude=\['0'\]"):
        sparsify(model, "random_regular", density=0.5, strict=True)
    with pytest.warns(CoverageWarning, match="'0'"):
        model = sparsify(model, "random_regular", density=0.5)
    assert type(model[2]).__name__ == "SparseLinear"
    assert [(layer.name, layer.weights, layer.reason) for layer in summary(model).dense] == [
        ("0", 200, "parametrized Linear (weight is computed, e.g. by weight_norm)")]


def test_11h_sweep_export_does_not_create_a_missing_folder(tiny_store):
    target = tiny_store / "missing" / "x.parquet"
    assert_refused(cli("sweep", "export", "--db", tiny_store / "out" / "sweep.sqlite", "--parquet", target,
                       cwd=tiny_store), str(target.parent))
    assert not target.parent.exists()


def test_11i_an_output_under_a_file_names_that_file(tmp_path):
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "tiny.toml").write_text(TINY)
    line = refused(cli("sweep", "run", tmp_path / "tiny.toml", "--db", tmp_path / "afile" / "x.sqlite",
                              cwd=tmp_path), "afile is a file")
    assert "File exists" not in line
    with pytest.raises(SparsetopoError, match="afile is a file"):
        save(sparsify(nn.Linear(4, 4), "random_regular", k=2), tmp_path / "afile" / "m.safetensors")
    assert (tmp_path / "afile").read_text() == "mine"
