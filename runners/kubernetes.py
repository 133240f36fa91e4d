"""The Kubernetes runner: one namespace of a cluster, through the official `kubernetes` client.

A node row of this runner is a GPU pool of a cluster: its engine URL names the cluster, the
namespace and, optionally, the GPU product its pods are pinned to (the hub prices nodes by
GPU product, so one row per product). Two forms:

- ``kubeconfig:///etc/aihub/kubeconfig?context=gpu&namespace=aihub&gpu_product=NVIDIA-A100-SXM4-80GB``
- ``https://10.0.0.1:6443?namespace=aihub``: the bearer token is read from the file named by
  ``HUB_KUBERNETES_TOKEN_FILE`` and the cluster's CA from ``HUB_KUBERNETES_CA_FILE``.

An empty URL means the hub runs inside the cluster (its service account), else ~/.kube/config.

Per deployment: a Secret (its environment), a PersistentVolumeClaim (its declared volume), a
Deployment (replicas 1; 0 while it sleeps) and a NodePort Service. NodePort, because the hub
reaches endpoints from wherever it runs, not only from inside the cluster: the endpoint is
``http://<node address>:<node port>``, the node row's address being any cluster node or a
load balancer in front of them. Pods run hardened as Docker containers do: user 65532,
non-root, read-only root with an emptyDir for /tmp, every capability dropped, no privilege
escalation, seccomp RuntimeDefault, no service account token. The `*_manifest` functions
build every object as plain data, so each can be checked against the API schemas.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.utils import parse_quantity

from .base import (
    LABEL_DEPLOYMENT,
    LABEL_HUB,
    Gpu,
    Inventory,
    LaunchSpec,
    NodeUnreachable,
    RunnerError,
    RunPhase,
    RunState,
    label_number,
)
from .process import OFFLINE

APP_UID = 65532  # the user builders/render.py gives every image
CONTAINER = "app"
TMP_SIZE = "256Mi"
NAME_PREFIX = "aihub-"
DEFAULT_NAMESPACE = "aihub"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB, set by NVIDIA's GPU feature discovery
NODE_LABEL_PRICE = "price_per_hour"  # the operator's label on each node, as on a swarm's nodes
TOKEN_FILE_ENV = "HUB_KUBERNETES_TOKEN_FILE"
CA_FILE_ENV = "HUB_KUBERNETES_CA_FILE"
ENV_DIGEST_ANNOTATION = "io.aihub/environment-digest"

# A Service's name is a DNS-1035 label, the strictest name of the four objects.
_OBJECT_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_LABEL_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# Waiting reasons after which the pod will not start without a change: the run has failed.
_FAILED_WAITING = {"CrashLoopBackOff", "ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                   "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}


def object_name(deployment: str) -> str:
    """The name of the deployment's Deployment and Service; RunnerError when Kubernetes would refuse it."""
    name = NAME_PREFIX + deployment if isinstance(deployment, str) else ""
    if len(name) > 63 - len("-data") or not _OBJECT_NAME.fullmatch(name):
        raise RunnerError(
            f"{deployment!r} cannot name Kubernetes objects: use at most {63 - len(NAME_PREFIX) - 5} "
            "lowercase letters, digits and '-', starting and ending with a letter or digit"
        )
    return name


def secret_name(deployment: str) -> str:
    return f"{object_name(deployment)}-env"


def claim_name(deployment: str) -> str:
    return f"{object_name(deployment)}-data"


def is_label(key: str, value: str) -> bool:
    """Whether Kubernetes accepts `key: value` as a label (otherwise it goes to annotations only)."""
    prefix, _, name = key.rpartition("/")
    return (
        len(name) <= 63 and bool(_LABEL_NAME.fullmatch(name))
        and (not prefix or (len(prefix) <= 253 and bool(_LABEL_PREFIX.fullmatch(prefix))))
        and len(value) <= 63 and bool(_LABEL_VALUE.fullmatch(value))
    )


def owner_labels(deployment: str, hub_id: str) -> dict[str, str]:
    labels = {LABEL_DEPLOYMENT: deployment, LABEL_HUB: hub_id}
    for key, value in labels.items():
        if not is_label(key, value):
            raise RunnerError(f"{value!r} cannot be the Kubernetes label {key}: use at most 63 letters, digits, "
                              "'-', '_' or '.', starting and ending with a letter or digit")
    return labels


def _metadata(spec: LaunchSpec, name: str, hub_id: str) -> dict:
    labels = {key: value for key, value in spec.labels.items() if is_label(key, value)}
    return {
        "name": name,
        "labels": {**labels, **owner_labels(spec.deployment, hub_id)},
        "annotations": dict(spec.labels),
    }


def container_environment(spec: LaunchSpec) -> dict[str, str]:
    environment = {**spec.environment, **OFFLINE}
    if spec.max_body_bytes is not None:
        environment["HUB_MAX_BODY_BYTES"] = str(spec.max_body_bytes)
    if spec.volume is not None:
        environment["HUB_STORAGE_DIR"] = spec.volume.path
    return environment


def secret_manifest(spec: LaunchSpec, *, hub_id: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(spec, secret_name(spec.deployment), hub_id),
        "type": "Opaque",
        "stringData": container_environment(spec),
    }


def claim_manifest(spec: LaunchSpec, *, hub_id: str) -> dict:
    assert spec.volume is not None
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(spec, claim_name(spec.deployment), hub_id),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": f"{max(1, round(spec.volume.size_gb * 1024))}Mi"}},
        },
    }


def _resources(spec: LaunchSpec) -> dict:
    amounts = {"cpu": f"{max(1, round(spec.resources.cpu * 1000))}m",
               "memory": f"{max(1, round(spec.resources.memory_gb * 1024))}Mi"}
    limits = dict(amounts)
    if spec.resources.gpus > 0:
        limits[GPU_RESOURCE] = str(spec.resources.gpus)  # extended resources: limits only, requests follow
    return {"requests": amounts, "limits": limits}


def _pod_spec(spec: LaunchSpec, *, gpu_product: str) -> dict:
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes = [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": TMP_SIZE}}]
    if spec.volume is not None:
        mounts.append({"name": "data", "mountPath": spec.volume.path})
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": claim_name(spec.deployment)}})
    pod = {
        # Template code is the publisher's: it gets no credentials to this cluster.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": APP_UID, "runAsGroup": APP_UID,
            "fsGroup": APP_UID,  # a new volume is root's; this makes it the app user's
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [{
            "name": CONTAINER,
            "image": spec.image,
            "ports": [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}],
            "envFrom": [{"secretRef": {"name": secret_name(spec.deployment)}}],
            "resources": _resources(spec),
            "securityContext": {
                "runAsNonRoot": True, "runAsUser": APP_UID, "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False, "privileged": False,
                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumeMounts": mounts,
        }],
        "volumes": volumes,
    }
    if spec.resources.gpus > 0 and gpu_product:
        pod["nodeSelector"] = {GPU_PRODUCT_LABEL: gpu_product}
    return pod


def deployment_manifest(spec: LaunchSpec, *, hub_id: str, gpu_product: str = "") -> dict:
    metadata = _metadata(spec, object_name(spec.deployment), hub_id)
    # A changed environment lives in the Secret, which pods do not watch: this makes it a new pod template.
    digest = hashlib.sha256(json.dumps(container_environment(spec), sort_keys=True).encode()).hexdigest()[:16]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 2,
            # The old pod holds the GPU and the volume: it must go before the new one starts.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": owner_labels(spec.deployment, hub_id)},
            "template": {
                "metadata": {"labels": metadata["labels"],
                             "annotations": {**metadata["annotations"], ENV_DIGEST_ANNOTATION: digest}},
                "spec": _pod_spec(spec, gpu_product=gpu_product),
            },
        },
    }


def service_manifest(spec: LaunchSpec, *, hub_id: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, object_name(spec.deployment), hub_id),
        "spec": {
            "type": "NodePort",
            "selector": owner_labels(spec.deployment, hub_id),
            "ports": [{"name": "http", "port": spec.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def manifests(spec: LaunchSpec, *, hub_id: str, gpu_product: str = "") -> list[dict]:
    """Every object `launch(spec)` sends, in the order it sends them."""
    objects = [secret_manifest(spec, hub_id=hub_id)]
    if spec.volume is not None:
        objects.append(claim_manifest(spec, hub_id=hub_id))
    objects += [deployment_manifest(spec, hub_id=hub_id, gpu_product=gpu_product), service_manifest(spec, hub_id=hub_id)]
    return objects


class KubernetesRunner:
    """One namespace of one cluster, as named by `base_url` (see the module's docstring)."""

    name = "kubernetes"

    def __init__(self, base_url: str | None = None, address: str = "127.0.0.1", hub_id: str = "aihub",
                 timeout: int = 30):
        target = urlsplit(base_url or "")
        options = {key: values[-1] for key, values in parse_qs(target.query).items()}
        self.base_url = base_url or ""
        self.namespace = options.get("namespace", DEFAULT_NAMESPACE)
        self.context = options.get("context")
        self.gpu_product = options.get("gpu_product", "")
        self.address = address
        self.hub_id = hub_id
        self.timeout = timeout
        self._target = target
        self._api: client.ApiClient | None = None

    # --- the Runner protocol ---------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> RunState:
        if spec.kind != "service":
            raise RunnerError(f"{spec.deployment} is a {spec.kind}: the Kubernetes runner runs services; "
                              "run jobs on a Docker or process node")
        secret, *rest = manifests(spec, hub_id=self.hub_id, gpu_product=self.gpu_product)
        with _api_errors(f"launching {spec.deployment}"):
            self._create_or_replace(secret, create=self.core.create_namespaced_secret,
                                    replace=self.core.replace_namespaced_secret)
            for body in rest:
                kind = body["kind"]
                if kind == "PersistentVolumeClaim":  # an existing claim keeps its data: leave it be
                    self._create(body, self.core.create_namespaced_persistent_volume_claim)
                elif kind == "Deployment":  # replaced whole: the new spec, scaled back to 1
                    self._create_or_replace(body, create=self.apps.create_namespaced_deployment,
                                            replace=self.apps.replace_namespaced_deployment)
                else:  # the Service keeps its node port, so the endpoint survives a relaunch
                    self._create(body, self.core.create_namespaced_service)
        return self.status(spec.deployment)

    def status(self, deployment: str) -> RunState:
        name = object_name(deployment)
        with _api_errors(f"reading the state of {deployment}"):
            found = _absent_is_none(self.apps.read_namespaced_deployment, name, self.namespace, **self._timeout)
            if found is None:
                return RunState(deployment=deployment, phase=RunPhase.MISSING)
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=self._selector(deployment),
                                                 **self._timeout).items
            service = _absent_is_none(self.core.read_namespaced_service, name, self.namespace, **self._timeout)
        return self._state_of(deployment, found, pods, service)

    def logs(self, deployment: str, *, tail: int = 200) -> str:
        object_name(deployment)
        with _api_errors(f"reading the logs of {deployment}"):
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=self._selector(deployment),
                                                 **self._timeout).items
            if not pods:
                return ""
            pod = _newest(pods)
            response = self.core.read_namespaced_pod_log(
                pod.metadata.name, self.namespace, container=CONTAINER, tail_lines=tail,
                previous=_crashed(pod), _preload_content=False, **self._timeout)
            return response.data.decode(errors="replace")

    def stop(self, deployment: str) -> None:
        name = object_name(deployment)
        with _api_errors(f"stopping {deployment}"):
            # The answer (a Scale) is not needed; leaving it unparsed spares a model mismatch.
            _absent_is_none(self.apps.patch_namespaced_deployment_scale, name, self.namespace,
                            {"spec": {"replicas": 0}}, _preload_content=False, **self._timeout)

    def remove(self, deployment: str) -> None:
        name = object_name(deployment)
        with _api_errors(f"removing {deployment}"):
            for delete, object_ in ((self.apps.delete_namespaced_deployment, name),
                                    (self.core.delete_namespaced_service, name),
                                    (self.core.delete_namespaced_secret, secret_name(deployment)),
                                    (self.core.delete_namespaced_persistent_volume_claim, claim_name(deployment))):
                _absent_is_none(delete, object_, self.namespace, **self._timeout)

    def list(self) -> list[RunState]:
        selector = f"{LABEL_HUB}={self.hub_id}"
        with _api_errors("listing this hub's deployments"):
            found = self.apps.list_namespaced_deployment(self.namespace, label_selector=selector, **self._timeout).items
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector, **self._timeout).items
            services = self.core.list_namespaced_service(self.namespace, label_selector=selector, **self._timeout).items
        services_of = {service.metadata.name: service for service in services}
        states = []
        for item in found:
            deployment = (item.metadata.labels or {}).get(LABEL_DEPLOYMENT, item.metadata.name)
            own_pods = [pod for pod in pods if (pod.metadata.labels or {}).get(LABEL_DEPLOYMENT) == deployment]
            states.append(self._state_of(deployment, item, own_pods, services_of.get(item.metadata.name)))
        return states

    def inventory(self) -> Inventory:
        """The allocatable resources of the pool's schedulable nodes (those with its GPU product, when it has one)."""
        selector = f"{GPU_PRODUCT_LABEL}={self.gpu_product}" if self.gpu_product else None
        with _api_errors("reading the cluster's nodes"):
            nodes = self.core.list_node(label_selector=selector, **self._timeout).items
        return _inventory_of(nodes)

    def pools(self) -> list[ClusterPool]:
        """The cluster's GPU pools, one per GPU product of its schedulable nodes (the whole
        cluster when no node carries a product label), each priced by its nodes' label."""
        with _api_errors("reading the cluster's nodes"):
            nodes = [node for node in self.core.list_node(**self._timeout).items
                     if node.spec is None or not node.spec.unschedulable]
        by_product: dict[str, list] = {}
        for node in nodes:
            by_product.setdefault((node.metadata.labels or {}).get(GPU_PRODUCT_LABEL, ""), []).append(node)
        if set(by_product) != {""}:
            by_product.pop("", None)  # CPU-only nodes of a GPU cluster are no pool of the hub's
        return [ClusterPool(gpu_product=product, price_per_hour=_pool_price(product, members),
                            inventory=_inventory_of(members), node_names=tuple(node.metadata.name for node in members))
                for product, members in sorted(by_product.items())]

    # --- the API ----------------------------------------------------------------------

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self._client())

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self._client())

    @property
    def _timeout(self) -> dict:
        return {"_request_timeout": self.timeout}

    def _client(self) -> client.ApiClient:
        # Created on first use: a cluster that is down must not fail the runner's construction.
        if self._api is None:
            self._api = self._connect()
        return self._api

    def _connect(self) -> client.ApiClient:
        scheme = self._target.scheme
        try:
            if scheme == "kubeconfig":
                return config.new_client_from_config(config_file=self._target.path, context=self.context)
            if scheme in ("http", "https"):
                return client.ApiClient(self._url_configuration())
            if scheme:
                raise RunnerError(f"{self.base_url!r} is not a Kubernetes engine URL: use kubeconfig:///PATH?context=NAME"
                                  "&namespace=NAME or https://HOST:6443?namespace=NAME")
            if os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config()
                return client.ApiClient()
            return config.new_client_from_config(context=self.context)
        except (ConfigException, OSError, yaml.YAMLError) as error:
            raise RunnerError(f"the Kubernetes configuration {self.base_url or '(default)'} cannot be used: {error}") from None

    def _url_configuration(self) -> client.Configuration:
        target = self._target
        configuration = client.Configuration(host=f"{target.scheme}://{target.netloc}{target.path.rstrip('/')}")
        configuration.retries = 1
        if os.environ.get(TOKEN_FILE_ENV):
            with open(os.environ[TOKEN_FILE_ENV]) as token:
                configuration.api_key = {"authorization": f"Bearer {token.read().strip()}"}
        if os.environ.get(CA_FILE_ENV):
            configuration.ssl_ca_cert = os.environ[CA_FILE_ENV]
        return configuration

    def _create(self, body: dict, create) -> None:
        try:
            create(self.namespace, body, **self._timeout)
        except ApiException as error:
            if error.status != 409:
                raise

    def _create_or_replace(self, body: dict, *, create, replace) -> None:
        try:
            create(self.namespace, body, **self._timeout)
        except ApiException as error:
            if error.status != 409:
                raise
            replace(body["metadata"]["name"], self.namespace, body, **self._timeout)

    def _selector(self, deployment: str) -> str:
        return ",".join(f"{key}={value}" for key, value in owner_labels(deployment, self.hub_id).items())

    def _state_of(self, deployment: str, found, pods: list, service) -> RunState:
        if not found.spec.replicas:
            return RunState(deployment=deployment, phase=RunPhase.STOPPED)
        endpoint = self._endpoint(service)
        pod = _newest(pods) if pods else None
        failed = _failure(pod) if pod is not None else None
        if failed is not None:
            exit_code, detail = failed
            return RunState(deployment=deployment, phase=RunPhase.EXITED, exit_code=exit_code, detail=detail)
        if (found.status and found.status.ready_replicas or 0) >= 1:
            return RunState(deployment=deployment, phase=RunPhase.RUNNING, endpoint=endpoint)
        return RunState(deployment=deployment, phase=RunPhase.STARTING, endpoint=endpoint,
                        detail=_pending_detail(pod) if pod is not None else "")

    def _endpoint(self, service) -> str | None:
        for port in (service.spec.ports or ()) if service is not None else ():
            if port.node_port:
                return f"http://{self.address}:{port.node_port}"
        return None


@dataclass(frozen=True)
class ClusterPool:
    gpu_product: str  # "" for a cluster whose nodes carry no GPU product label
    price_per_hour: Decimal
    inventory: Inventory
    node_names: tuple[str, ...]


def _inventory_of(nodes) -> Inventory:
    cpus, memory, gpus = 0.0, 0.0, []
    for node in nodes:
        if node.spec is not None and node.spec.unschedulable:
            continue
        allocatable = node.status.allocatable or {}
        cpus += float(parse_quantity(allocatable.get("cpu", "0")))
        memory += float(parse_quantity(allocatable.get("memory", "0"))) / 1024**3
        gpus += [_gpu_of(node.metadata.labels or {})] * int(parse_quantity(allocatable.get(GPU_RESOURCE, "0")))
    return Inventory(cpus=round(cpus, 2), memory_gb=round(memory, 1), gpus=tuple(gpus))


def _pool_price(product: str, nodes) -> Decimal:
    """The price every node of the pool carries in its `price_per_hour` label (the hub bills a
    pool at one price, so they must agree); 0 when none carries it."""
    texts = {(node.metadata.labels or {}).get(NODE_LABEL_PRICE, "0") for node in nodes}
    what = f"the nodes with {GPU_PRODUCT_LABEL}={product}" if product else "the cluster's nodes"
    if len(texts) > 1:
        raise RunnerError(f"{what} carry different {NODE_LABEL_PRICE} labels ({', '.join(sorted(texts))}): "
                          f"the hub bills a pool at one price; `kubectl label node NAME {NODE_LABEL_PRICE}=2.40 --overwrite`")
    [text] = texts or {"0"}
    price = label_number(text)
    if price is None:
        raise RunnerError(f"{what} have the label {NODE_LABEL_PRICE}={text!r}: set a number of 0 or more, "
                          f"e.g. `kubectl label node NAME {NODE_LABEL_PRICE}=2.40 --overwrite`")
    return price


def _gpu_of(labels: Mapping[str, str]) -> Gpu:
    memory_mib = labels.get(GPU_MEMORY_LABEL, "")
    return Gpu(model=labels.get(GPU_PRODUCT_LABEL, "NVIDIA GPU"),
               memory_gb=round(int(memory_mib) / 1024, 1) if memory_mib.isdigit() else 0.0)


def _newest(pods: list):
    return max(pods, key=lambda pod: (pod.metadata.creation_timestamp is not None, pod.metadata.creation_timestamp or 0))


def _container_status(pod):
    for status in (pod.status.container_statuses or ()) if pod.status else ():
        if status.name == CONTAINER:
            return status
    return None


def _crashed(pod) -> bool:
    status = _container_status(pod)
    return bool(status is not None and status.restart_count and not (status.state and status.state.running))


def _failure(pod) -> tuple[int | None, str] | None:
    """(exit code, explanation) when the pod's container died or cannot start; None while it lives or starts."""
    status = _container_status(pod)
    if status is None or status.state is None:
        return None
    terminated = status.state.terminated or (status.last_state.terminated if status.last_state else None)
    waiting = status.state.waiting
    if status.state.terminated is None and (waiting is None or waiting.reason not in _FAILED_WAITING):
        return None
    if terminated is not None and (waiting is None or waiting.reason == "CrashLoopBackOff"):
        return terminated.exit_code, _exit_detail(terminated)
    return None, f"{waiting.reason}: {waiting.message}" if waiting.message else waiting.reason


def _exit_detail(terminated) -> str:
    if terminated.reason == "OOMKilled":
        return "OOM killed: it used more memory than its limit"
    detail = f"exited with code {terminated.exit_code}"
    if terminated.reason:
        detail += f" ({terminated.reason})"
    return f"{detail}: {terminated.message}" if terminated.message else detail


def _pending_detail(pod) -> str:
    for condition in (pod.status.conditions or ()) if pod.status else ():
        if condition.type == "PodScheduled" and condition.status == "False":
            return f"not scheduled yet: {condition.message or condition.reason}"
    return ""


def _absent_is_none(call, *args, **kwargs):
    """The call's result, or None when the object does not exist (a 404)."""
    try:
        return call(*args, **kwargs)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


@contextlib.contextmanager
def _api_errors(action: str) -> Iterator[None]:
    """Every API error becomes a RunnerError that says what failed; no answer at all, NodeUnreachable."""
    try:
        yield
    except RunnerError:
        raise
    except ApiException as error:
        if not error.status:
            raise NodeUnreachable(f"{action}: the Kubernetes API does not answer ({error.reason})") from None
        raise RunnerError(f"{action}: the Kubernetes API answered {error.status} {error.reason}: "
                          f"{_message(error)}") from None
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise NodeUnreachable(f"{action}: the Kubernetes API does not answer ({error})") from None


def _message(error: ApiException) -> str:
    try:
        return json.loads(error.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(error.body or "no message")
