"""Fixtures shared by the test modules."""

import pytest

from sparsetopo.data import load_dataset


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled 8x8 digits, the offline data set most tests train on."""
    return load_dataset("digits")
