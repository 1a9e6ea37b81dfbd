"""Numba training engines: whole epochs of sparse sigmoid MLPs in compiled code, on the layer maths of :mod:`sparsetopo.kernels`.

Nothing here imports torch; every function takes and fills numpy arrays. The package sits between
:mod:`sparsetopo.kernels` (which it calls) and :mod:`sparsetopo.nn` (which it never imports), so
that :mod:`sparsetopo.train` can drive it and it stays importable without torch. One job per
module:

* :mod:`.layout`: the arrays the engines read, one packed :class:`~.layout.EngineLayer` per
  layer (members concatenated) and the :class:`~.layout.SGD` settings;
* :mod:`.step`: MSE on sigmoid outputs, dropout, and the batch loop of one network
  (:func:`~.step.train_batches`), the body of every engine;
* :mod:`.predict`: a trained network's outputs (accuracy, every layer's activations) on the
  training step's own kernels;
* :mod:`.population`: many networks' batch loops at once, one member per thread.

:mod:`sparsetopo.train.fused` runs :mod:`.step` for one network, the population engine of
:mod:`sparsetopo.train` runs :mod:`.population`. Which member layer is held dense and which
layer uses threads is decided by :mod:`sparsetopo.nn.plan` and passed in.
"""
