from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError

from deployments.nodes import NodeRejected, node_add


def _price(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise CommandError(f"--price {text!r} is not a number: write e.g. 1.20") from None


class Command(BaseCommand):
    help = "Register a node; its CPUs, memory and GPUs are probed through its runner."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--runner", default="docker", help="process, docker, kubernetes, swarm, or a runner class's dotted path")
        parser.add_argument("--engine-url", default="", help="the Docker Engine, e.g. tcp://10.0.0.5:2376 (default: local); for kubernetes, "
                            "kubeconfig:///PATH?context=NAME&namespace=NAME or https://HOST:6443?namespace=NAME")
        parser.add_argument("--address", default="127.0.0.1", help="where the hub reaches this node's endpoints")
        parser.add_argument("--price", default="0", help="price per hour, e.g. 1.20")
        parser.add_argument("--label", action="append", default=[], help="key=value, repeatable")

    def handle(self, *args, **options):
        labels = dict(item.split("=", 1) for item in options["label"] if "=" in item)
        try:
            node = node_add(
                name=options["name"], runner=options["runner"], engine_url=options["engine_url"],
                address=options["address"], price_per_hour=_price(options["price"]), labels=labels,
            )
        except NodeRejected as exc:
            raise CommandError(str(exc)) from None
        gpus = f", {len(node.gpus)} × {node.gpu_model or 'GPU'}" if node.gpus else ""
        self.stdout.write(f"added {node.name}: {node.cpus} CPUs, {node.memory_gb} GB{gpus}, {node.price_per_hour}/hour")
