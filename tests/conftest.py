import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread in every test: the tensors are tiny (one thread is faster), the machine may be shared,
    and the pinned results of tests/test_pinned.py depend on the thread count (float reduction order)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
