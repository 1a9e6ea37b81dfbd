"""Numba kernels: the compiled layer maths under the sparse backend and the training engines.

Nothing here imports torch; every function takes and fills numpy arrays. One job per module:

* :mod:`.options`: compile-time flags (``FASTMATH``) and register blocking shared by all kernels;
* :mod:`.expf`: the sigmoid with a float32 ``exp`` that vectorises (glibc's bits);
* :mod:`.layer`: a sparse layer's forward, input gradient and weight gradient (SDDMM), serial
  and parallel, optionally with the SGD update fused into the weight-gradient pass;
* :mod:`.tiled`: the same layer maths over batch tiles, for a layer inside someone else's
  network at any batch size (and batch 1 in inference);
* :mod:`.block`: a block layer on one example, its tiles read in place (inference at batch 1);
* :mod:`.dense`: the same layer held dense, as BLAS GEMMs with the topology's mask re-applied;
* :mod:`.sgd`: the SGD rule with (Nesterov) momentum, as torch.optim.SGD applies it, which the
  weight-gradient passes above fuse into their loop, and a bias's step by the same rule;
* :mod:`.threads`: how many chunks a parallel kernel makes, the rule of when a layer stays
  serial, and the per-call-site memory of which was faster;
* :mod:`.cache`: numba's on-disk cache files older than a kernel source, found and dropped.

Torch modules call these through :mod:`sparsetopo.nn.sparse_autograd`; the training engines
(epoch loop, loss, dropout, population) are :mod:`sparsetopo.engines`, one layer up. Which kernel, tile width and
threads a call uses is decided by :mod:`sparsetopo.nn.plan`.
"""
