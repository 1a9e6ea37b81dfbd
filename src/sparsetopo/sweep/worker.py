"""What a sweep worker does with a chunk of runs: train them, measure them, flatten the results.

:func:`run_chunk` is the one function an executor sends to a worker. It takes plain config
dicts and returns plain row dicts (one per config, in order), so any executor can carry it:
a local process pool, Ray, or the coordinator itself. The dataset is loaded once per worker
process (module-level cache). Configs that share
:func:`sparsetopo.train.population_key` are trained together by
:func:`sparsetopo.train.train_population` (one interpreter overhead per step, or one
compiled call per epoch, for the whole group), a lone config too (the fused population engine
runs every layer of a sigmoid network on its cheaper kernel, where ``train()`` would take the
autograd loop as soon as one layer is masked); every config with ``population=False``, and
the members of a group whose population training raised, are trained by
:func:`sparsetopo.train.train`.

A run that raises yields an error row (``{"run_id", "error"}``) instead of failing its
chunk; the coordinator counts the attempt and retries it, unless the row says
``"permanent": True`` (a SparsetopoError: missing or corrupt data, bad input), which no retry
can fix. Workers ignore SIGINT: on Ctrl-C the coordinator stops them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import threading
import time
import traceback
from pathlib import Path

from sparsetopo.errors import SparsetopoError
from sparsetopo.jsonable import plain
from sparsetopo.sweep.measures import run_measures
from sparsetopo.sweep.spec import run_id
from sparsetopo.train import TrainConfig, population_key, train, train_population

__all__ = ["code_version", "run_chunk", "init_worker", "result_row"]

_DATASETS: dict = {}   # (name, data_dir) -> Dataset, per worker process


def init_worker(coordinator_pid: int | None = None, started=None) -> None:
    """Per-process setup: one torch, numba and BLAS thread (workers are the parallelism), SIGINT
    ignored (the coordinator stops its workers) and, given the
    coordinator's pid, a watchdog that ends this worker once the coordinator is gone.
    ``started`` (a multiprocessing Event) is set first: this worker got past importing the
    coordinator's main module, so a pool that breaks later broke for another reason.

    Without it a ``kill -9`` of the coordinator would orphan its pool: a worker waits for work
    forever, and it also keeps the forkserver alive (every forked child holds the server's
    "alive" pipe), so neither would ever exit. The immediate parent is the forkserver, not
    the coordinator, hence the pid.
    """
    import signal

    if started is not None:
        started.set()
    import numba
    import scipy.linalg  # noqa: F401 - loads SciPy's BLAS, so that the limit below reaches it
    import torch
    from threadpoolctl import threadpool_limits

    # One core per worker for torch, numba and BLAS alike: the workers are the parallelism, and
    # a thread pool per worker on top of them would run more busy threads than there are cores.
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    threadpool_limits(1)
    # Ctrl-C reaches the whole process group; the coordinator alone decides what stops (it
    # kills its workers), so a worker never dies half-way through a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if coordinator_pid is not None:
        threading.Thread(target=_watch, args=(coordinator_pid,), daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed coordinator not yet reaped by its parent is a zombie: gone for us
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _watch(pid: int) -> None:
    while True:
        time.sleep(0.5)
        if not _alive(pid):
            os._exit(1)


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """This process's sparsetopo: its version and a hash of its source files, e.g.
    ``0.1.0+src.1a2b3c4d``. Two installs of one version with different code differ here, so a
    cluster whose nodes run different code is refused instead of mixing their results."""
    import sparsetopo

    root = Path(sparsetopo.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".toml") and "__pycache__" not in path.parts:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{sparsetopo.__version__}+src.{digest.hexdigest()[:8]}"


def version_refusal(expected: str) -> str | None:
    """None when this process runs sparsetopo ``expected`` (the coordinator's), else why not."""
    here = code_version()
    if here == expected:
        return None
    return (f"node {socket.gethostname()} runs sparsetopo {here}, the coordinator {expected}: install the "
            f"coordinator's sparsetopo on every node, or ship it with the sweep (a runtime_env, see "
            f"docs/sweeps.md), then run the same command again")


def dataset_for(name: str, data_dir=None, datasets: dict | None = None):
    """The data set ``name``: from ``datasets`` (sent by the coordinator) when it holds it, else
    loaded from ``data_dir`` once per process."""
    if datasets is not None and name in datasets:
        return datasets[name]
    key = (name, None if data_dir is None else str(data_dir))
    if key not in _DATASETS:
        from sparsetopo.data import load_dataset

        _DATASETS[key] = load_dataset(name, data_dir=data_dir)
    return _DATASETS[key]


def run_chunk(configs: list[dict], data_dir=None, population: bool = True, measures: bool = True,
              datasets: dict | None = None, version: str | None = None) -> list[dict]:
    """Train every config of a chunk; return one row dict per config, in the chunk's order.

    datasets : data sets by name, loaded by the coordinator (a cluster's workers then need no
        files); others are loaded from ``data_dir``.
    version : the coordinator's :func:`code_version`; a process running other code trains
        nothing and returns rows ``{"run_id", "error", "refused": True}`` naming both.
    """
    refusal = None if version is None else version_refusal(version)
    if refusal is not None:
        return [{"run_id": run_id(TrainConfig.from_dict(c)), "error": refusal, "refused": True} for c in configs]
    parsed = [TrainConfig.from_dict(c) for c in configs]
    rows: dict[int, dict] = {}
    groups: dict = {}
    for i, config in enumerate(parsed):
        # a cnn or lstm trains alone: the population engines hold MLPs only
        groups.setdefault(population_key(config) if population and config.architecture == "mlp" else i,
                          []).append(i)
    for members in groups.values():
        group = [parsed[i] for i in members]
        results = None
        if population and group[0].architecture == "mlp":   # a group of one too: the fused engine is train()'s fastest path for it
            try:
                data = dataset_for(group[0].dataset, data_dir, datasets)
                results = [(r, _trained_with(r)) for r in train_population(group, dataset=data)]
            except Exception:  # noqa: BLE001 - fall back to training them one by one
                results = None
        for j, i in enumerate(members):
            config = parsed[i]
            try:
                if results is not None:
                    result, how = results[j]
                else:
                    result, how = train(config, dataset=dataset_for(config.dataset, data_dir, datasets)), "train"
                rows[i] = result_row(result, how, measures)
            except SparsetopoError as exc:  # bad data or input: no retry can fix it
                rows[i] = {"run_id": run_id(config), "error": str(exc), "permanent": True}
            except Exception:  # noqa: BLE001 - reported to the coordinator, which retries
                rows[i] = {"run_id": run_id(config), "error": traceback.format_exc(limit=8)}
    return [rows[i] for i in range(len(parsed))]


def _trained_with(result) -> str:
    """"population" when a population engine computed the run; train_population hands members
    to train() in some cases (a stack of one), and the row must say what really happened."""
    return "population" if result.backend.split("/")[0].endswith("-population") else "train"


def result_row(result, trained_with: str = "train", measures: bool = True) -> dict:
    """Flatten a RunResult into a store row (see :data:`sparsetopo.sweep.store.RUN_COLUMNS`)."""
    from sparsetopo.topology.registry import CONSTRUCTIONS

    config = result.config
    data = result.to_dict()
    stats = result.weight_stats
    topologies = [layer.topology for layer in result.model.layers] if result.model is not None else None
    layers = [dict(p) for p in result.layers]
    if topologies is not None:
        for layer, topology in zip(layers, topologies):
            layer["fingerprint"] = topology.fingerprint
            layer["nnz"] = topology.nnz
    connections = sum(s["nnz"] for s in stats)
    dense = sum(layer["n_in"] * layer["n_out"] * _weights_per_edge(layer, s) for layer, s in zip(layers, stats))
    history = data["history"]
    epoch_seconds = [h["seconds"] for h in history]
    row = {
        "run_id": run_id(config),
        "dataset": config.dataset,
        "hidden": ",".join(map(str, config.hidden)),
        "hidden1": config.hidden[0],
        "n_hidden_layers": len(config.hidden),
        "construction": config.construction,
        "construction_version": CONSTRUCTIONS[config.construction].version,
        "degrees": ",".join(str(layer["k"]) for layer in layers),
        "k_in": layers[0]["k"],
        "k_out": layers[-1]["k"],
        # with blocks k counts output blocks: the first layer's density is its connections'
        "density_in": (layers[0]["k"] / layers[0]["n_out"] if config.block == 1
                       else stats[0]["nnz"] / (layers[0]["n_in"] * layers[0]["n_out"])),
        "density": connections / dense,
        "connections": connections,
        "dropout_in": config.dropout[0],
        "dropout_hidden": config.dropout[1],
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "momentum": config.momentum,
        "activation": config.activation,
        "init": config.init,
        "backend": result.backend,            # what computed it, e.g. "fused-population/sparse"
        "requested_backend": config.backend,  # what the config asked for (masked, sparse, auto)
        "device": config.device,
        "seed": config.seed,
        "limit_train": config.limit_train,
        "loss": config.loss,
        "optimizer": config.optimizer,
        "lr_schedule": config.lr_schedule,
        "validation_fraction": config.validation_fraction,
        "early_stop": config.early_stop,
        "permute_inputs": config.permute_inputs,
        "block": config.block,
        "status": result.status,
        "reason": result.reason,
        "test_accuracy": result.test_accuracy,
        "train_loss": history[-1]["train_loss"] if history else None,
        "epochs_done": len(history),
        "parameters": result.parameters,
        "seconds": result.seconds,
        "seconds_per_epoch": sum(epoch_seconds) / len(epoch_seconds) if epoch_seconds else None,
        "history": _json(history),
        "weight_stats": _json(stats),
        "layers": _json(layers),
        "config": _json(config.to_dict()),
        "trained_with": trained_with,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "worker_pid": os.getpid(),
    }
    for prefix, s in (("w0", stats[0]), ("wlast", stats[-1])):
        for name in ("max", "min", "mean", "std"):
            row[f"{prefix}_{name}"] = s[name]
    if measures and topologies is not None:
        metrics, cache = run_measures(topologies)
        row["metrics"], row["measure_cache"] = metrics, cache
    return row


def _json(value) -> str:
    return json.dumps(plain(value))


def _weights_per_edge(layer: dict, stat: dict) -> float:
    """Weights each edge of a layer's graph holds: 1 in an MLP (a block layer's graph is already
    counted in neurons), a kernel's positions in a convolution (9 for 3x3), the four gates in an
    LSTM. Read as the layer's weights over its graph's edges, so that a dense CNN or LSTM has
    density 1."""
    edges = layer.get("nnz")
    if not edges or layer.get("block", 1) != 1:
        return 1
    return stat["nnz"] / edges

