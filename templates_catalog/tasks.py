from celery import shared_task

from . import builds, stored_bundles


# A build is keyed by its content digests, so running it twice is harmless: it may be
# acknowledged late and given to another worker if this one dies mid-build.
@shared_task(name="templates_catalog.build_run", acks_late=True, reject_on_worker_lost=True)
def build_run(build_id: int) -> str:
    return builds.build_run(build_id=build_id).status


@shared_task(name="templates_catalog.builds_reap_stale")
def builds_reap_stale() -> int:
    return builds.builds_reap_stale()


@shared_task(name="templates_catalog.blobs_sweep_unreferenced")
def blobs_sweep_unreferenced() -> int:
    return len(stored_bundles.blobs_sweep_unreferenced())
