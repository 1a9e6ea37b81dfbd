"""Compile-time choices shared by every kernel: floating-point flags and register blocking.

Which kernel runs, with which widths and threads, is decided by :mod:`sparsetopo.nn.plan`."""

# Floating-point flags of the kernels. "contract" lets LLVM fuse a multiply and an add into one
# FMA; "reassoc" lets it reorder a sum, which is what turns a dot product over the batch into
# SIMD partial sums. Both only fix the order at compile time: the same build computes the same
# bits run after run (and whatever the number of threads, as every sum lies in one chunk). No
# "nnan"/"ninf": NaN and infinities still propagate as IEEE says, so a diverging run shows.
FASTMATH = {"reassoc", "contract"}
BLOCK = 32  # batch columns one accumulator holds: the paper's batch, four AVX2 registers
UNROLL = 4  # connections per pass over the accumulator (8 is slower: register pressure)

