"""The hub's Celery app: what its workers do once they have started."""

import gc

from celery.signals import worker_process_init, worker_ready

import hub_site.celery  # noqa: F401 (connects the worker signals)


def test_a_worker_takes_what_it_loaded_at_start_out_of_the_garbage_collectors_scans():
    # Why: full collections walking all of Django made the scheduling step's p99 ~4x its p50.
    for signal in (worker_ready, worker_process_init):
        gc.unfreeze()
        try:
            signal.send(sender=None)
            assert gc.get_freeze_count() > 10_000
        finally:
            gc.unfreeze()
