"""``sparsetopo train``: train one sparse MLP under the paper's protocol (or a variant), or a
sparse CNN or LSTM (``--architecture``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sparsetopo.atomic import atomic_path, check_writable
from sparsetopo.cli.app import app
from sparsetopo.cli.progress import Progress
from sparsetopo.cli.parsing import DEGREES, FLOATS, INTS
from sparsetopo.errors import SparsetopoError
from sparsetopo.nn import BACKENDS, INITIALISERS
from sparsetopo.train import TrainConfig, train
from sparsetopo.train.config import ARCHITECTURES
from sparsetopo.train.recipe import LOSSES, LR_SCHEDULES, OPTIMIZERS

DEFAULTS = TrainConfig()


@app.command(
    "train",
    epilog="""\b
Examples:
  # the paper's protocol on MNIST (downloaded once into the cache), 784-300-10, 10% input density
  sparsetopo train --dataset mnist --hidden 300 --construction regular_rotating -k 30,10
  # the bundled digits (offline): 45 steps an epoch, so a larger learning rate
  sparsetopo train --dataset digits --hidden 100 -k 16,10 --epochs 100 --lr 0.5 --json
  # the paper's deeper variant 784-500-300-10, last layer fully connected, with dropout
  sparsetopo train --dataset mnist --hidden 500,300 -k 150,90,full --dropout 0.2,0.5
  # a modern recipe on the same network: softmax + cross-entropy, Adam, cosine schedule, early stop
  sparsetopo train --dataset digits --hidden 100 -k 16,10 --epochs 30 --loss cross_entropy --optimizer adam \\
      --lr 0.003 --init glorot_sparse --lr-schedule cosine --validation-fraction 0.1 --early-stop 5
  # the same network on one fixed shuffle of the pixels (a locality null; same seed, same shuffle)
  sparsetopo train --dataset digits --hidden 100 -k 16,10 --epochs 100 --lr 0.5 --permute-inputs 1
  # the paper's future work: a CNN of three 24-channel convs, channels 25% connected (first conv dense)
  sparsetopo train --dataset digits --architecture cnn --hidden 24,24,24 --density 0.25 \\
      --construction regular_rotating --loss cross_entropy --optimizer adam --lr 0.002 --epochs 4
  # resume a killed run: same command and --out, plus --resume
  sparsetopo train --dataset digits --hidden 100 -k 16,10 --out runs/a --resume
""",
)
@click.option("--dataset", required=True, help="mnist, fashion-mnist, digits (bundled, offline) or synthetic.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder holding the IDX files (else $SPARSETOPO_DATA, then the cache, then download).")
@click.option("--architecture", type=click.Choice(ARCHITECTURES), default=DEFAULTS.architecture, show_default=True,
              help="mlp (the paper's); cnn: --hidden lists each conv's channels, the first conv dense; lstm: "
                   "--hidden is one hidden size, W_ih and W_hh sparsified. cnn and lstm take --density, not -k.")
@click.option("--density", type=float, default=DEFAULTS.density, show_default=True,
              help="cnn and lstm: fraction of connections kept in each sparsified layer (k = round(density * "
                   "outputs) per input); 1: dense.")
@click.option("--hidden", type=INTS, default="300", show_default=True,
              help="Hidden layer sizes, comma-separated: 300, or 500,300 for two hidden layers.")
@click.option("--construction", default=DEFAULTS.construction, show_default=True,
              help="Construction of every layer (see 'sparsetopo topology --help').")
@click.option("-k", "--degrees", type=DEGREES, default=None,
              help="Out-degree per layer, comma-separated, 'full' for all outputs; e.g. 30,10. Default: all full.")
@click.option("--block", type=int, default=DEFAULTS.block, show_default=True, metavar="B",
              help="Neurons per block: above 1 every layer connects blocks of B neurons by dense BxB tiles "
                   "(block layers, computed as batched matmuls), -k counts output blocks per input block "
                   "(784-300-10 with --block 16 -k 2,full: 2 of the 19 hidden blocks, about 10%). 1: the "
                   "paper's layers.")
@click.option("--epochs", type=int, default=DEFAULTS.epochs, show_default=True)
@click.option("--batch-size", type=int, default=DEFAULTS.batch_size, show_default=True)
@click.option("--lr", type=float, default=DEFAULTS.lr, show_default=True, help="SGD learning rate.")
@click.option("--momentum", type=float, default=DEFAULTS.momentum, show_default=True, help="Nesterov momentum.")
@click.option("--dropout", type=FLOATS, default="0,0", show_default=True,
              help="Dropout on the input layer and on hidden layers; the paper's variant is 0.2,0.5.")
@click.option("--init", type=click.Choice(INITIALISERS), default=DEFAULTS.init, show_default=True,
              help="glorot: Keras glorot_normal (the paper's); glorot_sparse: each connection's real fan-in/out.")
@click.option("--backend", type=click.Choice(BACKENDS), default=DEFAULTS.backend, show_default=True,
              help="How sparse layers compute: masked (dense weight x mask), sparse (numba, cost follows the "
                   "connections) or auto (decided once for the whole network: sparse when a measured cost model "
                   "predicts it faster for every layer, else masked). The numbers are the same up to float "
                   "error; the result's backend names what ran (e.g. fused/sparse).")
@click.option("--loss", type=click.Choice(LOSSES), default=DEFAULTS.loss, show_default=True,
              help="mse: on the output sigmoid (the paper's); cross_entropy: softmax output.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=DEFAULTS.optimizer, show_default=True,
              help="sgd_nesterov: --lr with Nesterov --momentum (the paper's); adam: --lr, betas 0.9/0.999.")
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default=DEFAULTS.lr_schedule, show_default=True,
              help="constant (the paper's) or cosine (per epoch, from --lr towards 0).")
@click.option("--validation-fraction", type=float, default=DEFAULTS.validation_fraction, show_default=True,
              help="Share of the training examples held out for validation (never the test set); 0: none.")
@click.option("--early-stop", type=int, default=DEFAULTS.early_stop, show_default=True,
              help="Stop after this many epochs without a better validation accuracy; 0: never. Needs "
                   "--validation-fraction.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds topology, initial weights, shuffling and dropout.")
@click.option("--limit-train", type=int, default=None, help="Train on the first N examples only.")
@click.option("--permute-inputs", "permute_inputs", type=int, default=None, metavar="SEED",
              help="Train and test on one fixed random permutation of the input features, drawn from SEED "
                   "(separate from --seed, so every network given the same SEED sees the same permuted data): "
                   "a null that keeps each example's information but removes any alignment of the topology "
                   "with the pixel order. Default: the features in their own order.")
@click.option("--device", default=DEFAULTS.device, show_default=True,
              help="Where the network computes: cpu, cuda or cuda:N (on CUDA the masked backend; recorded in "
                   "the result's config).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the per-epoch checkpoint and result.json.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --out.")
@click.option("--overwrite", is_flag=True, help="Replace the run already in --out (its checkpoint and result).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the result.")
def train_command(dataset, data_dir, architecture, density, hidden, construction, degrees, block, epochs, batch_size,
                  lr, momentum, dropout, init, backend, loss, optimizer, lr_schedule, validation_fraction, early_stop, seed, limit_train,
                  permute_inputs, device, out, resume, overwrite, as_json):
    """Train one sparse MLP (or CNN, LSTM) and report its test accuracy.

    Defaults are the paper's protocol: 50 epochs, batch 32, MSE on one-hot targets, sigmoid
    on every neuron, Glorot normal initialisation, SGD lr 0.01 with Nesterov momentum 0.9,
    the topology's mask enforced at every update.
    """
    if resume and out is None:
        raise SparsetopoError("--resume needs --out DIR: the folder holding the checkpoint")
    config = TrainConfig(dataset=dataset, hidden=hidden, construction=construction, degrees=degrees,
                         epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, dropout=dropout,
                         init=init, backend=backend, seed=seed, limit_train=limit_train, device=device, loss=loss,
                         optimizer=optimizer, lr_schedule=lr_schedule, validation_fraction=validation_fraction,
                         early_stop=early_stop, permute_inputs=permute_inputs, block=block,
                         architecture=architecture, density=density)
    if out is not None:
        _prepare_out(out, config, resume, overwrite)
    from sparsetopo.data import load_dataset

    data = load_dataset(dataset, data_dir=data_dir)
    with Progress("epoch", total=config.epochs, lines=False) as progress:
        result = train(config, dataset=data, checkpoint_dir=out, resume=resume, on_epoch=progress.on_epoch)
    payload = result.to_dict()
    if out is not None:
        with atomic_path(out / "result.json") as tmp:
            tmp.write_text(json.dumps(payload, indent=2))
    if as_json:
        click.echo(json.dumps(payload))
    else:
        click.echo(_summary(result))


RUN_FILES = ("checkpoint.pt", "result.json")


def _prepare_out(out: Path, config: TrainConfig, resume: bool, overwrite: bool) -> None:
    """Refuse to overwrite a run in ``out`` (unless ``--resume`` continues it or ``--overwrite``
    replaces it) and make sure ``out`` can be written, before any training. The refusal says
    whether ``out`` holds this very run (then --resume is the likely intent) or another one."""
    if resume and overwrite:
        raise SparsetopoError("--resume continues the run in --out and --overwrite replaces it: choose one")
    if out.exists() and not out.is_dir():
        raise SparsetopoError(f"--out {out} is a file, not a folder: choose a folder")
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held and not (resume or overwrite):
        files = ", ".join(held)
        if _stored_config(out) == config.to_dict():
            finished = "result.json" in held
            raise SparsetopoError(
                f"--out {out} already holds this run ({files}{', finished' if finished else ''}): add --resume to "
                f"{'load it (nothing is trained again)' if finished else 'continue it'}, --overwrite to train it "
                f"again from the start, or choose another --out")
        raise SparsetopoError(f"--out {out} holds another run ({files}; --resume continues only the same "
                              f"configuration): add --overwrite to replace it, or choose another --out")
    check_writable(out / "result.json")  # before the first epoch; an OSError names the path (cli.app)
    if overwrite:
        for name in held:
            (out / name).unlink()


def _stored_config(out: Path) -> dict | None:
    """The config of the run in ``out`` (from result.json, else the checkpoint), its fields
    added since it was written at their defaults; None when neither can be read."""
    stored = None
    try:
        stored = json.loads((out / "result.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        try:
            import torch

            stored = torch.load(out / "checkpoint.pt", weights_only=True, map_location="cpu")["config"]
        except Exception:  # noqa: BLE001 - unreadable or foreign: it is then "another run"
            return None
    return {**DEFAULTS.to_dict(), **stored} if isinstance(stored, dict) else None


def _summary(result) -> str:
    c, layers = result.config, result.layers
    sizes = "-".join(str(n) for n in [layers[0]["n_in"]] + [layer["n_out"] for layer in layers])
    lines = [
        f"{c.dataset}{'' if c.permute_inputs is None else f' (inputs permuted, seed {c.permute_inputs})'} "
        f"{'' if c.architecture == 'mlp' else c.architecture + ' '}{sizes}, "
        f"{c.construction}, k = {[layer['k'] for layer in layers]}: status {result.status}",
        f"  test accuracy {result.test_accuracy:.4f} after {len(result.history)} epochs "
        f"({result.seconds:.1f} s), {result.parameters} parameters",
    ]
    for l, s in enumerate(result.weight_stats):
        lines.append(f"  layer {l}: {s['nnz']} connections, weight min {s['min']:+.3f} max {s['max']:+.3f} std {s['std']:.3f}")
    return "\n".join(lines)
