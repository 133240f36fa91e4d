from django.core.management.base import BaseCommand, CommandError

from deployments.nodes import NodeRejected, node_drain


class Command(BaseCommand):
    help = "Stop scheduling on a node and move its deployments to other nodes."

    def add_arguments(self, parser):
        parser.add_argument("name")

    def handle(self, *args, **options):
        try:
            moved = node_drain(name=options["name"])
        except NodeRejected as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{options['name']} is drained; moving {len(moved)} deployment(s): "
                          + (", ".join(d.handle for d in moved) or "none"))
