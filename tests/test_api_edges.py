"""Odd inputs to every public entry point: sparsify, SparseLinear, SparseConv2d, save, load and
export_onnx. Each row gives either the masked backend's answer (for the sparse backend: within
float tolerance; for a convolution: its dense equivalent's) or a SparsetopoError whose message
names the odd value.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from sparsetopo import SparsetopoError
from sparsetopo.nn import SparseConv2d, sparsify
from sparsetopo.topology import build

st = pytest.importorskip("safetensors.torch")
pytest.importorskip("onnx")
from sparsetopo.io import load, save  # noqa: E402
from sparsetopo.onnx import export_onnx  # noqa: E402

GEN = torch.Generator().manual_seed(0)
X = torch.randn(4, 20, generator=GEN)


def twins(**kwargs):
    """One 20->10 layer sparsified on both backends from the same dense weights."""
    base = nn.Linear(20, 10)
    with torch.no_grad():
        base.weight.copy_(torch.randn(10, 20, generator=torch.Generator().manual_seed(1)))
    kwargs = {"construction": "random_regular", "density": 0.5, "seed": 2, **kwargs}
    return (sparsify(copy.deepcopy(base), backend="sparse", **kwargs),
            sparsify(copy.deepcopy(base), backend="masked", **kwargs))


def same_as_masked(x_of):
    """Row body: the sparse layer's output (and input gradient) equal the masked layer's."""
    def run():
        sparse, masked = twins()
        outs = []
        for layer in (sparse, masked):
            x = x_of().requires_grad_(True)  # the same values and layout for both
            y = layer(x)
            if y.numel():
                y.pow(2).sum().backward()
            outs.append((y.detach(), torch.zeros_like(x) if x.grad is None else x.grad))
        return outs[0], outs[1]
    return run


def call_sparse(x, **kwargs):
    return lambda: twins(**kwargs)[0](x)


def call_masked(x):
    return lambda: twins()[1](x)


def sparse_under(mode):
    def run():
        sparse, masked = twins()
        with mode():
            return sparse(X), masked(X)
    return run


def second_order():
    sparse, _ = twins()
    x = X.clone().requires_grad_(True)
    g, = torch.autograd.grad(sparse(x).sum(), x, create_graph=True)
    g.sum().backward()


def vmapped():
    sparse, _ = twins()
    return torch.func.vmap(sparse)(X.reshape(2, 2, 20))


def grad_of_weights_batch_one():
    sparse, masked = twins()
    grads = []
    for layer in (sparse, masked):
        layer(X[:1]).pow(2).sum().backward()
        grads.append(layer.bias.grad)
    return grads[0], grads[1]


def frozen():
    base = nn.Linear(20, 10).requires_grad_(False)
    sparse = sparsify(copy.deepcopy(base), "random_regular", density=0.5, backend="sparse")
    masked = sparsify(copy.deepcopy(base), "random_regular", density=0.5, backend="masked")
    return (torch.tensor([p.requires_grad for p in sparse.parameters()]),
            torch.tensor([p.requires_grad for p in masked.parameters()]))


def numpy_degree():
    return (sparsify(nn.Linear(20, 10), "random_regular", k=np.int64(3), keep_weights=False)(X),
            sparsify(nn.Linear(20, 10), "random_regular", k=3, keep_weights=False, backend="masked")(X))


def do_sparsify(model=None, **kwargs):
    kwargs = {"construction": "random_regular", "density": 0.5, **kwargs}
    return lambda: sparsify(model() if model else nn.Linear(20, 10), **kwargs)


def tied():
    model = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 10))
    model[2].weight = model[0].weight
    return model


def weight_normed():
    from torch.nn.utils.parametrizations import weight_norm

    return nn.Sequential(weight_norm(nn.Linear(20, 10)))


# -- SparseConv2d ------------------------------------------------------------------------------
def conv(**kwargs):
    return SparseConv2d(build("random_regular", 3, 4, 2, seed=0), 3, gen=np.random.default_rng(0), **kwargs)


def conv_vs_dense(x, **kwargs):
    def run():
        layer = conv(**kwargs)
        return layer(x), layer.to_dense()(x)
    return run


IMAGE = torch.randn(2, 3, 8, 8, generator=GEN)


# -- files -------------------------------------------------------------------------------------
def saved(tmp_path, model=None, dtype=torch.float32, **kwargs):
    model = model or sparsify(nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 4)).to(dtype),
                              "random_regular", density=0.5)
    return save(model, tmp_path / "m.safetensors", **kwargs), model


def edited(tmp_path, edit):
    from safetensors import safe_open

    path, _ = saved(tmp_path)
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["sparsetopo"])
    text = edit(meta)
    st.save_file(st.load_file(str(path)), str(path),
                 metadata={"sparsetopo": text if isinstance(text, str) else json.dumps(text)})
    return path


def edit_recipe(field, value):
    def edit(meta):
        meta["layers"]["0"][field] = value
        return meta
    return edit


def round_trip(dtype=torch.float32, backend=None, model_arg=False):
    def run(tmp_path):
        path, model = saved(tmp_path, dtype=dtype)
        given = nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 4)).to(dtype) if model_arg else None
        loaded = load(path, model=given, backend=backend)
        x = X.to(dtype)
        return loaded(x), model(x)
    return run


def exported(tmp_path, **kwargs):
    _, model = saved(tmp_path)
    return export_onnx(model, tmp_path / "m.onnx", **kwargs)


def onnx_answer(tmp_path):
    import onnxruntime as ort

    _, model = saved(tmp_path)
    export_onnx(model, tmp_path / "m.onnx", input_shape=(1, 20))
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": X.numpy()})[0]), model.eval()(X)


def write(tmp_path, name, data: bytes):
    (tmp_path / name).write_bytes(data)
    return tmp_path / name


def no_metadata(tmp_path):
    st.save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    return tmp_path / "plain.safetensors"


def given_model_mismatch(model):
    def run(tmp_path):
        path, _ = saved(tmp_path)
        return load(path, model=model)
    return run


def conv_file_into(model):
    def run(tmp_path):
        path = save(sparsify(nn.Sequential(nn.Conv2d(3, 4, 3)), "random_regular", density=0.5),
                    tmp_path / "c.safetensors")
        return load(path, model=model)
    return run


# Each row: (id, body, expected). body() or body(tmp_path) returns (got, masked answer) to
# compare, or raises; expected is None for an answer, else a text the SparsetopoError names.
ROWS = [
    # sparsify
    ("sparsify density=0", do_sparsify(density=0), "density=0"),
    ("sparsify density=1.5", do_sparsify(density=1.5), "density=1.5"),
    ("sparsify density=nan", do_sparsify(density=float("nan")), "density=nan"),
    ("sparsify density=True", do_sparsify(density=True), "density=True"),
    ("sparsify density='0.5'", do_sparsify(density="0.5"), "density='0.5'"),
    ("sparsify density rounds to k=0", do_sparsify(density=0.01), "density=0.01"),
    ("sparsify k=0", do_sparsify(density=None, k=0), "k=0"),
    ("sparsify k above n_out", do_sparsify(density=None, k=11), "k=11"),
    ("sparsify density and k", do_sparsify(k=3), "k=3"),
    ("sparsify unknown construction", do_sparsify(construction="expanderish"), "expanderish"),
    ("sparsify unknown backend", do_sparsify(backend="gpu"), "'gpu'"),
    ("sparsify negative seed", do_sparsify(seed=-1), "seed=-1"),
    ("sparsify unknown init", do_sparsify(keep_weights=False, init="he"), "'he'"),
    ("sparsify include missing", do_sparsify(include=["decoder"]), "'decoder'"),
    ("sparsify include not a name", do_sparsify(include=[3]), "3"),
    ("sparsify only a depthwise conv", do_sparsify(lambda: nn.Conv2d(4, 4, 3, groups=4)), "depthwise"),
    ("sparsify tied weights", do_sparsify(tied, density=0.5), "tied"),
    ("sparsify weight_norm", do_sparsify(weight_normed), "'0'"),
    ("sparsify sparse float64", do_sparsify(lambda: nn.Linear(20, 10).double(), backend="sparse"), "float64"),
    ("sparsify numpy k", numpy_degree, None),
    ("sparsify frozen layer", frozen, None),
    # SparseLinear, sparse backend against masked
    ("linear narrower input", call_sparse(torch.randn(2, 3)), "(2, 3)"),
    ("linear wider input", call_sparse(torch.randn(2, 21)), "(2, 21)"),
    ("linear masked narrower input", call_masked(torch.randn(2, 3)), "(2, 3)"),
    ("linear float64 input", call_sparse(X.double()), "float64"),
    ("linear int input", call_sparse(torch.ones(2, 20, dtype=torch.int64)), "int64"),
    ("linear 0-d input", call_sparse(torch.tensor(1.0)), "()"),
    ("linear list input", call_sparse([[0.0] * 20]), "list"),
    ("linear create_graph", second_order, "create_graph"),
    ("linear torch.func.vmap", vmapped, "torch.func"),
    ("linear 1-d input", same_as_masked(lambda: X[0]), None),
    ("linear 3-d input", same_as_masked(lambda: X.reshape(2, 2, 20)), None),
    ("linear empty batch", same_as_masked(lambda: X[:0]), None),
    ("linear batch of one", same_as_masked(lambda: X[:1]), None),
    ("linear transposed view", same_as_masked(lambda: X.t().contiguous().t()), None),
    ("linear strided rows", same_as_masked(lambda: torch.randn(8, 20, generator=torch.Generator().manual_seed(3))[::2]), None),
    ("linear expanded input", same_as_masked(lambda: X[:1].expand(4, 20)), None),
    ("linear column slice", same_as_masked(lambda: torch.randn(4, 40, generator=torch.Generator().manual_seed(3))[:, 10:30]), None),
    ("linear under no_grad", sparse_under(torch.no_grad), None),
    ("linear under inference_mode", sparse_under(torch.inference_mode), None),
    ("linear bias gradient at batch 1", grad_of_weights_batch_one, None),
    # SparseConv2d against its dense equivalent
    ("conv wrong channels", lambda: conv()(torch.randn(1, 2, 8, 8)), "(1, 2, 8, 8)"),
    ("conv 5-d input", lambda: conv()(torch.randn(1, 1, 3, 8, 8)), "(1, 1, 3, 8, 8)"),
    ("conv float64 input", lambda: conv()(IMAGE.double()), "float64"),
    ("conv kernel_size=0", lambda: SparseConv2d(build("random_regular", 3, 4, 2), 0), "kernel_size=0"),
    ("conv padding='full'", lambda: conv(padding="full"), "padding='full'"),
    ("conv padding_mode='mirror'", lambda: conv(padding_mode="mirror"), "'mirror'"),
    ("conv unbatched input", conv_vs_dense(IMAGE[0]), None),
    ("conv same reflect", conv_vs_dense(IMAGE, padding="same", padding_mode="reflect"), None),
    ("conv channels-last input", conv_vs_dense(IMAGE.to(memory_format=torch.channels_last)), None),
    # save
    ("save under a file", lambda tmp_path: saved(write(tmp_path, "f", b"x") / "m"), "is a file"),
    ("save onto a folder", lambda tmp_path: save(twins()[0], tmp_path), "not a regular file"),
    ("save input_shape negative", lambda tmp_path: saved(tmp_path, input_shape=(1, -20)), "input_shape=(1, -20)"),
    ("save input_shape not sizes", lambda tmp_path: saved(tmp_path, input_shape="1,20"), "input_shape='1,20'"),
    # load
    ("load missing file", lambda tmp_path: load(tmp_path / "none.safetensors"), "none.safetensors"),
    ("load text file", lambda tmp_path: load(write(tmp_path, "t.safetensors", b"hello")), "t.safetensors"),
    ("load no metadata", lambda tmp_path: load(no_metadata(tmp_path)), "plain.safetensors"),
    ("load metadata not JSON", lambda tmp_path: load(edited(tmp_path, lambda m: "{")), "not JSON"),
    ("load no layers", lambda tmp_path: load(edited(tmp_path, lambda m: {**m, "layers": None})), "'layers'"),
    ("load kind lstm", lambda tmp_path: load(edited(tmp_path, edit_recipe("kind", "lstm"))), "kind='lstm'"),
    ("load no version", lambda tmp_path: load(edited(tmp_path, edit_recipe("version", None))), "version=None"),
    ("load n_in as text", lambda tmp_path: load(edited(tmp_path, edit_recipe("n_in", "20"))), "n_in='20'"),
    ("load bias false over a bias", lambda tmp_path: load(edited(tmp_path, edit_recipe("bias", False))), "bias"),
    ("load into other sizes", given_model_mismatch(nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 4))),
     "20->8"),
    ("load into bias-free model", given_model_mismatch(nn.Sequential(nn.Linear(20, 10, bias=False), nn.ReLU(),
                                                                     nn.Linear(10, 4))), "bias"),
    ("load conv kernel 5 into 3", conv_file_into(nn.Sequential(nn.Conv2d(3, 4, 5))), "kernel_size=[5, 5]"),
    ("load conv stride", conv_file_into(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2))), "stride=[2, 2]"),
    ("load unknown backend", lambda tmp_path: load(saved(tmp_path)[0], backend="gpu"), "'gpu'"),
    ("load float64 as sparse", lambda tmp_path: load(saved(tmp_path, dtype=torch.float64)[0], backend="sparse"),
     "float64"),
    ("load unknown device", lambda tmp_path: load(saved(tmp_path)[0], device="tpu9"), "device='tpu9'"),
    ("load float64", round_trip(torch.float64), None),
    ("load float64 into a given model", round_trip(torch.float64, model_arg=True), None),
    ("load as masked", round_trip(backend="masked"), None),
    ("load as sparse", round_trip(backend="sparse"), None),
    # export_onnx
    ("export opset 3", lambda tmp_path: exported(tmp_path, input_shape=(1, 20), opset=3), "opset=3"),
    ("export opset 99", lambda tmp_path: exported(tmp_path, input_shape=(1, 20), opset=99), "opset=99"),
    ("export opset text", lambda tmp_path: exported(tmp_path, input_shape=(1, 20), opset="17"), "opset='17'"),
    ("export narrow input", lambda tmp_path: exported(tmp_path, input_shape=(1, 19)), "1,19"),
    ("export zero batch", lambda tmp_path: exported(tmp_path, input_shape=(0, 20)), "input_shape=(0, 20)"),
    ("export no shape", lambda tmp_path: exported(tmp_path), "input_shape"),
    ("export example not a tensor", lambda tmp_path: exported(tmp_path, example_input=[[0.0] * 20]), "list"),
    ("export onto a folder", lambda tmp_path: export_onnx(saved(tmp_path)[1], tmp_path, input_shape=(1, 20)),
     "not a regular file"),
    ("export answer", onnx_answer, None),
]


def test_the_table_has_at_least_40_rows_of_each_kind():
    assert len(ROWS) >= 40
    assert len({row[0] for row in ROWS}) == len(ROWS)
    assert sum(expected is None for _, _, expected in ROWS) >= 10


@pytest.mark.parametrize("name, body, expected", ROWS, ids=[row[0] for row in ROWS])
def test_odd_input(name, body, expected, tmp_path):
    args = (tmp_path,) if "tmp_path" in body.__code__.co_varnames[:body.__code__.co_argcount] else ()
    if expected is not None:
        with pytest.raises(SparsetopoError) as info:
            body(*args)
        assert expected in str(info.value), str(info.value)
        return
    got, reference = body(*args)
    torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-5)
