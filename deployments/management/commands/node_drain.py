import time

from django.core.management.base import BaseCommand, CommandError

from deployments.models import Deployment
from deployments.nodes import NodeRejected, node_drain, node_drain_step
from deployments.tasks import DRAIN_POLL_SECONDS


class Command(BaseCommand):
    help = ("Stop scheduling on a node and move its deployments to other nodes, one at a time: "
            "by a Celery task, or in this process with --wait.")

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--wait", action="store_true",
                            help="move them from this process and return when the drain is over")

    def handle(self, *args, **options):
        name = options["name"]
        try:
            plan = node_drain(name=name, enqueue=not options["wait"])
        except NodeRejected as exc:
            raise CommandError(str(exc)) from None
        handles = ", ".join(deployment.handle for deployment in plan) or "none"
        self.stdout.write(f"{name} takes no new deployments; {len(plan)} to move, one at a time: {handles}")
        if not plan:
            return
        if not options["wait"]:
            self.stdout.write("a Celery worker moves them; follow each on its page, or run again with --wait")
            return
        self._move_one_at_a_time(name)

    def _move_one_at_a_time(self, name: str) -> None:
        waiting = None
        while True:
            next_wait = node_drain_step(name=name, waiting_for=waiting)
            if next_wait != waiting:
                self._settled(waiting)
                if next_wait is not None:
                    self.stdout.write(f"moving {Deployment.objects.get(pk=next_wait).handle}")
            if next_wait is None:
                break
            waiting = next_wait
            time.sleep(DRAIN_POLL_SECONDS)  # the flow (Celery workers) places and starts it meanwhile
        left = Deployment.objects.filter(node__name=name, state__in=("starting", "running")).count()
        self.stdout.write(f"drain of {name} over: {left} deployment(s) still run there")
        if left:
            raise CommandError(f"{left} deployment(s) could not be moved off {name}; see their pages for why")

    def _settled(self, deployment_id: int | None) -> None:
        if deployment_id is None:
            return
        moved = Deployment.objects.select_related("node").get(pk=deployment_id)
        where = f"on {moved.node.name}" if moved.node else "nowhere"
        detail = f": {moved.reason}" if moved.reason else ""
        self.stdout.write(f"{moved.handle} is {moved.state} {where}{detail}")
