"""Other values for some of a model's parameters, for the length of a ``with`` block.

The repair, healing and the checks measure a model with a few weights replaced (a repaired projection, a healed
layer) without copying the model: the backends' layer stacks, the repair and the pipeline all use this one view.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def weights_view(model: Any, tensors: dict[str, Any]) -> Iterator[None]:
    """Parameters replaced by ``tensors`` (names with the model's CURRENT indices) for the block only."""
    params = [(model.get_parameter(name), value) for name, value in tensors.items()]
    old = [p.data for p, _ in params]
    try:
        for param, value in params:
            param.data = value.to(param.device, param.dtype, copy=True)  # training in the view must not touch it
        yield
    finally:
        for (param, _), data in zip(params, old, strict=True):
            param.data = data
