from decimal import Decimal

from django.contrib import admin
from django.db.models import Count, DecimalField, IntegerField, Max, Min, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from .models import Deployment, DeploymentEvent, Node, NodePool

_HOLDING = Q(deployments__state__in=Deployment.HOLDING)


def _pool_use(column: str, output_field):
    """The sum of `column` over the deployments holding capacity on a pool's nodes (a subquery:
    joined to the nodes, the nodes' own sums would count each node once per deployment)."""
    holding = (Deployment.objects.filter(node__pool=OuterRef("pk"), state__in=Deployment.HOLDING)
               .order_by().values("node__pool").annotate(total=Sum(column)).values("total"))
    return Coalesce(Subquery(holding, output_field=output_field), Value(0), output_field=output_field)


@admin.register(NodePool)
class NodePoolAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "engine_url", "node_count", "cpus", "memory", "gpus", "price", "refreshed_at"]
    list_filter = ["kind"]
    search_fields = ["name"]
    # Read from the swarm or the cluster (`manage.py node_pool_add`), never typed in.
    readonly_fields = ["name", "kind", "engine_url", "created_at", "refreshed_at"]

    def has_add_permission(self, request) -> bool:
        return False

    def get_queryset(self, request):
        # The changelist in one query (and one for the nodes' GPU lists), whatever the number of pools.
        decimal = DecimalField(max_digits=12, decimal_places=2)
        return super().get_queryset(request).annotate(
            node_count=Count("nodes", distinct=True), cpus_total=Sum("nodes__cpus"), memory_total=Sum("nodes__memory_gb"),
            price_min=Min("nodes__price_per_hour"), price_max=Max("nodes__price_per_hour"),
            cpu_used=_pool_use("cpu", decimal), memory_used=_pool_use("memory_gb", decimal),
            gpus_used=_pool_use("gpus", IntegerField()),
        ).prefetch_related("nodes")

    @admin.display(description="nodes", ordering="node_count")
    def node_count(self, pool) -> int:
        return pool.node_count

    @admin.display(description="CPUs used / total")
    def cpus(self, pool) -> str:
        return f"{_number(pool.cpu_used)} / {_number(pool.cpus_total)}"

    @admin.display(description="memory GB used / total")
    def memory(self, pool) -> str:
        return f"{_number(pool.memory_used)} / {_number(pool.memory_total)}"

    @admin.display(description="GPUs used / total")
    def gpus(self, pool) -> str:
        return f"{pool.gpus_used} / {sum(len(node.gpus) for node in pool.nodes.all())}"

    @admin.display(description="price per hour", ordering="price_min")
    def price(self, pool) -> str:
        if pool.price_min is None:
            return "-"
        low, high = _number(pool.price_min), _number(pool.price_max)
        return low if low == high else f"{low} to {high}"


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ["name", "pool", "runner", "address", "cpus_use", "memory_use", "gpus_use", "gpu_model",
                    "price_per_hour", "deployment_count", "schedulable", "lost_reason", "last_heartbeat"]
    list_filter = ["pool", "runner", "schedulable"]
    list_select_related = ["pool"]
    search_fields = ["name"]
    # Inventory is probed (`manage.py node_add`, `node_pool_add`), never typed in; the price is the operator's.
    readonly_fields = ["runner", "engine_url", "pool", "cpus", "memory_gb", "gpus", "gpu_model", "lost_reason",
                       "last_heartbeat", "created_at"]

    def get_queryset(self, request):
        # Use, from the deployments holding capacity, aggregated in the changelist's own query.
        return super().get_queryset(request).annotate(
            cpu_used=Sum("deployments__cpu", filter=_HOLDING), memory_used=Sum("deployments__memory_gb", filter=_HOLDING),
            gpus_used=Sum("deployments__gpus", filter=_HOLDING), held=Count("deployments", filter=_HOLDING),
        )

    @admin.display(description="CPUs used / total")
    def cpus_use(self, node) -> str:
        return f"{_number(node.cpu_used)} / {_number(node.cpus)}"

    @admin.display(description="memory GB used / total")
    def memory_use(self, node) -> str:
        return f"{_number(node.memory_used)} / {_number(node.memory_gb)}"

    @admin.display(description="GPUs used / total")
    def gpus_use(self, node) -> str:
        return f"{node.gpus_used or 0} / {len(node.gpus)}"

    @admin.display(description="deployments", ordering="held")
    def deployment_count(self, node) -> int:
        return node.held


def _number(value) -> str:
    """Decimal("2.50") → "2.5", None (nothing used) → "0"."""
    return f"{Decimal(value or 0).normalize():f}"


class DeploymentEventInline(admin.TabularInline):
    model = DeploymentEvent
    extra = 0
    can_delete = False
    readonly_fields = ["at", "from_state", "to_state", "message"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


HIDDEN_DEPLOYMENT_FIELDS = frozenset({"upstream_token"})


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = ["handle", "owner", "version", "state", "node", "restarts", "created_at", "deleted_at"]
    list_filter = ["state", "node"]
    list_select_related = ["owner", "version__template", "node"]
    search_fields = ["handle", "owner__username", "version__template__name"]
    inlines = [DeploymentEventInline]

    def get_readonly_fields(self, request, obj=None):
        # State changes only through the transition function; the admin shows, never edits.
        # The upstream token is not shown even here: only the gateway and the run need it.
        return [field.name for field in Deployment._meta.fields if field.name not in HIDDEN_DEPLOYMENT_FIELDS]

    def has_add_permission(self, request) -> bool:
        return False
