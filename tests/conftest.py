"""Fixtures shared by the test modules, and a fresh numba cache for the session."""

import pytest

from sparsetopo.data import load_dataset
from sparsetopo.kernels.cache import drop_stale_cache


def pytest_sessionstart(session):
    """Compiled kernels older than any kernel source may hold a stale callee inlined: drop
    them before any test runs a kernel (see sparsetopo.kernels.cache)."""
    drop_stale_cache()


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled 8x8 digits, the offline data set most tests train on."""
    return load_dataset("digits")


@pytest.fixture
def interrupted_training():
    """``interrupt(config, dataset, checkpoint_dir, after)``: ``train`` with checkpoints, stopped by
    a KeyboardInterrupt (what Ctrl-C raises) once epoch ``after`` is done; its checkpoint stays."""
    from sparsetopo.train import train

    def interrupt(config, dataset, checkpoint_dir, after):
        def stop(record):
            if record.epoch == after:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            train(config, dataset=dataset, checkpoint_dir=checkpoint_dir, on_epoch=stop)
    return interrupt
