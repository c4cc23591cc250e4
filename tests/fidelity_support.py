"""Shared by the fidelity tests: train on one torch thread.

On the shared 2-core box a second intra-op thread competing with other processes makes a
QVHighlights-size training step 10-20x slower (measured: 0.3 s on 1 thread, 2-6 s on 2
under load); the numbers checked do not depend on the thread count.
"""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
