from django.contrib import admin

from .models import Deployment, DeploymentEvent, Node


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ["name", "runner", "address", "cpus", "memory_gb", "gpu_model", "price_per_hour", "schedulable", "last_heartbeat"]
    list_filter = ["runner", "schedulable"]
    search_fields = ["name"]
    # Inventory is probed (`manage.py node_add`), never typed in; the price is the operator's.
    readonly_fields = ["runner", "engine_url", "cpus", "memory_gb", "gpus", "gpu_model", "last_heartbeat", "created_at"]


class DeploymentEventInline(admin.TabularInline):
    model = DeploymentEvent
    extra = 0
    can_delete = False
    readonly_fields = ["at", "from_state", "to_state", "message"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = ["handle", "owner", "version", "state", "node", "restarts", "created_at", "deleted_at"]
    list_filter = ["state", "node"]
    list_select_related = ["owner", "version__template", "node"]
    search_fields = ["handle", "owner__username", "version__template__name"]
    inlines = [DeploymentEventInline]

    def get_readonly_fields(self, request, obj=None):
        # State changes only through the transition function; the admin shows, never edits.
        return [field.name for field in Deployment._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False
