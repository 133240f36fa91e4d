from django.core.management.base import BaseCommand, CommandError

from deployments.nodes import NodeRejected
from deployments.pools import node_pool_add


class Command(BaseCommand):
    help = ("Register every node of a Docker Swarm (through a manager's engine) or every GPU pool of a "
            "Kubernetes cluster (through a kubeconfig) as hub nodes; run it again to refresh them.")

    def add_arguments(self, parser):
        parser.add_argument("name", help="the pool's name, e.g. gpu-swarm; its nodes are named after it")
        engine = parser.add_mutually_exclusive_group(required=True)
        engine.add_argument("--swarm", default="", metavar="MANAGER_URL",
                            help="a swarm manager's engine, e.g. tcp://swarm-manager:2376 or unix:///var/run/docker.sock")
        engine.add_argument("--kubeconfig", default="", metavar="PATH", help="the cluster's kubeconfig file")
        parser.add_argument("--context", default="", help="the kubeconfig's context (default: its current one)")
        parser.add_argument("--namespace", default="aihub", help="the cluster's namespace for deployments (default: aihub)")
        parser.add_argument("--address", default="",
                            help="where the hub reaches the cluster's node ports: any node or a load balancer "
                                 "(a swarm node's address comes from the swarm)")

    def handle(self, *args, **options):
        try:
            refresh = node_pool_add(
                name=options["name"], swarm_manager=options["swarm"], kubeconfig=options["kubeconfig"],
                context=options["context"], namespace=options["namespace"], address=options["address"],
            )
        except NodeRejected as exc:
            raise CommandError(str(exc)) from None
        for verb, nodes in (("added", refresh.added), ("refreshed", refresh.updated)):
            for node in nodes:
                gpus = f", {len(node.gpus)} × {node.gpu_model or 'GPU'}" if node.gpus else ""
                self.stdout.write(f"{verb} {node.name}: {node.cpus} CPUs, {node.memory_gb} GB{gpus}, "
                                  f"{node.price_per_hour}/hour at {node.address}")
        for node in refresh.lost:
            self.stdout.write(f"lost {node.name}: {node.lost_reason}")
