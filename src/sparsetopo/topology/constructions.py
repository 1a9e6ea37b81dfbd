"""The paper's seven layer constructions (Section 3), each a pure function of (n_in, n_out, k, seed),
and one from outside the paper, the flat butterfly of Pixelated Butterfly (:func:`butterfly`).

Notation follows the paper: a layer has ``n`` inputs and ``m`` outputs; ``k`` is the out-degree
of every input neuron (expected out-degree for ``random_edge``), so density is ``k / m``.

The *rotating* constructions (Sections 3.1.2, 3.2.1-3.2.3) start from a base vector ``v`` of
length ``m`` with exactly ``k`` ones and set ``Adj[i][j] = v[(j - i) mod m]``: input ``i`` feeds
outputs ``(p + i) mod m`` for every position ``p`` with ``v[p] = 1``. Rows repeat with period
``m`` when ``n > m``, so every output's in-degree lies between ``k*floor(n/m)`` and
``k*ceil(n/m)``. The base vectors are exposed (``*_positions``) so that they can be tested alone.

Each function documents how it reads the paper. Never change a function's output without
bumping its version in :mod:`sparsetopo.topology.registry`: stored results depend on it.
"""

from __future__ import annotations

import math

import numpy as np

from sparsetopo.seeding import rng as make_rng
from sparsetopo.topology.value import Topology

__all__ = [
    "fully_connected",
    "random_edge",
    "random_rotating",
    "random_regular",
    "regular_rotating",
    "long_short_rotating",
    "fibonacci_rotating",
    "butterfly",
    "butterfly_masks",
    "regular_positions",
    "long_short_positions",
    "fibonacci_positions",
    "rotate",
]


_COMPLEMENT_BLOCK_CELLS = 1 << 24  # random_regular with k > m/2: mask cells built at once


# -- base vectors of the deterministic rotating constructions ----------------------------------
def regular_positions(m: int, k: int) -> np.ndarray:
    """Section 3.2.1: ``v`` is k ones followed by m - k zeros, i.e. ones at 0..k-1."""
    return np.arange(k, dtype=np.int64)


def long_short_positions(m: int, k: int) -> np.ndarray:
    """Section 3.2.2: ``k/2`` consecutive ones, then ``k/2`` ones spread over the rest.

    Reading: s = ceil(k/2) ones at 0..s-1 (the "short" edges); L = k - s ones at
    ``s + floor(t * (m - s) / L)`` for t = 0..L-1 (the "long" edges), evenly spaced over the
    m - s positions left. They are distinct because m - s >= L.
    """
    s = math.ceil(k / 2)
    L = k - s
    long = s + (np.arange(L, dtype=np.int64) * (m - s)) // max(L, 1)
    return np.concatenate([np.arange(s, dtype=np.int64), long])


def fibonacci_positions(m: int, k: int) -> np.ndarray:
    """Section 3.2.3: ones at index 0 and at the first k-1 distinct Fibonacci numbers.

    Reading: positions are 0, 1, 2, 3, 5, 8, ... (k in all). If the largest exceeds m-1,
    each position p becomes ``floor(p * (m-1) / largest)`` (the paper's "normalize by
    m/Fibo(k)", kept inside 0..m-1); then, from the smallest original position up, a position
    already taken moves to the next free index (mod m), so ``v`` has exactly k ones.
    """
    fib = [0]
    a, b = 1, 2
    while len(fib) < k:
        fib.append(a)
        a, b = b, a + b
    largest = fib[-1]
    if largest > m - 1:  # exact integer arithmetic: Fibonacci numbers outgrow int64 for k > 92
        fib = [p * (m - 1) // largest for p in fib]
    positions = np.array(fib, dtype=np.int64)
    taken = np.zeros(m, dtype=bool)
    out = np.empty(k, dtype=np.int64)
    for t, p in enumerate(positions):  # already in increasing order of original position
        while taken[p]:
            p = (p + 1) % m
        taken[p] = True
        out[t] = p
    return np.sort(out)


def rotate(n: int, m: int, positions: np.ndarray, construction: str, k: int, seed) -> Topology:
    """The rotating adjacency ``Adj[i][j] = v[(j - i) mod m]`` for ``v`` with ones at ``positions``."""
    positions = np.sort(np.asarray(positions, dtype=np.int64))
    cols = (positions[None, :] + np.arange(n, dtype=np.int64)[:, None]) % m
    cols.sort(axis=1)
    indptr = np.arange(n + 1, dtype=np.int64) * positions.size
    return Topology(n, m, construction, k, seed, indptr=indptr, indices=cols.ravel())


# -- the constructions -------------------------------------------------------------------------
def fully_connected(n: int, m: int, k: int, seed=None) -> Topology:
    """The dense baseline: every input feeds every output (k = m)."""
    return rotate(n, m, np.arange(m), "fully_connected", m, seed)


def random_edge(n: int, m: int, k: int, seed: int = 0) -> Topology:
    """Section 3.1.1: each entry of Adj is independently 1 with probability k/m.

    Reading: exactly the paper's i.i.d. Bernoulli(k/m) entries, sampled without densifying:
    the edge count is Binomial(n*m, k/m) and the edges a uniform subset of that size, which is
    the same distribution. Out-degrees vary (expected k); an input may have none.
    """
    gen = make_rng(seed, "random_edge")
    total = n * m
    count = int(gen.binomial(total, k / m))
    flat = np.sort(gen.choice(total, size=count, replace=False))
    rows, cols = np.divmod(flat, m)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
    return Topology(n, m, "random_edge", k, seed, indptr=indptr, indices=cols)


def random_rotating(n: int, m: int, k: int, seed: int = 0) -> Topology:
    """Section 3.1.2: a random base vector, rotated.

    Reading: the paper fills ``v`` with probability k/m, then "fixes the number of connections
    to be sure to have exactly k"; we take k distinct positions uniformly at random.
    """
    positions = make_rng(seed, "random_rotating").choice(m, size=k, replace=False)
    return rotate(n, m, positions, "random_rotating", k, seed)


def random_regular(n: int, m: int, k: int, seed: int = 0) -> Topology:
    """Section 3.1.3: a random bipartite (approximate) expander of left degree k.

    Reading: every input has exactly k distinct outputs and output in-degrees are balanced
    (they differ by at most 1; which outputs get the extra edge is random). Sampled by the
    configuration model: the n*k output "stubs" are shuffled and dealt k to each input, then
    each repeated output within an input is swapped with a random stub elsewhere whenever the
    swap creates no new repeat (degrees are preserved by every swap). For k > m/2 the
    complement (degree m-k, also balanced) is sampled instead, where repeats are rare.

    Notes: expected O(n k log k) time; repeats are about n k^2 / (2m) in number.
    """
    gen = make_rng(seed, "random_regular")
    if k > m // 2:
        holes = _balanced_configuration(n, m, m - k, gen) if k < m else np.empty((n, 0), dtype=np.int64)
        cols = np.empty((n, k), dtype=np.int64)
        # the complement a block of rows at a time, so that the result is the only array of the
        # layer's size (the whole n x m mask plus np.nonzero's int64 row and column arrays of
        # every edge would triple the peak); the edges and their order are the same either way
        block = max(1, _COMPLEMENT_BLOCK_CELLS // m)
        for r0 in range(0, n, block):
            r1 = min(n, r0 + block)
            keep = np.ones((r1 - r0, m), dtype=bool)
            keep[np.repeat(np.arange(r1 - r0), m - k), holes[r0:r1].ravel()] = False
            cols[r0:r1] = np.nonzero(keep)[1].reshape(r1 - r0, k)
    else:
        cols = _balanced_configuration(n, m, k, gen)
    cols = np.sort(cols, axis=1)
    indptr = np.arange(n + 1, dtype=np.int64) * k
    return Topology(n, m, "random_regular", k, seed, indptr=indptr, indices=cols.ravel())


def _balanced_configuration(n: int, m: int, k: int, gen: np.random.Generator) -> np.ndarray:
    """An (n, k) array: row i = the k distinct outputs of input i; in-degrees balanced."""
    total = n * k
    degree = np.full(m, total // m, dtype=np.int64)
    degree[gen.choice(m, size=total % m, replace=False)] += 1
    stubs = np.repeat(np.arange(m, dtype=np.int64), degree)
    gen.shuffle(stubs)
    table = stubs.reshape(n, k)
    for _ in range(100 * total + 100):
        bad = _repeated_slots(table)
        if bad.size == 0:
            return table
        for flat in bad:
            i, a = divmod(int(flat), k)
            x = table[i, a]
            if np.count_nonzero(table[i] == x) < 2:
                continue  # fixed by an earlier swap this round
            while True:
                j, b = divmod(int(gen.integers(total)), k)
                y = table[j, b]
                if j != i and y not in table[i] and x not in table[j]:
                    table[i, a], table[j, b] = y, x
                    break
    raise RuntimeError(f"could not remove repeated edges for n={n}, m={m}, k={k}")


def _repeated_slots(table: np.ndarray) -> np.ndarray:
    """Flat indices of every slot whose output already appears earlier in its row."""
    order = np.argsort(table, axis=1, kind="stable")
    sorted_rows = np.take_along_axis(table, order, axis=1)
    dup = np.zeros_like(table, dtype=bool)
    dup[:, 1:] = sorted_rows[:, 1:] == sorted_rows[:, :-1]
    rows, cols = np.nonzero(dup)
    return rows * table.shape[1] + order[rows, cols]


def regular_rotating(n: int, m: int, k: int, seed=None) -> Topology:
    """Section 3.2.1: input i feeds outputs i, i+1, ..., i+k-1 (mod m). Deterministic."""
    return rotate(n, m, regular_positions(m, k), "regular_rotating", k, seed)


def long_short_rotating(n: int, m: int, k: int, seed=None) -> Topology:
    """Section 3.2.2: near and evenly spread far outputs; see :func:`long_short_positions`."""
    return rotate(n, m, long_short_positions(m, k), "long_short_rotating", k, seed)


def fibonacci_rotating(n: int, m: int, k: int, seed=None) -> Topology:
    """Section 3.2.3: outputs at Fibonacci offsets; see :func:`fibonacci_positions`."""
    return rotate(n, m, fibonacci_positions(m, k), "fibonacci_rotating", k, seed)


# -- beyond the paper: the flat butterfly --------------------------------------------------------
def butterfly_masks(m: int) -> np.ndarray:
    """Every XOR mask ``d`` below the smallest power of two ``P >= m``, in the order
    :func:`butterfly` takes them: by the number of set bits, then by value
    (0; 1, 2, 4, ...; 3, 5, 6, 9, ...)."""
    size = 1 << max(m - 1, 0).bit_length()
    masks = np.arange(size, dtype=np.int64)
    bits = np.zeros(size, dtype=np.int64)
    for b in range(max(size.bit_length() - 1, 0)):
        bits += (masks >> b) & 1
    return masks[np.lexsort((masks, bits))]


_BUTTERFLY_BLOCK_CELLS = 1 << 22  # candidate cells per block of base rows


def butterfly(n: int, m: int, k: int, seed=None) -> Topology:
    """The flat butterfly: input i feeds output i, and i XOR 2^s for the strides s the degree allows.

    Reference: T. Dao, B. Chen, K. Liang, J. Yang, Z. Song, A. Rudra, C. Re, "Pixelated
    Butterfly: Simple and Efficient Sparse Training for Neural Network Models", ICLR 2022
    (arXiv:2112.00029). Its *flat butterfly matrix* replaces the product of the butterfly
    factor matrices B_1 ... B_P (factor B_s pairs index i with i XOR s, s = 1, 2, 4, ...) by
    their sum I + B_1 + B_2 + B_4 + ...: the first-order term of the product. Its support is
    exactly this construction at ``k = 1 + log2(m)``; the paper trains it on blocks (its
    "flat block butterfly"), which sparsetopo gives with ``build(..., block=b)``.

    Reading, where the paper leaves a choice:

    - **Degree.** The paper keeps every stride up to a chosen maximum. Here input ``i`` takes
      the first ``k`` masks of :func:`butterfly_masks`: itself (mask 0), then strides 1, 2, 4,
      ... So ``k <= 1 + ceil(log2 m)`` is the paper's flat butterfly with strides up to
      ``2^(k-2)``; a larger ``k`` continues with the masks of two set bits (3, 5, 6, 9, ...),
      which are the supports of the second-order terms B_s B_t of the product, and so on. Every
      ``1 <= k <= m`` is valid.
    - **Widths that are not powers of two.** Masks run below the next power of two ``P >= m``;
      a mask taking the output past ``m - 1`` is skipped, so every input keeps exactly ``k``
      distinct outputs (the next mask in the order takes its place).
    - **Rectangular layers** are stretched as the rotating constructions are: input ``i``
      uses base ``i mod m``, so rows repeat with period ``m`` when ``n > m``, and when ``n < m``
      the outputs above ``n - 1`` are reached only through masks.

    For ``n = m`` a power of two every mask is a permutation, so every output also has
    in-degree exactly ``k``. Deterministic: the seed is recorded and ignored.
    """
    masks = butterfly_masks(m)
    table = np.empty((min(n, m), k), dtype=np.int64)
    step = max(1, _BUTTERFLY_BLOCK_CELLS // masks.size)
    for b0 in range(0, table.shape[0], step):
        bases = np.arange(b0, min(b0 + step, table.shape[0]), dtype=np.int64)
        candidates = bases[:, None] ^ masks[None, :]
        valid = candidates < m
        # the first k valid candidates of each row, in mask order
        take = valid & (np.cumsum(valid, axis=1) <= k)
        table[bases] = candidates[take].reshape(bases.size, k)
    table.sort(axis=1)
    cols = table[np.arange(n, dtype=np.int64) % m]
    indptr = np.arange(n + 1, dtype=np.int64) * k
    return Topology(n, m, "butterfly", k, seed, indptr=indptr, indices=cols.ravel())
