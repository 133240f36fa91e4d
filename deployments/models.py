import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from templates_catalog.models import Build, TemplateVersion

HANDLE_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


MAX_IDLE_TIMEOUT_SECONDS = 30 * 24 * 3600


def default_idle_timeout() -> int:
    return settings.DEPLOY_IDLE_TIMEOUT_SECONDS


def new_handle() -> str:
    return "d-" + "".join(secrets.choice(HANDLE_ALPHABET) for _ in range(10))


def new_upstream_token() -> str:
    return secrets.token_urlsafe(32)


class NodePool(models.Model):
    """A swarm or a Kubernetes cluster whose nodes the hub registered together
    (`manage.py node_pool_add`); refreshing it updates its nodes' rows."""

    class Kind(models.TextChoices):
        SWARM = "swarm", "Docker Swarm"
        KUBERNETES = "kubernetes", "Kubernetes cluster"

    name = models.SlugField(max_length=40, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # A swarm manager's engine (tcp://…, unix://…) or kubeconfig:///PATH?context=…&namespace=….
    engine_url = models.CharField(max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)
    refreshed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Node(models.Model):
    """A machine that runs deployments, through the runner it names."""

    class RunnerKind(models.TextChoices):
        PROCESS = "process", "Local processes (venv builds)"
        DOCKER = "docker", "Docker Engine"
        KUBERNETES = "kubernetes", "Kubernetes cluster"
        SWARM = "swarm", "Docker Swarm node"

    name = models.SlugField(max_length=64, unique=True)
    # "process", "docker", "kubernetes", "swarm", or the dotted path of a runner class with the same interface.
    runner = models.CharField(max_length=200, default=RunnerKind.PROCESS)
    engine_url = models.CharField(max_length=300, blank=True, default="")
    # Where the hub reaches the endpoints of what runs there.
    address = models.CharField(max_length=255, default="127.0.0.1")
    gpu_model = models.CharField(max_length=100, blank=True, default="")
    # The memory in GB of each GPU, e.g. [80, 80]; empty: no GPU.
    gpus = models.JSONField(default=list, blank=True)
    cpus = models.DecimalField(max_digits=7, decimal_places=2)
    memory_gb = models.DecimalField(max_digits=9, decimal_places=1)
    price_per_hour = models.DecimalField(max_digits=9, decimal_places=4, default=0)
    labels = models.JSONField(default=dict, blank=True)
    pool = models.ForeignKey(NodePool, on_delete=models.PROTECT, null=True, blank=True, related_name="nodes")
    schedulable = models.BooleanField(default=True)
    # Why the reconciler last found the node gone (down, left its swarm, not answering); empty
    # while it answers. A lost node takes no deployments until it answers again.
    lost_reason = models.CharField(max_length=1000, blank=True, default="")
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(cpus__gt=0), name="node_has_cpus"),
            models.CheckConstraint(condition=Q(memory_gb__gt=0), name="node_has_memory"),
            models.CheckConstraint(condition=Q(price_per_hour__gte=0), name="node_price_not_negative"),
        ]

    def __str__(self) -> str:
        return self.name


class Deployment(models.Model):
    """One user's running copy of a template version. Its `state` changes only through
    `deployments.transitions.deployment_transition`."""

    class State(models.TextChoices):
        PENDING = "pending"
        BUILDING = "building"
        SCHEDULING = "scheduling"
        STARTING = "starting"
        RUNNING = "running"
        SLEEPING = "sleeping"
        STOPPING = "stopping"
        STOPPED = "stopped"
        FAILED = "failed"

    # States in which a deployment holds capacity on its node (a sleeping one holds none).
    HOLDING = (State.STARTING, State.RUNNING, State.STOPPING)
    # States whose time is billed: its run is up on its node.
    AWAKE = (State.STARTING, State.RUNNING)
    # States the flow still advances.
    IN_FLIGHT = (State.PENDING, State.BUILDING, State.SCHEDULING, State.STARTING, State.STOPPING)

    handle = models.CharField(max_length=16, unique=True, default=new_handle, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="deployments")
    version = models.ForeignKey(TemplateVersion, on_delete=models.PROTECT, related_name="deployments")
    build = models.ForeignKey(Build, on_delete=models.SET_NULL, null=True, blank=True, related_name="deployments")
    node = models.ForeignKey(Node, on_delete=models.PROTECT, null=True, blank=True, related_name="deployments")
    inputs = models.JSONField(default=dict, blank=True)
    # The manifest's resources, copied so a node's use is one aggregate query.
    gpus = models.PositiveSmallIntegerField(default=0)
    gpu_memory_gb = models.DecimalField(max_digits=6, decimal_places=1, default=0)
    cpu = models.DecimalField(max_digits=6, decimal_places=2, default=1)
    memory_gb = models.DecimalField(max_digits=7, decimal_places=1, default=1)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING, editable=False)
    reason = models.TextField(blank=True, default="")
    endpoint = models.CharField(max_length=300, blank=True, default="")
    # Its run answers only requests that carry this (`X-Hub-Upstream-Token`, which the gateway
    # adds), health and ready excepted: its own port is no way in. Never shown anywhere.
    upstream_token = models.CharField(max_length=64, default=new_upstream_token, editable=False)
    price_per_hour = models.DecimalField(max_digits=9, decimal_places=4, null=True, blank=True)
    idempotency_key = models.CharField(max_length=100, null=True, blank=True)
    restarts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    # What `requires` resolved to when it was deployed (templates_catalog.resolution's
    # Graph.as_lock: each part's template, version, digest and aliases); empty without requires.
    lock = models.JSONField(default=dict, blank=True)
    # Made by an app's deploy to serve its graph: stopped when no edge uses it any more.
    # A deployment its owner made directly is never stopped for them.
    graph_part = models.BooleanField(default=False)
    # Deleted deployments keep their row and event log; lists hide them.
    deleted_at = models.DateTimeField(null=True, blank=True)
    # Sleep when idle: seconds without a request before it sleeps (0: never).
    idle_timeout_seconds = models.PositiveIntegerField(default=default_idle_timeout)
    running_since = models.DateTimeField(null=True, blank=True)
    # Set while its run is being stopped to sleep (the state is still `running` until it is).
    sleep_started_at = models.DateTimeField(null=True, blank=True)
    # Set while a wake is in progress (scheduling, starting); how long the last one took.
    wake_started_at = models.DateTimeField(null=True, blank=True)
    last_wake_seconds = models.FloatField(null=True, blank=True)
    # Usage, counted by the gateway (deployments.activity) and the transitions.
    last_request_at = models.DateTimeField(null=True, blank=True)
    requests = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    bytes_in = models.PositiveBigIntegerField(default=0)
    bytes_out = models.PositiveBigIntegerField(default=0)
    # Awake time (starting or running) of the intervals already closed, what they cost at
    # the price of their node, and the start of the open one.
    awake_seconds = models.FloatField(default=0)
    awake_cost = models.DecimalField(max_digits=16, decimal_places=6, default=0)
    awake_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(state__in=[
                    "pending", "building", "scheduling", "starting", "running", "sleeping", "stopping", "stopped", "failed",
                ]),
                name="deployment_state_valid",
            ),
            models.CheckConstraint(condition=~Q(state="failed") | ~Q(reason=""), name="deployment_failure_has_reason"),
            models.CheckConstraint(
                condition=~Q(state__in=["starting", "running"]) | Q(node__isnull=False), name="deployment_running_has_node"
            ),
            models.CheckConstraint(
                condition=Q(idle_timeout_seconds__lte=MAX_IDLE_TIMEOUT_SECONDS), name="deployment_idle_timeout_at_most_30_days"
            ),
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="deployment_idempotency_key_unique",
            ),
        ]
        indexes = [
            models.Index(fields=["owner", "-created_at"]), models.Index(fields=["node", "state"]), models.Index(fields=["state"]),
        ]

    def __str__(self) -> str:
        return self.handle


class DeploymentEvent(models.Model):
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(auto_now_add=True)
    from_state = models.CharField(max_length=16, blank=True, default="")
    to_state = models.CharField(max_length=16)
    message = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["at", "pk"]

    def __str__(self) -> str:
        return f"{self.deployment_id}: {self.from_state or '∅'} → {self.to_state}"


class DeploymentEdge(models.Model):
    """`dependant` calls `requirement` through the gateway as `<ALIAS>_URL`, with the
    endpoint token minted for this edge at its last launch. An edge holds its requirement
    up: a graph part with no edge left is stopped (deployments.graphs)."""

    dependant = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="requirement_edges")
    requirement = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="dependant_edges")
    alias = models.CharField(max_length=32)
    token = models.ForeignKey("EndpointToken", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    # Set when the dependant stopped, failed or was deleted: the edge no longer holds its
    # requirement up (and its token is revoked). Kept for the record.
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["alias"]
        constraints = [
            models.UniqueConstraint(fields=["dependant", "alias"], name="deployment_edge_alias_unique"),
            models.CheckConstraint(condition=~Q(dependant=models.F("requirement")), name="deployment_edge_not_to_itself"),
        ]
        indexes = [models.Index(fields=["requirement", "released_at"])]

    def __str__(self) -> str:
        return f"{self.dependant_id} → {self.requirement_id} as {self.alias}"


class EndpointToken(models.Model):
    """A key to one deployment's endpoint through the gateway (`Authorization: Bearer`).
    Only the sha256 of the secret is stored; the secret is shown once, at creation."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="endpoint_tokens")
    # What the token is for (one per client), e.g. "staging app".
    name = models.CharField(max_length=64)
    # The first characters of the secret, so the owner can tell tokens apart.
    prefix = models.CharField(max_length=16)
    token_sha256 = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.CheckConstraint(condition=Q(token_sha256__regex=r"^[0-9a-f]{64}$"), name="endpoint_token_sha256_hex"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())


from .job_models import Job, JobArtifact, JobEvent  # noqa: E402,F401  (jobs live in their own module)
