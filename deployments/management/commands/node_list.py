from django.core.management.base import BaseCommand

from deployments.models import Node
from deployments.selectors import NodeUsage, node_usage


def _n(value) -> str:
    """Decimal('2.00') → "2": PostgreSQL keeps a column's scale, SQLite does not."""
    return f"{float(value):g}"


class Command(BaseCommand):
    help = "List nodes with their capacity, what is used, what is free, price and heartbeat."

    def handle(self, *args, **options):
        usage = node_usage()
        row = "{:<20} {:<8} {:>11} {:>13} {:>9} {:>11} {:>5} {:<12} {}"
        self.stdout.write(row.format("NAME", "RUNNER", "CPU used/all", "MEM GB used/all", "GPU used", "PRICE/HOUR", "DEPL",
                                     "SCHEDULABLE", "LAST HEARTBEAT"))
        for node in Node.objects.order_by("name"):
            used = usage.get(node.pk, NodeUsage())
            self.stdout.write(row.format(
                node.name, node.runner[:8], f"{_n(used.cpu)}/{_n(node.cpus)}", f"{_n(used.memory_gb)}/{_n(node.memory_gb)}",
                f"{used.gpus}/{len(node.gpus)}", _n(node.price_per_hour), used.deployments,
                "yes" if node.schedulable else "drained",
                node.last_heartbeat.isoformat(timespec="seconds") if node.last_heartbeat else "never",
            ))
