"""Linear repairs already fitted for this job, by removed set, so that no repair is fitted twice.

bi+ asks its finalists whether they still answer with the repair the saved model will get (:mod:`.selection`,
step 5), and that fit is the costliest step of a small job after the search. The engine keeps each such fit
here, keyed by the set and valid for one model, one calibration token set and one batch size; the adjuster
(:mod:`.adjusters`) then takes the winner's fit instead of fitting it again. Bounded: past :data:`BUDGET` bytes
of tensors, the oldest fits go first (a 7B model's repair of one run is about 90 MB, twice that where the layer
after it is refitted too).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

#: Bytes of repaired tensors kept at most.
BUDGET = 512 * 1024**2


class FittedRepairs:
    """Repairs (:class:`.repair.RepairResult`) by removed set, for the settings ``key`` last bound."""

    def __init__(self, budget: int = BUDGET) -> None:
        self.budget = budget
        self.key: Hashable | None = None
        self._fits: OrderedDict[tuple[int, ...], Any] = OrderedDict()

    def bind(self, key: Hashable) -> FittedRepairs:
        """Keep the fits only if they were made under ``key`` (model, tokens, batch size); returns self."""
        if key != self.key:
            self.clear()
            self.key = key
        return self

    def clear(self) -> None:
        self._fits.clear()
        self.key = None

    def get(self, removed: Sequence[int]) -> Any:
        return self._fits.get(tuple(sorted(removed)))

    def fitted(self, removed: Sequence[int], fit: Callable[[], Any]) -> Any:
        """The fit for ``removed``, made by ``fit()`` only the first time."""
        key = tuple(sorted(removed))
        found = self._fits.get(key)
        if found is None:
            found = fit()
            self._fits[key] = found
            self._trim()
        return found

    def __len__(self) -> int:
        return len(self._fits)

    def _trim(self) -> None:
        def size(result: Any) -> int:
            return sum(int(t.numel()) * t.element_size() for t in result.tensors.values())

        while len(self._fits) > 1 and sum(size(r) for r in self._fits.values()) > self.budget:
            self._fits.popitem(last=False)
