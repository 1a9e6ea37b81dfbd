"""Compile-time choices shared by every kernel: floating-point flags and register blocking."""

# Floating-point flags of the kernels. "contract" lets LLVM fuse a multiply and an add into one
# FMA; "reassoc" lets it reorder a sum, which is what turns a dot product over the batch into
# SIMD partial sums. Both only fix the order at compile time: the same build computes the same
# bits run after run (and whatever the number of threads, as every sum lies in one chunk). No
# "nnan"/"ninf": NaN and infinities still propagate as IEEE says, so a diverging run shows.
FASTMATH = {"reassoc", "contract"}
BLOCK = 32  # batch columns one accumulator holds: the paper's batch, four AVX2 registers
UNROLL = 4  # connections per pass over the accumulator (8 is slower: register pressure)


def wide_argument(batch: int) -> bool | None:
    """The layer kernels' ``wide`` argument for calls of at most ``batch`` columns: None when they
    fit in BLOCK (the code for wider batches is then not compiled, see
    :mod:`sparsetopo.kernels.layer`), else True."""
    return None if batch <= BLOCK else True

# The population engine's choice of kernel per member layer (kernels.dense against the CSR
# kernels of kernels.layer): seconds per connection (CSR) and per matrix entry (GEMM) of one
# example's training step, medians over the paper grid's layer shapes and densities measured on
# one core with the paper's batch of 32 by ``python benchmarks/bench_layer_kernels.py`` (AMD
# EPYC, 2026-11-30). Their ratio is the density above which a layer is cheaper dense: about
# 0.3; another CPU may put it elsewhere, and a misjudged layer costs time, never accuracy.
CSR_SECONDS_PER_CONNECTION = 3.7e-10
GEMM_SECONDS_PER_ENTRY = 1.15e-10
# A narrower layer (the 10 outputs) runs the GEMM at about half its rate per entry, so the two
# constants above do not apply to it. bench_layer_kernels (300 -> 10, 2026-11-30): dense steps
# take 0.71-0.75 of CSR's when the layer is fully connected, 0.96-1.01 at density 0.8 and
# 1.1-3.0 below; such a layer is held dense only when every connection exists.
DENSE_MIN_OUTPUTS = 32


def prefers_dense(nnz: int, n_in: int, n_out: int) -> bool:
    """Whether a layer with ``nnz`` of its ``n_in x n_out`` possible connections trains faster
    stored dense (GEMMs over every entry, pruned ones included) than as CSR (connections only)."""
    if n_out < DENSE_MIN_OUTPUTS or n_in < DENSE_MIN_OUTPUTS:
        return nnz == n_in * n_out
    return GEMM_SECONDS_PER_ENTRY * n_in * n_out < CSR_SECONDS_PER_CONNECTION * nnz
