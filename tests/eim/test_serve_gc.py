"""``eim serve``'s start-up tuning of the garbage collector (:func:`eim.serve.freeze_startup_objects`): start-up
objects frozen out of every collection, the young generation collected every ``GC_YOUNG_THRESHOLD`` allocations."""

from __future__ import annotations

import gc

from eim.serve import GC_YOUNG_THRESHOLD, freeze_startup_objects


def test_startup_objects_frozen_and_young_threshold_raised():
    before = gc.get_threshold()
    try:
        gc.unfreeze()
        freeze_startup_objects()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
        assert GC_YOUNG_THRESHOLD > before[0]
        assert gc.get_freeze_count() > 0  # this process's objects are in the permanent generation
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
