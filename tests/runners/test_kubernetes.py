"""The Kubernetes runner. No cluster runs on these machines, so: every object it sends is
checked against the API schemas of a named Kubernetes release (kubernetes-validate), and its
whole conversation runs against kmock's Kubernetes emulator over real HTTP, asserting the
exact requests. The emulator is asyncio: it serves from a thread of its own."""

import asyncio
import socket
import threading

import kmock
import kubernetes_validate
import pytest

from deployments.models import Node
from hub_site.backends import runner_for
from runners.base import LABEL_DEPLOYMENT, LABEL_HUB, Gpu, LaunchSpec, NodeUnreachable, Resources, RunnerError, RunPhase, Volume
from runners.kubernetes import GPU_PRODUCT_LABEL, KubernetesRunner, deployment_manifest, manifests, object_name

KUBERNETES_VERSION = "1.33"  # the release whose OpenAPI schemas the objects must satisfy
NAMESPACE = "aihub"
HANDLE = "d-k8sabcdefg"
PODS = kmock.resource("", "v1", "pods")
SERVICES = kmock.resource("", "v1", "services")
DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
A100 = "NVIDIA-A100-SXM4-80GB"


def gpu_spec(**changes) -> LaunchSpec:
    values = dict(
        deployment=HANDLE, image="127.0.0.1:5000/embedder@sha256:" + "a" * 64, port=8080,
        resources=Resources(gpus=1, gpu_memory_gb=16, cpu=2, memory_gb=8),
        environment={"INPUT_NORMALIZE": "true", "HUB_DEPLOYMENT": HANDLE},
        volume=Volume(path="/data", size_gb=2), max_body_bytes=1_000_000,
        labels={"io.aihub.template": "text-embedder", "io.aihub.version": "1.2.0+build.7"},
    )
    return LaunchSpec(**{**values, **changes})


class KubernetesApi:
    """kmock's emulator on a real port, served by an event loop in a thread."""

    def __init__(self):
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the mock Kubernetes API did not start"

    async def _serve(self):
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
            for plural in ("pods", "services", "secrets", "persistentvolumeclaims", "nodes"):
                emulator.resources[f"v1/{plural}"] = {}
            emulator.resources["apps/v1/deployments"] = {}
            emulator["put"] << self._replace
            self.emulator, self.url = emulator, str(server.url).rstrip("/")
            self._ready.set()
            await self._done.wait()

    def _replace(self, request):
        """PUT, which kmock's emulator leaves out: the whole object replaced, its status kept (as the API does)."""
        key = (request.resource, request.namespace, request.name)
        if key not in self.emulator.objects or self.emulator.objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        replaced = {**request.data, "status": self.emulator.objects[key].raw.get("status", {})}
        self.emulator.objects[key].create(replaced)
        return replaced

    def close(self):
        self._loop.call_soon_threadsafe(self._done.set)
        self._thread.join(10)

    def requests(self) -> list[tuple[str, str]]:
        return [(request.method.value, request.url.path) for request in self.emulator]

    def bodies(self, method: str, path: str) -> list:
        return [request.data for request in self.emulator if (request.method.value, request.url.path) == (method, path)]

    def stored(self, resource, name: str) -> dict:
        return self.emulator.objects[resource, NAMESPACE, name].raw


@pytest.fixture
def api():
    server = KubernetesApi()
    yield server
    server.close()


@pytest.fixture
def runner(api) -> KubernetesRunner:
    return KubernetesRunner(base_url=f"{api.url}?namespace={NAMESPACE}&gpu_product={A100}", address="10.0.0.7")


# --- the objects, against the API schemas ----------------------------------------------------


@pytest.mark.parametrize("spec", [
    gpu_spec(),
    gpu_spec(resources=Resources(cpu=0.5, memory_gb=0.5), volume=None, max_body_bytes=None, labels={}),
], ids=["gpu-with-volume", "cpu-only"])
def test_it_sends_only_objects_the_api_schemas_accept(spec):
    objects = manifests(spec, hub_id="aihub", gpu_product=A100)

    for body in objects:
        kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)  # raises on any violation
    assert [body["kind"] for body in objects] == (
        ["Secret", "PersistentVolumeClaim", "Deployment", "Service"] if spec.volume else ["Secret", "Deployment", "Service"]
    )


def test_the_schema_check_really_refuses_a_broken_object():
    body = deployment_manifest(gpu_spec(), hub_id="aihub")
    body["spec"]["replicas"] = "one"

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)


def test_its_pod_is_hardened_and_asks_for_the_gpu_product():
    pod = deployment_manifest(gpu_spec(), hub_id="aihub", gpu_product=A100)["spec"]["template"]["spec"]
    container = pod["containers"][0]

    assert container["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 65532, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
        "privileged": False, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert container["resources"] == {"requests": {"cpu": "2000m", "memory": "8192Mi"},
                                      "limits": {"cpu": "2000m", "memory": "8192Mi", "nvidia.com/gpu": "1"}}
    assert pod["nodeSelector"] == {GPU_PRODUCT_LABEL: A100}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": f"aihub-{HANDLE}-data"}} in pod["volumes"]


def test_the_upstream_token_travels_in_the_secret_only():
    token = "the-deployments-upstream-token-" + "z" * 12
    spec = gpu_spec(environment={"HUB_DEPLOYMENT": HANDLE, "HUB_UPSTREAM_TOKEN": token})
    secret, *rest = manifests(spec, hub_id="aihub")

    assert secret["kind"] == "Secret" and secret["stringData"]["HUB_UPSTREAM_TOKEN"] == token
    # Not in the Deployment, its pod template or anything else a `get -o yaml` of them shows.
    assert all(token not in str(item) for item in rest)
    [deployment] = [item for item in rest if item["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}] and "env" not in container


def test_a_cpu_template_is_not_pinned_to_a_gpu_product():
    pod = deployment_manifest(gpu_spec(resources=Resources(cpu=1)), hub_id="aihub", gpu_product=A100)
    container = pod["spec"]["template"]["spec"]["containers"][0]

    assert "nodeSelector" not in pod["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]


def test_label_values_kubernetes_would_refuse_go_to_annotations_only():
    metadata = deployment_manifest(gpu_spec(), hub_id="aihub")["metadata"]

    assert metadata["labels"] == {"io.aihub.template": "text-embedder", LABEL_DEPLOYMENT: HANDLE, LABEL_HUB: "aihub"}
    assert metadata["annotations"]["io.aihub.version"] == "1.2.0+build.7"


@pytest.mark.parametrize("handle", ["D-UPPER", "d_under", "d.dot", "d-" + "x" * 60, "../etc"])
def test_it_refuses_handles_that_cannot_name_kubernetes_objects(handle):
    with pytest.raises(RunnerError, match="cannot name Kubernetes objects"):
        object_name(handle)


def test_a_hub_id_that_is_no_label_value_is_refused():
    with pytest.raises(RunnerError, match="cannot be the Kubernetes label io.aihub.hub"):
        manifests(gpu_spec(), hub_id="hub with spaces")


# --- the conversation, against the mock API over HTTP ---------------------------------------


def test_it_launches_reports_sleeps_wakes_and_removes(api, runner):
    base, apps = f"/api/v1/namespaces/{NAMESPACE}", f"/apis/apps/v1/namespaces/{NAMESPACE}"
    name = f"aihub-{HANDLE}"

    starting = runner.launch(gpu_spec())

    assert api.requests() == [
        ("POST", f"{base}/secrets"), ("POST", f"{base}/persistentvolumeclaims"),
        ("POST", f"{apps}/deployments"), ("POST", f"{base}/services"),
        ("GET", f"{apps}/deployments/{name}"), ("GET", f"{base}/pods"), ("GET", f"{base}/services/{name}"),
    ]
    [secret] = api.bodies("POST", f"{base}/secrets")
    assert secret["metadata"]["name"] == f"{name}-env"
    assert secret["stringData"]["INPUT_NORMALIZE"] == "true"
    assert secret["stringData"]["HUB_STORAGE_DIR"] == "/data"
    [claim] = api.bodies("POST", f"{base}/persistentvolumeclaims")
    assert claim["spec"]["resources"]["requests"]["storage"] == "2048Mi"
    [deployment] = api.bodies("POST", f"{apps}/deployments")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {GPU_PRODUCT_LABEL: A100}
    [service] = api.bodies("POST", f"{base}/services")
    assert service["spec"]["type"] == "NodePort"
    assert (starting.phase, starting.endpoint) == (RunPhase.STARTING, None)

    # The cluster allocates a node port and the pod becomes ready.
    api.emulator.objects[SERVICES, NAMESPACE, name].patch({"spec": {"ports": [{"port": 8080, "nodePort": 31234}]}})
    api.emulator.objects[DEPLOYMENTS, NAMESPACE, name].patch({"status": {"readyReplicas": 1}})
    api.emulator.objects[PODS, NAMESPACE, f"{name}-7d9f-x2k4q"] = _pod(f"{name}-7d9f-x2k4q", {"running": {}})
    ready = runner.status(HANDLE)
    assert (ready.phase, ready.endpoint) == (RunPhase.RUNNING, "http://10.0.0.7:31234")
    [*_, pods_read] = [request for request in api.emulator if request.url.path == f"{base}/pods"]
    assert pods_read.params["labelSelector"] == f"{LABEL_DEPLOYMENT}={HANDLE},{LABEL_HUB}=aihub"

    mark = len(api.requests())
    runner.stop(HANDLE)
    assert api.requests()[mark:] == [("PATCH", f"{apps}/deployments/{name}/scale")]
    assert api.bodies("PATCH", f"{apps}/deployments/{name}/scale") == [{"spec": {"replicas": 0}}]
    assert runner.status(HANDLE).phase == RunPhase.STOPPED

    # Waking: launch again; everything exists (409), the secret and deployment are replaced, the claim kept.
    mark = len(api.requests())
    runner.launch(gpu_spec(environment={"INPUT_NORMALIZE": "false"}))
    assert api.requests()[mark:mark + 7] == [
        ("POST", f"{base}/secrets"), ("PUT", f"{base}/secrets/{name}-env"),
        ("POST", f"{base}/persistentvolumeclaims"),
        ("POST", f"{apps}/deployments"), ("PUT", f"{apps}/deployments/{name}"),
        ("POST", f"{base}/services"), ("GET", f"{apps}/deployments/{name}"),
    ]
    assert api.bodies("PUT", f"{base}/secrets/{name}-env")[0]["stringData"]["INPUT_NORMALIZE"] == "false"
    assert api.bodies("PUT", f"{apps}/deployments/{name}")[0]["spec"]["replicas"] == 1
    assert api.stored(DEPLOYMENTS, name)["spec"]["replicas"] == 1

    api.emulator[f"get {base}/pods/{name}-7d9f-x2k4q/log"] << b"loading weights\nready on :8080\n"
    assert runner.logs(HANDLE, tail=50) == "loading weights\nready on :8080\n"
    [log_read] = [request for request in api.emulator if request.url.path.endswith("/log")]
    assert (log_read.params["container"], log_read.params["tailLines"]) == ("app", "50")

    [listed] = runner.list()
    assert (listed.deployment, listed.phase, listed.endpoint) == (HANDLE, RunPhase.RUNNING, "http://10.0.0.7:31234")
    deployments_listed = [request for request in api.emulator if request.url.path == f"{apps}/deployments"
                          and request.method.value == "GET"]
    assert deployments_listed[0].params["labelSelector"] == f"{LABEL_HUB}=aihub"

    mark = len(api.requests())
    runner.remove(HANDLE)
    assert api.requests()[mark:] == [
        ("DELETE", f"{apps}/deployments/{name}"), ("DELETE", f"{base}/services/{name}"),
        ("DELETE", f"{base}/secrets/{name}-env"), ("DELETE", f"{base}/persistentvolumeclaims/{name}-data"),
    ]
    assert runner.status(HANDLE).phase == RunPhase.MISSING
    runner.remove(HANDLE)  # idempotent: everything is gone already
    runner.stop(HANDLE)


def test_a_crash_loop_is_an_exit_with_its_code_and_reason(api, runner):
    name = f"aihub-{HANDLE}"
    runner.launch(gpu_spec())
    api.emulator.objects[PODS, NAMESPACE, f"{name}-1"] = _pod(
        f"{name}-1", {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}},
        last={"terminated": {"exitCode": 137, "reason": "OOMKilled"}}, restarts=3)

    run = runner.status(HANDLE)
    assert (run.phase, run.exit_code, run.detail) == (RunPhase.EXITED, 137, "OOM killed: it used more memory than its limit")

    api.emulator[f"get /api/v1/namespaces/{NAMESPACE}/pods/{name}-1/log"] << b"Killed\n"
    assert runner.logs(HANDLE) == "Killed\n"
    [log_read] = [request for request in api.emulator if request.url.path.endswith("/log")]
    assert log_read.params["previous"] == "true"  # the crashed container's lines, not the waiting one's


def test_an_image_that_cannot_be_pulled_is_an_exit_that_says_so(api, runner):
    name = f"aihub-{HANDLE}"
    runner.launch(gpu_spec())
    api.emulator.objects[PODS, NAMESPACE, f"{name}-1"] = _pod(
        f"{name}-1", {"waiting": {"reason": "ImagePullBackOff", "message": "manifest unknown"}})

    run = runner.status(HANDLE)
    assert (run.phase, run.exit_code, run.detail) == (RunPhase.EXITED, None, "ImagePullBackOff: manifest unknown")


def test_a_pod_no_node_can_take_is_starting_with_the_schedulers_reason(api, runner):
    name = f"aihub-{HANDLE}"
    runner.launch(gpu_spec())
    api.emulator.objects[PODS, NAMESPACE, f"{name}-1"] = {
        "metadata": {"name": f"{name}-1", "labels": {LABEL_DEPLOYMENT: HANDLE, LABEL_HUB: "aihub"}},
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                   "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]},
    }

    run = runner.status(HANDLE)
    assert run.phase == RunPhase.STARTING
    assert run.detail == "not scheduled yet: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."


def test_inventory_counts_the_allocatable_resources_of_the_pools_nodes(api, runner):
    api.emulator["get /api/v1/nodes"] << {"items": [
        _node("gpu-1", cpu="15900m", memory="62Gi", gpus="2"),
        _node("gpu-2", cpu="16", memory="64Gi", gpus="1"),
        _node("gpu-3", cpu="16", memory="64Gi", gpus="4", unschedulable=True),
    ]}

    inventory = runner.inventory()

    assert (inventory.cpus, inventory.memory_gb) == (31.9, 126.0)
    assert inventory.gpus == (Gpu(model=A100, memory_gb=80.0),) * 3
    [nodes_read] = [request for request in api.emulator if request.url.path == "/api/v1/nodes"]
    assert nodes_read.params["labelSelector"] == f"{GPU_PRODUCT_LABEL}={A100}"


def test_an_existing_claim_is_kept_on_launch(api, runner):
    name = f"aihub-{HANDLE}"
    api.emulator.objects[kmock.resource("", "v1", "persistentvolumeclaims"), NAMESPACE, f"{name}-data"] = {
        "metadata": {"name": f"{name}-data"}, "spec": {"resources": {"requests": {"storage": "2048Mi"}}}}

    runner.launch(gpu_spec())

    assert ("PUT", f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/{name}-data") not in api.requests()
    assert api.stored(DEPLOYMENTS, name)["spec"]["replicas"] == 1


@pytest.mark.parametrize("status, reason", [(403, "Forbidden"), (500, "Internal Server Error")])
def test_an_api_refusal_is_a_runner_error_with_the_apis_message(api, runner, status, reason):
    message = 'secrets is forbidden: User "system:serviceaccount:aihub:hub" cannot create resource "secrets"'
    api.emulator[f"post /api/v1/namespaces/{NAMESPACE}/secrets"] << kmock.KubernetesError(
        status=status, reason=reason, message=message)

    with pytest.raises(RunnerError) as raised:
        runner.launch(gpu_spec())

    assert not isinstance(raised.value, NodeUnreachable)
    assert str(raised.value) == f"launching {HANDLE}: the Kubernetes API answered {status} {reason}: {message}"
    assert ("POST", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments") not in api.requests()


def test_a_cluster_that_does_not_answer_is_unreachable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    runner = KubernetesRunner(base_url=f"http://127.0.0.1:{port}?namespace={NAMESPACE}", timeout=5)

    for call in (runner.inventory, lambda: runner.status(HANDLE), lambda: runner.launch(gpu_spec())):
        with pytest.raises(NodeUnreachable, match="the Kubernetes API does not answer"):
            call()


def test_a_job_is_refused_with_a_reason(runner):
    with pytest.raises(RunnerError, match="the Kubernetes runner runs services"):
        runner.launch(gpu_spec(kind="job", command=("python", "train.py")))


def test_a_node_row_names_the_kubernetes_runner():
    node = Node(name="cluster-a100", runner=Node.RunnerKind.KUBERNETES, address="10.0.0.7",
                engine_url=f"kubeconfig:///etc/aihub/kubeconfig?context=gpu&namespace=team-a&gpu_product={A100}")

    runner = runner_for(node)

    assert isinstance(runner, KubernetesRunner)
    assert (runner.namespace, runner.context, runner.gpu_product, runner.address) == ("team-a", "gpu", A100, "10.0.0.7")


def test_a_missing_kubeconfig_is_a_runner_error_that_names_it(tmp_path):
    runner = KubernetesRunner(base_url=f"kubeconfig://{tmp_path}/absent?namespace={NAMESPACE}")

    with pytest.raises(RunnerError, match="absent"):
        runner.inventory()


def _pod(name: str, state: dict, *, last: dict | None = None, restarts: int = 0) -> dict:
    return {
        "metadata": {"name": name, "labels": {LABEL_DEPLOYMENT: HANDLE, LABEL_HUB: "aihub"},
                     "creationTimestamp": "2026-11-29T10:00:00Z"},
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "app", "image": "embedder", "imageID": "", "ready": "running" in state, "restartCount": restarts,
            "state": state, "lastState": last or {},
        }]},
    }


def _node(name: str, *, cpu: str, memory: str, gpus: str, unschedulable: bool = False) -> dict:
    return {
        "metadata": {"name": name, "labels": {GPU_PRODUCT_LABEL: A100, "nvidia.com/gpu.memory": "81920"}},
        "spec": {"unschedulable": unschedulable},
        "status": {"allocatable": {"cpu": cpu, "memory": memory, "nvidia.com/gpu": gpus}},
    }
