import gc
import os

from celery import Celery
from celery.signals import worker_process_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub_site.settings")

app = Celery("hub_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _make_broker_folders(sender: Celery, **kwargs) -> None:
    # kombu's filesystem transport expects its folders to exist.
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        folder = sender.conf.broker_transport_options.get(key)
        if folder:
            os.makedirs(folder, exist_ok=True)


def freeze_startup_objects() -> None:
    """Move everything loaded so far (Django, the apps, their modules) out of the cyclic
    garbage collector's view. A full collection then scans only what tasks allocate: measured
    with bench/deploy.py, the scheduling step's p99 fell from ~95 ms to ~27 ms (p50 ~22 ms)
    because the collections it triggered no longer walked the whole process."""
    gc.collect()
    gc.freeze()


@worker_process_init.connect
def _freeze_in_pool_processes(**kwargs) -> None:
    freeze_startup_objects()


@worker_ready.connect
def _freeze_in_the_worker(**kwargs) -> None:
    # The solo and threads pools run tasks in the worker process itself.
    freeze_startup_objects()
