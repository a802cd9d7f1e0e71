"""Renders, lints and validates charts/portico with a real Helm engine, and checks the Dockerfile.

Helm: helm-python-sdk (Helm's Go SDK v4 as a shared library, called through ctypes).
Kubernetes schemas: kubernetes-validate, strict mode, KUBE_VERSION below.
Dockerfile: the `dockerfile` package (BuildKit's own parser).

    pip install -r tests/chart/requirements.txt && python3 -m pytest tests/chart -q
"""

from __future__ import annotations

import copy
import functools
import hashlib
import ipaddress
import json
import os
import re
from pathlib import Path

import dockerfile
import helm_python as helm
import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CHART = ROOT / "charts" / "portico"
VALUES_DIR = HERE / "values"
DOCKERFILE = ROOT / "Dockerfile"

RELEASE = "edge"
NAMESPACE = "ingress"
KUBE_VERSION = "1.33.0"
CONTROLLER = "portico.dev/ingress-controller"
CONFIG_PATH = "/etc/portico/config.yaml"

# Kinds backed by CRDs: kubernetes-validate ships no schema for them, so they are skipped
# there on purpose and their fields are asserted by the tests below instead.
CRD_KINDS = {
    ("metallb.io/v1beta1", "IPAddressPool"),
    ("metallb.io/v1beta1", "L2Advertisement"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("gateway.networking.k8s.io/v1", "GatewayClass"),
    ("gateway.networking.k8s.io/v1", "Gateway"),
}

# The complete RBAC the chart may grant, written once: (object kind, apiGroup, resource, verb).
_READ = ("get", "list", "watch")
EXPECTED_CLUSTER_RULES = (
    {("ClusterRole", "networking.k8s.io", r, v) for r in ("ingresses", "ingressclasses") for v in _READ}
    | {("ClusterRole", "", r, v) for r in ("services", "secrets") for v in _READ}
    | {("ClusterRole", "discovery.k8s.io", "endpointslices", v) for v in _READ}
    | {("ClusterRole", "networking.k8s.io", "ingresses/status", v) for v in ("patch", "update")}
    | {("ClusterRole", "", "events", v) for v in ("create", "patch")}
    | {("ClusterRole", "events.k8s.io", "events", v) for v in ("create", "get", "patch")}
    | {("ClusterRole", "", "namespaces", v) for v in _READ}
    | {("ClusterRole", "gateway.networking.k8s.io", r, v)
       for r in ("gatewayclasses", "gateways", "httproutes", "grpcroutes", "tlsroutes", "tcproutes", "referencegrants",
                 "backendtlspolicies")
       for v in _READ}
    | {("ClusterRole", "gateway.networking.k8s.io", f"{r}/status", v)
       for r in ("gatewayclasses", "gateways", "httproutes", "grpcroutes", "tlsroutes", "tcproutes", "backendtlspolicies")
       for v in ("patch", "update")}
    # BackendTLSPolicy CA bundles.
    | {("ClusterRole", "", "configmaps", v) for v in _READ}
)
# ACME writes certificate Secrets in the Ingresses' namespaces: cluster-wide create/update (never delete or
# patch), only with acme.enabled. In the release namespace: the challenge ConfigMap (watched by every replica,
# created and patched by the leader) and the account Secret (patched by name only).
EXPECTED_ACME_RULES = (
    {("ClusterRole", "", "secrets", v) for v in ("create", "update")}
    | {("Role", "", "configmaps", v) for v in ("get", "list", "watch", "create")}
    | {("Role", "", "configmaps/portico-acme-challenges", "patch"),
       ("Role", "", "secrets/portico-acme-account", "patch")}
)
# Leader election (planned --leader-elect): a namespaced Role, only when leader election is on.
EXPECTED_LEASE_RULES = {("Role", "coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}

# The config keys the binary knows today (src/config.rs; unknown keys are a startup error).
CONFIG_TOP_KEYS = {"listenerSets", "admin", "upstream", "shutdown"}
LISTENER_SET_KEYS = {"name"}
OPTIONAL_LISTENER_SET_KEYS = {
    "ingressClasses", "http", "https", "httpsRedirectPort", "acme", "publish", "adoptClasses",
    "shareHostsAcrossNamespaces", "defaultCertificate", "proxyProtocol", "trustedProxies", "allowSourceRanges",
    "denySourceRanges", "errorPages",
    "maxConnections", "headerReadTimeout", "keepAliveTimeout", "bodyReadTimeout",
}
ACME_KEYS = {"directory", "email", "externalAccountBinding", "caRoot"}
ADMIN_KEYS = {"address"}
OPTIONAL_ADMIN_KEYS = {"apiAddress"}
UPSTREAM_KEYS = {"connectTimeout", "responseHeaderTimeout", "idleTimeout"}
OPTIONAL_UPSTREAM_KEYS = {"readTimeout", "retryBudget"}
SHUTDOWN_KEYS = {"drainDelay", "gracePeriod"}
DURATION = re.compile(r"^0*[1-9][0-9]*(ms|s|m|h)$")

SCENARIOS = ["default"] + sorted(p.stem for p in VALUES_DIR.glob("*.yaml"))


# ---------------------------------------------------------------- helpers


def user_values(scenario: str) -> dict:
    if scenario == "default":
        return {}
    return yaml.safe_load((VALUES_DIR / f"{scenario}.yaml").read_text()) or {}


def render_raw(values: dict | None, kube_version: str | None = None) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        if kube_version is None:
            return chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
        # Chart.render does not pass a Kubernetes version; the SDK's render call takes one (.Capabilities).
        from helm_python import _native
        opts = {"name": RELEASE, "namespace": NAMESPACE, "is_install": True, "kube_version": kube_version}
        return json.loads(_native.call_string("helm_render", chart._raw(), json.dumps(values or {}), json.dumps(opts)))


def parse_manifests(manifests: dict[str, str]) -> list[dict]:
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                doc.setdefault("__source", path)
                objects.append(doc)
    return objects


@functools.lru_cache(maxsize=None)
def _rendered(scenario: str) -> tuple[str, str]:
    manifests = render_raw(user_values(scenario))
    notes = next((v for k, v in manifests.items() if k.endswith("NOTES.txt")), "")
    return json.dumps(parse_manifests(manifests)), notes


def objects_of(scenario: str) -> list[dict]:
    return json.loads(_rendered(scenario)[0])


@functools.lru_cache(maxsize=None)
def _merged(scenario: str) -> str:
    with helm.Chart.load(CHART) as chart:
        return json.dumps(chart.merge_values(user_values(scenario)))


def merged_values(scenario: str) -> dict:
    return json.loads(_merged(scenario))


def deep_merge(base: dict, over: dict) -> dict:
    """listenerSetDefaults under a set, as the chart merges them: present keys win, dicts merge, lists replace."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def sets_of(values: dict) -> dict[str, dict]:
    """The enabled listener sets with listenerSetDefaults filled in, by name."""
    out = {}
    for name, own in sorted(values["listenerSets"].items()):
        if isinstance(own, dict):
            ls = deep_merge(values["listenerSetDefaults"], own)
            if ls["enabled"]:
                out[name] = ls
    return out


def class_of(name: str, ls: dict) -> str | None:
    if not ls["ingressClass"]["enabled"]:
        return None
    return ls["ingressClass"].get("name") or f"portico-{name}"


def set_values(scenario: str) -> dict[str, dict]:
    return sets_of(merged_values(scenario))


def only(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def workload(objects: list[dict]) -> dict:
    found = [o for o in objects if o["kind"] in ("Deployment", "DaemonSet")]
    assert len(found) == 1, [o["kind"] for o in found]
    return found[0]


def container(objects: list[dict]) -> dict:
    containers = workload(objects)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def config_map(objects: list[dict]) -> dict:
    found = [o for o in objects if o["kind"] == "ConfigMap" and "config.yaml" in o.get("data", {})]
    assert len(found) == 1, [o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"]
    return found[0]


def config_text(objects: list[dict]) -> str:
    return config_map(objects)["data"]["config.yaml"]


def config_of(objects: list[dict]) -> dict:
    return yaml.safe_load(config_text(objects))


def port_of(bind: str) -> int:
    host, _, port = bind.rpartition(":")
    ipaddress.ip_address(host.strip("[]"))  # the host part is an IP literal
    return int(port)


def listener_set(config: dict, name: str) -> dict:
    sets = [s for s in config["listenerSets"] if s["name"] == name]
    assert len(sets) == 1, config["listenerSets"]
    return sets[0]


def leader_elect_expected(values: dict) -> bool:
    le = values["controller"]["leaderElection"].get("enabled")  # Helm drops null values when merging
    if isinstance(le, bool):
        return le
    if values["autoscaling"]["enabled"] and values["autoscaling"]["maxReplicas"] > 1:
        return True
    return values["controller"]["kind"] == "DaemonSet" or values["controller"]["replicas"] > 1


def strip_private(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if not k.startswith("__")}


# ---------------------------------------------------------------- lint


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_strict_has_no_warnings_or_errors(scenario):
    report = helm.lint(
        CHART, user_values(scenario), strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}"
    )
    assert report["total_charts_linted"] == 1
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [] and report["errors"] == [], report


def test_lint_reports_schema_violation():
    report = helm.lint(CHART, {"controller": {"replicas": "two"}}, strict=True, namespace=NAMESPACE)
    assert report["errors"], report
    assert any("/controller/replicas" in e for e in report["errors"])


# ---------------------------------------------------------------- Kubernetes schemas


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_object_validates_against_kubernetes_schema(scenario):
    objects = objects_of(scenario)
    assert objects
    skipped = []
    for obj in objects:
        key = (obj["apiVersion"], obj["kind"])
        if key in CRD_KINDS:
            skipped.append(key)
            continue
        try:
            kubernetes_validate.validate(strip_private(obj), KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{obj['__source']}: {obj['kind']}/{obj['metadata']['name']}: {err.message} at {list(err.path)}")
        except kubernetes_validate.SchemaNotFoundError as err:
            pytest.fail(f"{obj['__source']}: no Kubernetes schema: {err.message}")
    values = merged_values(scenario)
    expected_skips = set()
    if values["metallb"]["ipAddressPool"]["enabled"]:
        expected_skips.add(("metallb.io/v1beta1", "IPAddressPool"))
    if values["metallb"]["l2Advertisement"]["enabled"]:
        expected_skips.add(("metallb.io/v1beta1", "L2Advertisement"))
    if values["metrics"]["serviceMonitor"]["enabled"]:
        expected_skips.add(("monitoring.coreos.com/v1", "ServiceMonitor"))
    if values["metrics"]["prometheusRule"]["enabled"]:
        expected_skips.add(("monitoring.coreos.com/v1", "PrometheusRule"))
    assert set(skipped) == expected_skips and len(skipped) == len(expected_skips)


def test_strict_validation_catches_an_unknown_field():
    """The validation step itself can fail: a typo'd field in a rendered object is rejected."""
    dep = copy.deepcopy(workload(objects_of("default")))
    dep["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(strip_private(dep), KUBE_VERSION, strict=True)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_standard_labels_and_namespace(scenario):
    for obj in objects_of(scenario):
        labels = obj["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                    "app.kubernetes.io/managed-by", "helm.sh/chart"):
            assert key in labels, (obj["kind"], obj["metadata"]["name"], key)
        assert labels["app.kubernetes.io/instance"] == RELEASE
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding", "IngressClass"):
            assert "namespace" not in obj["metadata"]
        elif obj["apiVersion"].startswith("metallb.io/"):
            assert obj["metadata"]["namespace"] == merged_values(scenario)["metallb"]["namespace"]
        else:
            assert obj["metadata"]["namespace"] == NAMESPACE, (obj["kind"], obj["metadata"]["name"])


# ---------------------------------------------------------------- workload


@pytest.mark.parametrize(
    "scenario,kind,replicas",
    [("default", "Deployment", 2), ("single-replica", "Deployment", 1), ("custom", "Deployment", 3),
     ("daemonset-hostnetwork", "DaemonSet", None), ("observability", "Deployment", None)],
)
def test_workload_kind_and_replicas(scenario, kind, replicas):
    wl = workload(objects_of(scenario))
    assert wl["kind"] == kind
    assert wl["spec"].get("replicas") == replicas


def test_daemonset_uses_host_network():
    pod = workload(objects_of("daemonset-hostnetwork"))["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert "hostNetwork" not in workload(objects_of("default"))["spec"]["template"]["spec"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_args_are_run_config_plus_planned_flags_only_when_enabled(scenario):
    values = merged_values(scenario)
    c = container(objects_of(scenario))
    expected = ["run", "--config", CONFIG_PATH]
    if leader_elect_expected(values):
        expected.append("--leader-elect")
    if values["controller"]["stateDir"]["enabled"]:
        expected += ["--state-dir", values["controller"]["stateDir"]["path"]]
    expected += values["extraArgs"]
    assert c["args"] == expected
    assert "command" not in c  # the image's ENTRYPOINT is /portico


def test_leader_election_defaults():
    assert "--leader-elect" in container(objects_of("default"))["args"]
    assert "--leader-elect" in container(objects_of("daemonset-hostnetwork"))["args"]
    assert "--leader-elect" not in container(objects_of("single-replica"))["args"]
    assert "--leader-elect" not in container(objects_of("custom"))["args"]  # forced off with 3 replicas


def test_state_dir_is_a_writable_volume():
    objects = objects_of("custom")
    pod = workload(objects)["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    state = mounts["/var/lib/portico-state"]
    assert not state.get("readOnly", False)
    volume = next(v for v in pod["volumes"] if v["name"] == state["name"])
    assert volume == {"name": state["name"], "emptyDir": {}}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_config_is_mounted_from_the_configmap(scenario):
    objects = objects_of(scenario)
    pod = workload(objects)["spec"]["template"]["spec"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == str(Path(CONFIG_PATH).parent))
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == config_map(objects)["metadata"]["name"]
    assert Path(CONFIG_PATH).name in config_map(objects)["data"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_security_context(scenario):
    pod = workload(objects_of(scenario))["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 65532  # distroless "nonroot"
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(objects_of(scenario))["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in sc


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_probes_hit_the_admin_port(scenario):
    objects = objects_of(scenario)
    c = container(objects)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert ports["admin"] == port_of(config_of(objects)["admin"]["address"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_resources_set(scenario):
    res = container(objects_of(scenario))["resources"]
    assert res["requests"]["cpu"] and res["requests"]["memory"] and res["limits"]["memory"]


def test_image_reference():
    assert container(objects_of("default"))["image"] == "portico:0.1.0"
    assert container(objects_of("custom"))["image"] == (
        "registry.example.com/portico@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_config_checksum_annotation(scenario):
    objects = objects_of(scenario)
    annotation = workload(objects)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert annotation == hashlib.sha256(config_text(objects).rstrip("\n").encode()).hexdigest()


def test_config_checksum_changes_with_config():
    a = workload(parse_manifests(render_raw({})))
    b = workload(parse_manifests(render_raw({"upstream": {"idleTimeout": "91s"}})))
    key = "checksum/config"
    assert a["spec"]["template"]["metadata"]["annotations"][key] != b["spec"]["template"]["metadata"]["annotations"][key]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pod_disruption_budget(scenario):
    objects = objects_of(scenario)
    pdb = only(objects, "PodDisruptionBudget")
    values = merged_values(scenario)["podDisruptionBudget"]
    if values.get("minAvailable") is not None:
        assert pdb["spec"] == {**{"minAvailable": values["minAvailable"]}, "selector": pdb["spec"]["selector"]}
    else:
        assert pdb["spec"]["maxUnavailable"] == values["maxUnavailable"] and "minAvailable" not in pdb["spec"]
    pod_labels = workload(objects)["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


# ---------------------------------------------------------------- config file


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_config_has_only_known_keys(scenario):
    config = config_of(objects_of(scenario))
    assert set(config) == CONFIG_TOP_KEYS
    assert [s["name"] for s in config["listenerSets"]] == list(set_values(scenario))
    for ls in config["listenerSets"]:
        assert LISTENER_SET_KEYS <= set(ls) <= LISTENER_SET_KEYS | OPTIONAL_LISTENER_SET_KEYS, ls
        assert ls.get("http") or ls.get("https"), ls
        assert ls.get("ingressClasses") or ls.get("adoptClasses"), ls
        if "acme" in ls:
            assert set(ls["acme"]) <= ACME_KEYS and "directory" in ls["acme"], ls["acme"]
        assert re.fullmatch(r"[A-Za-z0-9-]+", ls["name"])
        assert all(isinstance(c, str) for c in ls.get("ingressClasses", []))
        for bind in ls.get("http", []) + ls.get("https", []):
            assert 1024 < port_of(bind) < 65536
        values = set_values(scenario)[ls["name"]]
        assert ("publish" in ls) == values["publish"]["enabled"], ls
        if "publish" in ls:
            assert len(ls["publish"]) == 1 and set(ls["publish"]) <= {"service", "addresses"}, ls["publish"]
            if "service" in ls["publish"]:
                ns, _, name = ls["publish"]["service"].partition("/")
                assert ns and name and "/" not in name
            else:
                assert ls["publish"]["addresses"]
        assert ls.get("adoptClasses", []) == values["adoptClasses"], ls
        if "adoptClasses" in ls:
            assert ls["adoptClasses"] and all(isinstance(c, str) for c in ls["adoptClasses"])
        assert ls.get("shareHostsAcrossNamespaces", False) == values["shareHostsAcrossNamespaces"], ls
        if "shareHostsAcrossNamespaces" in ls:
            assert ls["shareHostsAcrossNamespaces"] is True, "rendered only when on"
    assert ADMIN_KEYS <= set(config["admin"]) <= ADMIN_KEYS | OPTIONAL_ADMIN_KEYS
    port_of(config["admin"]["address"])
    # The API and dashboard: on the pod's loopback unless exposed on the admin port.
    if "apiAddress" in config["admin"]:
        assert config["admin"]["apiAddress"].startswith("127.0.0.1:"), config["admin"]
        assert port_of(config["admin"]["apiAddress"]) != port_of(config["admin"]["address"])
    assert UPSTREAM_KEYS <= set(config["upstream"]) <= UPSTREAM_KEYS | OPTIONAL_UPSTREAM_KEYS
    for key, value in config["upstream"].items():
        if key != "retryBudget":
            assert isinstance(value, str) and DURATION.match(value), value
    assert set(config["shutdown"]) == SHUTDOWN_KEYS
    assert DURATION.match(config["shutdown"]["gracePeriod"])
    assert re.fullmatch(r"[0-9]+(ms|s|m|h)", config["shutdown"]["drainDelay"])


def test_config_default_values_match_the_contract():
    config = config_of(objects_of("default"))
    assert config == {
        "listenerSets": [
            {"name": "external", "ingressClasses": ["portico-external"], "http": ["0.0.0.0:8080"],
             "https": ["0.0.0.0:8443"], "publish": {"service": f"{NAMESPACE}/{RELEASE}-portico-external"},
             "httpsRedirectPort": 443},
            {"name": "internal", "ingressClasses": ["portico-internal"], "http": ["0.0.0.0:8081"],
             "https": ["0.0.0.0:8444"], "publish": {"service": f"{NAMESPACE}/{RELEASE}-portico-internal"},
             "httpsRedirectPort": 443},
        ],
        "admin": {"address": "0.0.0.0:9000", "apiAddress": "127.0.0.1:9001"},
        "upstream": {"connectTimeout": "5s", "responseHeaderTimeout": "60s", "idleTimeout": "90s"},
        # The drain is the preStop sleep (shutdown.drainDelay 10s); the binary must not wait again.
        "shutdown": {"drainDelay": "0s", "gracePeriod": "25s"},
    }


def test_admin_api_on_loopback_unless_exposed():
    config = config_of(render({}))
    assert config["admin"] == {"address": "0.0.0.0:9000", "apiAddress": "127.0.0.1:9001"}
    config = config_of(render({"admin": {"api": {"port": 9500}}}))
    assert config["admin"]["apiAddress"] == "127.0.0.1:9500"
    exposed = render({"admin": {"api": {"expose": True}}})
    assert config_of(exposed)["admin"] == {"address": "0.0.0.0:9000"}
    # The loopback port is never a container port: nothing outside the pod may reach it.
    assert {p["containerPort"] for p in container(render({}))["ports"]} == {8080, 8443, 8081, 8444, 9000}


def test_config_ipv6_and_publish_addresses():
    config = config_of(objects_of("custom"))
    ext = listener_set(config, "external")
    assert ext["http"] == ["[::]:10080"] and ext["https"] == ["[::]:10443"]
    assert ext["publish"] == {"addresses": ["203.0.113.10"]}
    assert listener_set(config, "internal")["publish"] == {"service": f"{NAMESPACE}/gw-internal"}
    assert config["admin"]["address"] == "[::]:9100"
    assert config["upstream"] == {"connectTimeout": "250ms", "responseHeaderTimeout": "2m", "idleTimeout": "1h"}


def test_acme_values_render_into_the_listed_sets_config():
    config = config_of(objects_of("acme-enabled"))
    assert listener_set(config, "external")["acme"] == {"directory": "letsencrypt-staging",
                                                       "email": "ops@example.com"}
    assert "acme" not in listener_set(config, "internal")
    # Cluster mode keeps ACME state in Secrets: no --state-dir is needed.
    assert "--state-dir" not in container(objects_of("acme-enabled"))["args"]
    for scenario in ("default", "custom"):
        assert all("acme" not in ls for ls in config_of(objects_of(scenario))["listenerSets"])
    both = config_of(parse_manifests(render_raw(
        {"acme": {"enabled": True, "email": "a@example.com", "directory": "https://ca.example.com/dir",
                  "listenerSets": ["external", "internal"]}})))
    assert [ls["acme"]["directory"] for ls in both["listenerSets"]] == ["https://ca.example.com/dir"] * 2
    # Listed but disabled: nothing.
    off = config_of(parse_manifests(render_raw({"acme": {"listenerSets": ["internal"]}})))
    assert all("acme" not in ls for ls in off["listenerSets"])


# ---------------------------------------------------------------- classes and services


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_ingress_classes_match_the_config(scenario):
    objects = objects_of(scenario)
    config = config_of(objects)
    classes = {o["metadata"]["name"]: o for o in objects if o["kind"] == "IngressClass"}
    config_classes = [c for ls in config["listenerSets"] for c in ls.get("ingressClasses", [])]
    assert sorted(config_classes) == sorted(classes)
    for name, ls in set_values(scenario).items():
        wanted = ls["ingressClass"]
        own = class_of(name, ls)
        assert listener_set(config, name).get("ingressClasses", []) == ([own] if own else [])
        if not own:
            continue
        ic = classes[own]
        assert ic["spec"] == {"controller": CONTROLLER}
        annotations = ic["metadata"].get("annotations") or {}
        if wanted["default"]:
            assert annotations["ingressclass.kubernetes.io/is-default-class"] == "true"
        else:
            assert "ingressclass.kubernetes.io/is-default-class" not in annotations
    defaults = [n for n, o in classes.items() if (o["metadata"].get("annotations") or {}).get(
        "ingressclass.kubernetes.io/is-default-class") == "true"]
    assert len(defaults) <= 1


def test_no_default_class_unless_asked():
    def default_classes(objs):
        return [o["metadata"]["name"] for o in objs if o["kind"] == "IngressClass"
                and (o["metadata"].get("annotations") or {}).get("ingressclass.kubernetes.io/is-default-class")]
    assert default_classes(objects_of("default")) == []
    on = parse_manifests(render_raw({"listenerSets": {"external": {"ingressClass": {"default": True}}}}))
    assert default_classes(on) == ["portico-external"]
    assert default_classes(objects_of("custom")) == ["private"]


def test_adopted_classes_and_status_off_for_a_side_by_side_migration():
    objects = objects_of("migrate-from-ingress-nginx")
    config = config_of(objects)
    ext, internal = listener_set(config, "external"), listener_set(config, "internal")
    assert ext["adoptClasses"] == ["nginx"] and ext["ingressClasses"] == ["portico-external"]
    assert "publish" not in ext, "ingress-nginx still writes status: Portico must not"
    assert internal["publish"] == {"service": f"{NAMESPACE}/{RELEASE}-portico-internal"}
    assert "adoptClasses" not in internal
    assert ext["shareHostsAcrossNamespaces"] is True and "shareHostsAcrossNamespaces" not in internal
    # Adopted classes are someone else's objects: the chart creates no IngressClass for them.
    assert sorted(o["metadata"]["name"] for o in objects if o["kind"] == "IngressClass") == [
        "portico-external", "portico-internal"]
    assert all("adoptClasses" not in ls and "publish" in ls for ls in config_of(objects_of("default"))["listenerSets"])
    notes = _rendered("migrate-from-ingress-nginx")[1]
    assert "external also serves, whatever their controller: nginx" in notes
    assert "external writes no Ingress status" in notes and "internal writes no" not in notes
    assert "whatever their controller" not in _rendered("default")[1]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_services_target_their_own_listener_set_ports(scenario):
    objects = objects_of(scenario)
    config = config_of(objects)
    c = container(objects)
    container_ports = {p["containerPort"] for p in c["ports"]}
    pod_labels = workload(objects)["spec"]["template"]["metadata"]["labels"]
    admin_port = port_of(config["admin"]["address"])
    values = set_values(scenario)
    for name, wanted in values.items():
        svc = [o for o in objects if o["kind"] == "Service"
               and o["metadata"]["labels"].get("app.kubernetes.io/component") == name]
        if not wanted["service"]["enabled"]:
            assert svc == []
            continue
        assert len(svc) == 1
        svc = svc[0]
        ls = listener_set(config, name)
        ports = {p["port"]: p["targetPort"] for p in svc["spec"]["ports"]}
        expected = {80: port_of(b) for b in ls.get("http", [])[:1]} | {443: port_of(b) for b in ls.get("https", [])[:1]}
        assert ports == expected
        assert set(ports.values()) <= container_ports
        for other in (o for o in config["listenerSets"] if o["name"] != name):
            theirs = {port_of(b) for b in other.get("http", []) + other.get("https", [])}
            assert not set(ports.values()) & (theirs | {admin_port})
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        if "service" in ls.get("publish", {}):
            assert ls["publish"]["service"] == f"{NAMESPACE}/{svc['metadata']['name']}"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_service_settings_follow_values(scenario):
    objects = objects_of(scenario)
    prefix = merged_values(scenario)["metallb"]["annotationPrefix"]
    for name, ls in set_values(scenario).items():
        want = ls["service"]
        if not want["enabled"]:
            continue
        svc = next(o for o in objects if o["kind"] == "Service"
                   and o["metadata"]["labels"].get("app.kubernetes.io/component") == name)
        spec = svc["spec"]
        annotations = svc["metadata"].get("annotations") or {}
        assert spec["type"] == want["type"]
        if want["type"] == "LoadBalancer":
            assert spec["externalTrafficPolicy"] == want["externalTrafficPolicy"]
            assert spec.get("loadBalancerSourceRanges", []) == want["loadBalancerSourceRanges"]
            assert spec.get("loadBalancerIP", "") == want["loadBalancerIP"]
        else:
            assert "loadBalancerIP" not in spec and "loadBalancerSourceRanges" not in spec
        if want["metallbLoadBalancerIPs"]:
            assert annotations[f"{prefix}/loadBalancerIPs"] == ",".join(want["metallbLoadBalancerIPs"])
        else:
            assert f"{prefix}/loadBalancerIPs" not in annotations
        assert not [a for a in annotations if a.startswith("metallb.universe.tf/")] or prefix == "metallb.universe.tf"
        assert want["annotations"].items() <= annotations.items()


def test_metallb_fixed_ips_and_pool():
    objects = objects_of("metallb-fixed-ips")
    ext = only(objects, "Service", f"{RELEASE}-portico-external")
    internal = only(objects, "Service", f"{RELEASE}-portico-internal")
    assert ext["spec"]["loadBalancerIP"] == "192.168.1.240"
    assert ext["metadata"]["annotations"]["metallb.io/loadBalancerIPs"] == "192.168.1.240"
    assert internal["metadata"]["annotations"]["metallb.io/loadBalancerIPs"] == "192.168.1.241"
    assert internal["spec"]["externalTrafficPolicy"] == "Cluster"
    assert internal["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8", "192.168.0.0/16"]
    pool = only(objects, "IPAddressPool")
    assert pool["apiVersion"] == "metallb.io/v1beta1"
    assert pool["metadata"] == {**pool["metadata"], "name": "portico-vips", "namespace": "metallb-system"}
    assert pool["spec"] == {"addresses": ["192.168.1.240/32", "192.168.1.241/32"], "autoAssign": False}
    for cidr in pool["spec"]["addresses"]:
        ipaddress.ip_network(cidr)
    # every fixed VIP lies inside the pool the chart creates
    vips = [ipaddress.ip_address(a) for s in (ext, internal)
            for a in s["metadata"]["annotations"]["metallb.io/loadBalancerIPs"].split(",")]
    assert all(any(v in ipaddress.ip_network(c) for c in pool["spec"]["addresses"]) for v in vips)
    l2 = only(objects, "L2Advertisement")
    assert l2["apiVersion"] == "metallb.io/v1beta1"
    assert l2["metadata"]["namespace"] == "metallb-system"
    assert l2["spec"] == {"ipAddressPools": ["portico-vips"], "interfaces": ["eth0"]}


def test_metallb_pool_without_fixed_ips_selects_the_pool():
    objects = parse_manifests(render_raw({"metallb": {"ipAddressPool": {"enabled": True, "addresses": ["10.1.0.0/30"]}}}))
    for svc in (o for o in objects if o["kind"] == "Service"):
        assert svc["metadata"]["annotations"]["metallb.io/address-pool"] == f"{RELEASE}-portico"
    assert only(objects, "IPAddressPool")["metadata"]["name"] == f"{RELEASE}-portico"
    assert not [o for o in objects if o["kind"] == "L2Advertisement"]


def test_service_monitor():
    objects = objects_of("servicemonitor")
    sm = only(objects, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert sm["spec"]["endpoints"] == [{"port": "admin", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}]
    selected = [o for o in objects if o["kind"] == "Service"
                and sm["spec"]["selector"]["matchLabels"].items() <= o["metadata"]["labels"].items()]
    assert len(selected) == 1, "the ServiceMonitor must select exactly the admin Service"
    admin_svc = selected[0]
    assert admin_svc["spec"]["type"] == "ClusterIP"
    assert admin_svc["spec"]["ports"] == [{"name": "admin", "port": 9000, "targetPort": "admin", "protocol": "TCP"}]
    assert not [o for o in objects_of("default") if o["kind"] == "ServiceMonitor"]


# ---------------------------------------------------------------- RBAC


def rbac_rules(objects: list[dict]) -> set[tuple[str, str, str, str]]:
    found = set()
    for obj in objects:
        if obj["kind"] not in ("ClusterRole", "Role"):
            continue
        for rule in obj["rules"]:
            assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}, rule  # no nonResourceURLs
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    # A rule limited to named objects is recorded per name: "secrets/NAME".
                    named = [f"{resource}/{n}" for n in rule.get("resourceNames", [])] or [resource]
                    for verb in rule["verbs"]:
                        for r in named:
                            assert "*" not in (group, r, verb)
                            found.add((obj["kind"], group, r, verb))
    return found


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rbac_is_exactly_the_expected_set(scenario):
    objects = objects_of(scenario)
    values = merged_values(scenario)
    expected = set(EXPECTED_CLUSTER_RULES)
    if values["acme"]["enabled"]:
        expected |= EXPECTED_ACME_RULES
    if leader_elect_expected(values):
        expected |= EXPECTED_LEASE_RULES
    assert rbac_rules(objects) == expected
    sa_name = workload(objects)["spec"]["template"]["spec"]["serviceAccountName"]
    assert only(objects, "ServiceAccount")["metadata"]["name"] == sa_name
    roles = {(o["kind"], o["metadata"]["name"]) for o in objects if o["kind"] in ("ClusterRole", "Role")}
    bindings = [o for o in objects if o["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    assert {(b["roleRef"]["kind"], b["roleRef"]["name"]) for b in bindings} == roles
    for b in bindings:
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa_name, "namespace": NAMESPACE}]
    for role in (o for o in objects if o["kind"] == "Role"):
        assert role["metadata"]["namespace"] == NAMESPACE


def test_rbac_scenarios_differ_as_intended():
    assert EXPECTED_ACME_RULES <= rbac_rules(objects_of("acme-enabled"))
    # ACME alone (one replica, no election) still gets its namespaced Role, without leases.
    single_acme = rbac_rules(parse_manifests(render_raw(
        {"controller": {"replicas": 1}, "acme": {"enabled": True, "email": "a@example.com"}})))
    assert EXPECTED_ACME_RULES <= single_acme and not EXPECTED_LEASE_RULES & single_acme
    assert not EXPECTED_ACME_RULES & rbac_rules(objects_of("default"))
    assert EXPECTED_LEASE_RULES <= rbac_rules(objects_of("default"))
    assert not EXPECTED_LEASE_RULES & rbac_rules(objects_of("single-replica"))


def test_rbac_can_be_disabled():
    objects = parse_manifests(render_raw({"rbac": {"create": False}, "serviceAccount": {"create": False}}))
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
                                                    "ServiceAccount")]
    assert workload(objects)["spec"]["template"]["spec"]["serviceAccountName"] == "default"


# ---------------------------------------------------------------- values schema and render-time checks


@pytest.mark.parametrize(
    "bad,where",
    [
        ({"controller": {"replicas": "two"}}, "/controller/replicas"),
        ({"controller": {"replicas": 0}}, "/controller/replicas"),
        ({"controller": {"kind": "StatefulSet"}}, "/controller/kind"),
        ({"upstream": {"connectTimeout": "5 seconds"}}, "/upstream/connectTimeout"),
        ({"upstream": {"idleTimeout": "0s"}}, "/upstream/idleTimeout"),
        ({"listenerSets": {"external": {"ports": {"http": 80}}}}, "/listenerSets/external/ports/http"),
        ({"listenerSets": {"internal": {"ingressClass": {"name": "Bad_Name"}}}}, "/listenerSets/internal/ingressClass/name"),
        ({"listenerSets": {"external": {"service": {"externalTrafficPolicy": "Nearest"}}}},
         "/listenerSets/external/service/externalTrafficPolicy"),
        ({"listenerSets": {"external": {"service": {"metallbLoadBalancerIPs": ["not-an-ip"]}}}},
         "/listenerSets/external/service/metallbLoadBalancerIPs/0"),
        ({"acme": {"enabled": True}}, "/acme/email"),
        ({"acme": {"directory": "http://insecure.example.com/dir"}}, "/acme/directory"),
        ({"metallb": {"ipAddressPool": {"enabled": True}}}, "/metallb/ipAddressPool/addresses"),
        ({"replicaCount": 2}, "replicaCount"),
        ({"upstream": {"writeTimeout": "5s"}}, "writeTimeout"),
        ({"listenerSets": {"external": {"adoptClasses": ["Nginx"]}}}, "/listenerSets/external/adoptClasses/0"),
        ({"listenerSets": {"internal": {"adoptClasses": "nginx"}}}, "/listenerSets/internal/adoptClasses"),
        ({"listenerSets": {"external": {"publish": {"enabled": "no"}}}}, "/listenerSets/external/publish/enabled"),
    ],
)
def test_values_schema_rejects_bad_values_when_rendering(bad, where):
    with pytest.raises(helm.HelmValuesError) as info:
        render_raw(bad)
    assert where in str(info.value)


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"listenerSets": {"internal": {"ports": {"http": 8080}}}}, "must all differ"),
        ({"admin": {"port": 8443}}, "must all differ"),
        ({"admin": {"api": {"port": 9000}}}, "must all differ"),
        ({"listenerSets": {"internal": {"ingressClass": {"name": "portico-external"}}}}, "a class name may appear once"),
        ({"listenerSets": {"external": {"ingressClass": {"default": True}}, "internal": {"ingressClass": {"default": True}}}},
         "only one IngressClass"),
        ({"listenerSets": {"external": {"adoptClasses": ["portico-internal"]}}}, "a class name may appear once"),
        ({"listenerSets": {"external": {"adoptClasses": ["nginx"]}, "internal": {"adoptClasses": ["nginx"]}}},
         "a class name may appear once"),
        ({"metallb": {"l2Advertisement": {"enabled": True}}}, "l2Advertisement needs"),
    ],
)
def test_render_time_checks(bad, message):
    with pytest.raises(helm.HelmRenderError) as info:
        render_raw(bad)
    assert message in str(info.value)


def test_values_schema_is_draft7_and_accepts_every_values_file():
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    for scenario in SCENARIOS:
        errors = list(validator.iter_errors(merged_values(scenario)))
        assert not errors, (scenario, [e.message for e in errors])
    assert list(validator.iter_errors({**merged_values("default"), "controller": {
        **merged_values("default")["controller"], "replicas": "two"}}))


# ---------------------------------------------------------------- NOTES.txt


def test_notes_print_both_vips_and_a_curl_line():
    notes = _rendered("default")[1]
    for svc in (f"{RELEASE}-portico-external", f"{RELEASE}-portico-internal"):
        assert f"get service {svc} -o jsonpath='{{.status.loadBalancer.ingress[0].ip}}'" in notes
    assert re.search(r"^\s*curl .*http://\$EXTERNAL_IP/", notes, re.M)
    fixed = _rendered("metallb-fixed-ips")[1]
    assert "external: 192.168.1.240" in fixed and "internal: 192.168.1.241" in fixed
    assert re.search(r"^\s*curl .*http://192\.168\.1\.240/", fixed, re.M)
    custom = _rendered("custom")[1]
    assert "internal: none, Service gw-internal is of type ClusterIP" in custom


# ---------------------------------------------------------------- Dockerfile


def dockerfile_commands():
    return dockerfile.parse_string(DOCKERFILE.read_text())


def stages(commands):
    out = []
    for cmd in commands:
        if cmd.cmd == "FROM":
            out.append({"from": cmd, "cmds": []})
        else:
            assert out, f"{cmd.cmd} before the first FROM"
            out[-1]["cmds"].append(cmd)
    return out


def test_dockerfile_is_multi_stage_with_locked_release_build():
    st = stages(dockerfile_commands())
    assert len(st) >= 2
    builder, runtime = st[0], st[-1]
    assert re.fullmatch(r"rust:1\.\d+(\.\d+)?-slim-bookworm", builder["from"].value[0])
    build_cmds = [c.value[0] for c in builder["cmds"] if c.cmd == "RUN"]
    cargo = [c for c in build_cmds if "cargo build" in c]
    assert len(cargo) == 1
    assert "--locked" in cargo[0].split() and "--release" in cargo[0].split()
    assert runtime["from"].value[0] == "gcr.io/distroless/cc-debian12:nonroot"
    assert not [c for c in runtime["cmds"] if c.cmd == "RUN"], "the runtime stage has no shell to RUN with"
    stage_name = builder["from"].value[2] if len(builder["from"].value) == 3 else "0"
    copies = [c for c in runtime["cmds"] if c.cmd == "COPY"]
    assert any(f"--from={stage_name}" in c.flags and c.value[-1] == "/portico" for c in copies)


def test_dockerfile_runtime_user_entrypoint_and_ports():
    runtime = stages(dockerfile_commands())[-1]["cmds"]
    users = [c.value[0] for c in runtime if c.cmd == "USER"]
    assert users and users[-1].split(":")[0] in ("nonroot", "65532")
    entry = [c for c in runtime if c.cmd == "ENTRYPOINT"]
    assert len(entry) == 1 and entry[0].json and list(entry[0].value) == ["/portico"]
    cmd = [c for c in runtime if c.cmd == "CMD"]
    assert len(cmd) == 1 and cmd[0].json and list(cmd[0].value) == ["run", "--config", CONFIG_PATH]
    exposed = {int(p.split("/")[0]) for c in runtime if c.cmd == "EXPOSE" for p in c.value}
    chart_ports = {p["containerPort"] for p in container(objects_of("default"))["ports"]}
    assert exposed == chart_ports
    assert {8080, 8443, 9000} <= exposed


def test_dockerignore_keeps_what_cargo_needs():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for needed in ("src", "Cargo.toml", "Cargo.lock"):
        assert needed not in ignored
    assert "target" in ignored and ".git" in ignored


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_redirect_port_is_what_clients_use(scenario):
    """Behind the Services clients use 443; with hostNetwork they reach the container port itself."""
    values = user_values(scenario)
    host_network = values.get("controller", {}).get("hostNetwork", False)
    sets = set_values(scenario)
    for ls in config_of(objects_of(scenario))["listenerSets"]:
        override = sets[ls["name"]]["httpsRedirectPort"] if "httpsRedirectPort" in sets[ls["name"]] else None
        if override is not None:
            expected = override
        elif "https" not in ls:
            expected = None
        else:
            expected = port_of(ls["https"][0]) if host_network else 443
        assert ls.get("httpsRedirectPort") == expected, (scenario, ls)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_binary_accepts_every_rendered_config(scenario, tmp_path):
    """The rendered config.yaml goes through the real binary's parser (unknown keys are a startup error)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    target = Path(os.environ.get("CARGO_TARGET_DIR", root / "target"))
    binary = target / "debug" / "portico"
    assert binary.exists(), f"{binary} is missing: run ./scripts/test.sh (it builds the binary first)"
    config = config_of(objects_of(scenario))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    # Default certificates named by the config exist (the quickstart's example certificate under their names).
    example = yaml.safe_load((ROOT / "examples" / "quickstart" / "manifests" / "secure-tls.yaml").read_text())
    for ls in config["listenerSets"]:
        if "secret" in ls.get("defaultCertificate", {}):
            ns, _, name = ls["defaultCertificate"]["secret"].partition("/")
            secret = {**example, "metadata": {"name": name, "namespace": ns}}
            (manifests / f"{ns}-{name}.yaml").write_text(yaml.safe_dump(secret))
    out = subprocess.run([str(binary), "check", "--manifests", str(manifests), "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (scenario, out.stdout, out.stderr)



# ---------------------------------------------------------------- listener sets from values


def render(values: dict) -> list[dict]:
    return parse_manifests(render_raw(values))


def service_of(objects: list[dict], set_name: str) -> dict | None:
    found = [o for o in objects if o["kind"] == "Service"
             and o["metadata"]["labels"].get("app.kubernetes.io/component") == set_name]
    assert len(found) <= 1
    return found[0] if found else None


def test_listener_sets_any_names_and_every_option():
    objects = objects_of("listener-sets")
    config = config_of(objects)
    assert [ls["name"] for ls in config["listenerSets"]] == ["external", "legacy", "partner"]
    # internal: null drops the set everywhere.
    assert service_of(objects, "internal") is None
    assert "portico-internal" not in {o["metadata"]["name"] for o in objects if o["kind"] == "IngressClass"}
    assert not [p for p in container(objects)["ports"] if p["name"].startswith("int-")]

    ext = listener_set(config, "external")
    assert ext["trustedProxies"] == ["10.0.0.0/8"] and "proxyProtocol" not in ext
    assert ext["maxConnections"] == 20000
    assert (ext["headerReadTimeout"], ext["keepAliveTimeout"], ext["bodyReadTimeout"]) == ("10s", "30s", "2m")
    assert ext["httpsRedirectPort"] == 8443
    # listenerSetDefaults.defaultCertificate: a bare name is in the release namespace.
    assert ext["defaultCertificate"] == {"secret": f"{NAMESPACE}/wildcard-tls"}
    ext_svc = service_of(objects, "external")
    assert ext_svc["spec"]["type"] == "NodePort"
    assert {p["name"]: p["nodePort"] for p in ext_svc["spec"]["ports"]} == {"http": 30080, "https": 30443}

    partner = listener_set(config, "partner")
    assert "http" not in partner and partner["https"] == ["0.0.0.0:9443"]
    assert partner["proxyProtocol"] is True
    assert partner["trustedProxies"] == ["192.0.2.10", "2001:db8::/64"]
    assert partner["allowSourceRanges"] == ["198.51.100.0/24"]
    assert partner["denySourceRanges"] == ["198.51.100.7"]
    assert partner["errorPages"] == {"service": "partners/error-pages:8080", "codes": [404, 503]}
    assert "errorPages" not in ext
    assert partner["defaultCertificate"] == {"secret": "partners/partner-tls"}
    assert partner["ingressClasses"] == ["portico-partner"]
    assert partner["publish"] == {"service": f"{NAMESPACE}/{RELEASE}-portico-partner"}
    partner_svc = service_of(objects, "partner")
    assert partner_svc["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": 9443, "protocol": "TCP"}]
    assert partner_svc["spec"]["loadBalancerClass"] == "service.k8s.aws/nlb"
    assert partner_svc["metadata"]["annotations"] == {"service.beta.kubernetes.io/aws-load-balancer-proxy-protocol": "*"}
    ic = only(objects, "IngressClass", "portico-partner")
    assert ic["metadata"]["annotations"] == {"example.com/team": "partners"}

    legacy = listener_set(config, "legacy")
    assert "ingressClasses" not in legacy and legacy["adoptClasses"] == ["traefik"]
    assert legacy["publish"] == {"addresses": ["legacy.example.com"]}
    assert legacy["http"] == ["0.0.0.0:9080", "0.0.0.0:9081"], "extraConfig replaces the generated binds"
    assert "https" not in legacy and "httpsRedirectPort" not in legacy
    assert service_of(objects, "legacy") is None

    ports = {p["name"]: p["containerPort"] for p in container(objects)["ports"]}
    assert ports == {"ext-http": 8080, "ext-https": 8443, "old-http": 9080, "partner-https": 9443, "admin": 9000}


def test_a_new_set_gets_the_defaults():
    objects = render({"listenerSets": {"edge2": {"ports": {"http": 9090, "https": 9091}}}})
    config = config_of(objects)
    edge2 = listener_set(config, "edge2")
    assert edge2 == {"name": "edge2", "ingressClasses": ["portico-edge2"], "http": ["0.0.0.0:9090"],
                     "https": ["0.0.0.0:9091"], "httpsRedirectPort": 443,
                     "publish": {"service": f"{NAMESPACE}/{RELEASE}-portico-edge2"}}
    assert [ls["name"] for ls in config["listenerSets"]] == ["edge2", "external", "internal"]
    svc = only(objects, "Service", f"{RELEASE}-portico-edge2")
    assert svc["spec"]["type"] == "LoadBalancer" and svc["spec"]["externalTrafficPolicy"] == "Local"
    ic = only(objects, "IngressClass", "portico-edge2")
    assert ic["spec"] == {"controller": CONTROLLER} and "annotations" not in ic["metadata"]
    names = [p["name"] for p in container(objects)["ports"]]
    assert "edge2-http" in names and "edge2-https" in names
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) not in CRD_KINDS:
            kubernetes_validate.validate(strip_private(obj), KUBE_VERSION, strict=True)


def test_long_set_names_get_short_port_names():
    objects = render({"listenerSets": {"partner-network": {"ports": {"http": 9090}}}})
    names = [p["name"] for p in container(objects)["ports"]]
    assert "partner-n-http" in names
    assert all(len(n) <= 15 for n in names)


@pytest.mark.parametrize("off", [{"enabled": False}, None])
def test_a_set_can_be_dropped(off):
    objects = render({"listenerSets": {"internal": off}})
    assert [ls["name"] for ls in config_of(objects)["listenerSets"]] == ["external"]
    assert service_of(objects, "internal") is None
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "IngressClass"] == ["portico-external"]
    assert "int-http" not in [p["name"] for p in container(objects)["ports"]]
    assert "internal" not in _notes(render_raw({"listenerSets": {"internal": off}}))


def _notes(manifests: dict[str, str]) -> str:
    return next(v for k, v in manifests.items() if k.endswith("NOTES.txt"))


def test_set_values_override_defaults_even_when_false():
    """A set's own false/0/empty wins over listenerSetDefaults (Helm's mergeOverwrite would keep the default)."""
    config = config_of(render({
        "listenerSetDefaults": {"proxyProtocol": True, "trustedProxies": ["10.0.0.0/8"],
                                "allowSourceRanges": ["10.0.0.0/8"], "shareHostsAcrossNamespaces": True},
        "listenerSets": {"internal": {"proxyProtocol": False, "allowSourceRanges": [],
                                      "shareHostsAcrossNamespaces": False}},
    }))
    ext, internal = listener_set(config, "external"), listener_set(config, "internal")
    assert ext["proxyProtocol"] is True and ext["allowSourceRanges"] == ["10.0.0.0/8"]
    assert ext["shareHostsAcrossNamespaces"] is True
    assert "proxyProtocol" not in internal and "allowSourceRanges" not in internal
    assert "shareHostsAcrossNamespaces" not in internal
    assert internal["trustedProxies"] == ["10.0.0.0/8"]


def test_old_values_files_keep_their_meaning():
    """The two-set values of earlier chart versions render the same sets, ports, classes and Services."""
    objects = objects_of("metallb-fixed-ips")
    config = config_of(objects)
    assert [ls["name"] for ls in config["listenerSets"]] == ["external", "internal"]
    assert [port_of(b) for ls in config["listenerSets"] for b in ls["http"] + ls["https"]] == [8080, 8443, 8081, 8444]
    assert {p["name"] for p in container(objects)["ports"]} == {"ext-http", "ext-https", "int-http", "int-https", "admin"}


def test_default_certificate_from_files():
    config = config_of(render({"listenerSets": {"external": {"defaultCertificate": {
        "certFile": "/etc/tls/tls.crt", "keyFile": "/etc/tls/tls.key"}}}}))
    assert listener_set(config, "external")["defaultCertificate"] == {"certFile": "/etc/tls/tls.crt",
                                                                      "keyFile": "/etc/tls/tls.key"}
    assert "defaultCertificate" not in listener_set(config, "internal")


def test_publish_service_override_and_status_without_a_service():
    config = config_of(render({"listenerSets": {
        "external": {"publish": {"service": "other/their-lb"}},
        "internal": {"service": {"enabled": False}, "publish": {"enabled": False}}}}))
    assert listener_set(config, "external")["publish"] == {"service": "other/their-lb"}
    assert "publish" not in listener_set(config, "internal")


def test_upstream_retry_budget_and_raw_config():
    config = config_of(objects_of("listener-sets"))
    assert config["upstream"] == {"connectTimeout": "5s", "responseHeaderTimeout": "60s", "idleTimeout": "2m",
                                  "readTimeout": "5m", "retryBudget": {"percent": 10, "window": "30s"}}
    assert "readTimeout" not in config_of(objects_of("default"))["upstream"]
    raw = config_of(render({"config": {"shutdown": {"gracePeriod": "10s"}, "upstream": {"retryBudget": {"minPerSecond": 0}}}}))
    assert raw["shutdown"] == {"drainDelay": "0s", "gracePeriod": "10s"}
    assert raw["upstream"]["retryBudget"] == {"minPerSecond": 0}


def test_extra_args_env_and_volumes():
    objects = objects_of("listener-sets")
    c = container(objects)
    assert c["args"][-2:] == ["--access-log-sample", "10"]
    assert {"name": "RUST_LOG", "value": "info,portico=debug"} in c["env"]
    assert {"name": "ca", "mountPath": "/etc/portico-ca", "readOnly": True} in c["volumeMounts"]
    pod = workload(objects)["spec"]["template"]["spec"]
    assert {"name": "ca", "configMap": {"name": "private-ca"}} in pod["volumes"]
    assert "env" not in container(objects_of("default"))


# ---------------------------------------------------------------- drain on shutdown


def lifecycle_and_grace(objects: list[dict]) -> tuple[dict | None, int, dict]:
    pod = workload(objects)["spec"]["template"]["spec"]
    return pod["containers"][0].get("lifecycle"), pod["terminationGracePeriodSeconds"], config_of(objects)["shutdown"]


def test_drain_is_a_prestop_sleep_by_default():
    lifecycle, grace, shutdown = lifecycle_and_grace(objects_of("default"))
    assert lifecycle == {"preStop": {"sleep": {"seconds": 10}}}
    assert shutdown == {"drainDelay": "0s", "gracePeriod": "25s"}, "the binary must not wait a second time"
    assert grace == 10 + 25 + 5
    lifecycle, grace, shutdown = lifecycle_and_grace(objects_of("listener-sets"))
    assert lifecycle == {"preStop": {"sleep": {"seconds": 20}}}
    assert shutdown == {"drainDelay": "0s", "gracePeriod": "40s"} and grace == 75


@pytest.mark.parametrize(
    "shutdown,lifecycle,drain,grace",
    [
        ({"preStopSleep": False}, None, "10s", 40),
        ({"drainDelay": "0s"}, None, "0s", 30),
        ({"drainDelay": "1500ms"}, {"preStop": {"sleep": {"seconds": 2}}}, "0s", 32),
        ({"drainDelay": "1m", "gracePeriod": "1m"}, {"preStop": {"sleep": {"seconds": 60}}}, "0s", 125),
    ],
)
def test_drain_settings(shutdown, lifecycle, drain, grace):
    got_lifecycle, got_grace, got_shutdown = lifecycle_and_grace(render({"shutdown": shutdown}))
    assert got_lifecycle == lifecycle
    assert got_shutdown["drainDelay"] == drain
    assert got_grace == grace


def test_prestop_sleep_needs_kubernetes_1_30():
    with pytest.raises(helm.HelmRenderError) as info:
        render_raw({}, kube_version="v1.29.0")
    assert "shutdown.preStopSleep needs Kubernetes >= 1.30" in str(info.value)
    old = parse_manifests(render_raw({"shutdown": {"preStopSleep": False}}, kube_version="v1.29.0"))
    assert "lifecycle" not in container(old) and config_of(old)["shutdown"]["drainDelay"] == "10s"
    assert container(parse_manifests(render_raw({}, kube_version="v1.30.0")))["lifecycle"]


# ---------------------------------------------------------------- autoscaling and NetworkPolicy


def test_hpa():
    objects = objects_of("observability")
    hpa = only(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": workload(objects)["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    targets = {m["resource"]["name"]: m["resource"]["target"] for m in hpa["spec"]["metrics"]}
    assert targets == {"cpu": {"type": "Utilization", "averageUtilization": 70},
                       "memory": {"type": "Utilization", "averageUtilization": 80}}
    assert hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 300}}
    assert "replicas" not in workload(objects)["spec"], "the HPA owns replicas"
    assert not [o for o in objects_of("default") if o["kind"] == "HorizontalPodAutoscaler"]
    # One configured replica but an HPA that can add more: leader election is on.
    one = render({"controller": {"replicas": 1}, "autoscaling": {"enabled": True}})
    assert "--leader-elect" in container(one)["args"]


def test_network_policy():
    objects = objects_of("observability")
    np = only(objects, "NetworkPolicy")
    assert np["spec"]["policyTypes"] == ["Ingress"]
    assert np["spec"]["podSelector"]["matchLabels"].items() <= workload(objects)["spec"]["template"]["metadata"]["labels"].items()
    listeners, admin = np["spec"]["ingress"]
    config = config_of(objects)
    binds = {port_of(b) for ls in config["listenerSets"] for b in ls.get("http", []) + ls.get("https", [])}
    assert {p["port"] for p in listeners["ports"]} == binds and "from" not in listeners
    assert admin["ports"] == [{"port": port_of(config["admin"]["address"]), "protocol": "TCP"}]
    assert admin["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    # No adminFrom: the admin port gets no rule at all, so only host traffic (probes) reaches it.
    closed = only(render({"networkPolicy": {"enabled": True}}), "NetworkPolicy")
    assert len(closed["spec"]["ingress"]) == 1 and 9000 not in {p["port"] for p in closed["spec"]["ingress"][0]["ports"]}
    assert not [o for o in objects_of("default") if o["kind"] == "NetworkPolicy"]


# ---------------------------------------------------------------- alerts and dashboard


METRICS_RS = ROOT / "src" / "metrics.rs"


@functools.lru_cache(maxsize=None)
def exported_metrics() -> frozenset[str]:
    """Metric names the binary exports (src/metrics.rs), histogram series included."""
    names = set(re.findall(r"\b(portico_[a-z_]+)", METRICS_RS.read_text()))
    return frozenset(names | {f"{n}_{suffix}" for n in names for suffix in ("bucket", "sum", "count")})


def selectors(expr: str) -> list:
    found = []
    promql_parser.walk(promql_parser.parse(expr),
                       lambda n: found.append(n) if isinstance(n, promql_parser.VectorSelector) else None)
    assert found, expr
    return found


def rule_group(objects: list[dict]) -> list[dict]:
    rule = only(objects, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    (group,) = rule["spec"]["groups"]
    return group["rules"]


def test_prometheus_rule_alerts_use_exported_metrics_and_select_the_release():
    objects = objects_of("observability")
    rules = rule_group(objects)
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    schema = json.loads((CHART / "values.schema.json").read_text())
    every = schema["properties"]["metrics"]["properties"]["prometheusRule"]["properties"]["disabled"]["items"]["enum"]
    assert set(alerts) == set(every) - {"PorticoAcmeFailing"}, "disabled alerts are left out"
    assert {"PorticoCertificateExpiring", "PorticoHighErrorRatio", "PorticoBackendNoHealthyEndpoints",
            "PorticoObjectsRejected"} <= set(alerts)
    job = f"{only(objects, 'ServiceMonitor')['metadata']['name']}-admin"
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        for sel in selectors(rule["expr"]):
            assert sel.name == "up" or sel.name in exported_metrics(), (name, sel.name)
            matchers = {(m.name, m.value) for m in sel.matchers.matchers}
            assert {("job", job), ("namespace", NAMESPACE)} <= matchers, (name, matchers)
        # Labels the description names survive the expression's aggregation.
        expr = promql_parser.parse(rule["expr"])
        for label in re.findall(r"\$labels\.([a-z_]+)", rule["annotations"]["description"]):
            assert re.search(rf"\b{label}\b", rule["expr"]) or label == "instance", (name, label, expr)
    assert rules[-1] == {"record": "portico:requests:rate5m", "expr": "sum by (set) (rate(portico_requests_total[5m]))"}
    assert only(objects, "PrometheusRule")["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_prometheus_rule_thresholds_and_selector():
    rules = rule_group(render({"metrics": {"prometheusRule": {
        "enabled": True, "selector": 'job="portico"', "certificateExpiryDays": 21, "errorRatio": 0.2}}}))
    alerts = {r["alert"]: r for r in rules}
    assert "< 21 * 86400" in alerts["PorticoCertificateExpiring"]["expr"]
    assert ") > 0.2" in alerts["PorticoHighErrorRatio"]["expr"]
    for rule in rules:
        for sel in selectors(rule["expr"]):
            assert {(m.name, m.value) for m in sel.matchers.matchers} >= {("job", "portico")}
            assert "namespace" not in {m.name for m in sel.matchers.matchers}
    assert "PorticoAcmeFailing" in alerts


def dashboard_of(objects: list[dict]) -> dict:
    cms = [o for o in objects if o["kind"] == "ConfigMap" and "portico.json" in o.get("data", {})]
    assert len(cms) == 1
    return json.loads(cms[0]["data"]["portico.json"])


GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$namespace": "ingress", "$job": "edge-portico-admin",
                     "$set": "external", "$ingress": "default/web"}


def dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def test_grafana_dashboard_queries_parse_and_use_exported_metrics():
    objects = objects_of("observability")
    cm = next(o for o in objects if o["kind"] == "ConfigMap" and "portico.json" in o.get("data", {}))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == NAMESPACE
    dashboard = dashboard_of(objects)
    assert dashboard["uid"] == "portico" and dashboard["title"] == "Portico"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 20
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append((variable["name"], re.sub(r"^label_values\((.*), *[a-z_]+\)$", r"\1", variable["definition"])))
    for title, expr in queries:
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, (title, expr)
        for sel in selectors(expr):
            assert sel.name in exported_metrics(), (title, sel.name)
    exprs = " ".join(e for _, e in dashboard_queries(dashboard))
    # What the issue asks for: per Ingress rate and errors, quantiles, upstream errors, certificates.
    assert "sum by (ingress) (rate(portico_requests_total" in exprs
    assert 'class="5xx"' in exprs
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}," in exprs
    assert "portico_upstream_errors_total" in exprs and "portico_certificate_expiry_timestamp_seconds" in exprs
    assert not [o for o in objects_of("default") if o["kind"] == "ConfigMap" and "portico.json" in o.get("data", {})]


def test_grafana_dashboard_namespace():
    objects = render({"metrics": {"grafanaDashboard": {"enabled": True, "namespace": "grafana"}}})
    cm = next(o for o in objects if o["kind"] == "ConfigMap" and "portico.json" in o.get("data", {}))
    assert cm["metadata"]["namespace"] == "grafana"


def test_metallb_annotation_prefix_for_older_metallb():
    objects = render({"metallb": {"annotationPrefix": "metallb.universe.tf"},
                      "listenerSets": {"external": {"service": {"metallbLoadBalancerIPs": ["192.168.1.240"]}}}})
    assert service_of(objects, "external")["metadata"]["annotations"] == {
        "metallb.universe.tf/loadBalancerIPs": "192.168.1.240"}
    for scenario in SCENARIOS:
        for obj in objects_of(scenario):
            assert not [a for a in (obj["metadata"].get("annotations") or {}) if a.startswith("metallb.universe.tf/")]


# ---------------------------------------------------------------- new values: refusals


@pytest.mark.parametrize(
    "bad,where",
    [
        ({"listenerSets": {"Bad_Set": {"ports": {"http": 9090}}}}, "invalid propertyName 'Bad_Set'"),
        ({"listenerSets": {"edge2": {"ports": {"http": 80}}}}, "/listenerSets/edge2/ports/http"),
        ({"listenerSets": {"edge2": {"colour": "blue"}}}, "/listenerSets/edge2"),
        ({"listenerSetDefaults": {"maxConnection": 5}}, "/listenerSetDefaults"),
        ({"listenerSets": {"external": {"trustedProxies": ["proxy.example.com"]}}}, "/listenerSets/external/trustedProxies/0"),
        ({"listenerSets": {"external": {"allowSourceRanges": "10.0.0.0/8"}}}, "/listenerSets/external/allowSourceRanges"),
        ({"listenerSets": {"external": {"denySourceRanges": ["bad"]}}}, "/listenerSets/external/denySourceRanges/0"),
        ({"listenerSets": {"external": {"errorPages": {"service": "errors", "codes": [404]}}}},
         "/listenerSets/external/errorPages"),
        ({"listenerSets": {"external": {"errorPages": {"service": "ns/errors", "codes": [200]}}}},
         "/listenerSets/external/errorPages"),
        ({"listenerSets": {"external": {"maxConnections": 0}}}, "/listenerSets/external/maxConnections"),
        ({"listenerSets": {"external": {"headerReadTimeout": "0s"}}}, "/listenerSets/external/headerReadTimeout"),
        ({"listenerSets": {"external": {"keepAliveTimeout": "5 s"}}}, "/listenerSets/external/keepAliveTimeout"),
        ({"listenerSets": {"external": {"proxyProtocol": "yes"}}}, "/listenerSets/external/proxyProtocol"),
        ({"listenerSets": {"external": {"httpsRedirectPort": 0}}}, "/listenerSets/external/httpsRedirectPort"),
        ({"listenerSets": {"external": {"portNamePrefix": "much-too-long"}}}, "/listenerSets/external/portNamePrefix"),
        ({"listenerSets": {"external": {"defaultCertificate": {"secret": "a/b/c"}}}},
         "/listenerSets/external/defaultCertificate/secret"),
        ({"listenerSets": {"external": {"defaultCertificate": {"certFile": "relative.pem"}}}},
         "/listenerSets/external/defaultCertificate/certFile"),
        ({"listenerSets": {"external": {"service": {"nodePorts": {"http": 0}}}}},
         "/listenerSets/external/service/nodePorts/http"),
        ({"listenerSets": {"external": {"ingressClass": {"enabled": "no"}}}}, "/listenerSets/external/ingressClass/enabled"),
        ({"upstream": {"readTimeout": "0s"}}, "/upstream/readTimeout"),
        ({"upstream": {"retryBudget": {"percent": 150}}}, "/upstream/retryBudget/percent"),
        ({"upstream": {"retryBudget": {"burst": 3}}}, "/upstream/retryBudget"),
        ({"shutdown": {"drainDelay": "soon"}}, "/shutdown/drainDelay"),
        ({"shutdown": {"gracePeriod": "0s"}}, "/shutdown/gracePeriod"),
        ({"shutdown": {"preStopSleep": "yes"}}, "/shutdown/preStopSleep"),
        ({"controller": {"terminationGracePeriodSeconds": -1}}, "/controller/terminationGracePeriodSeconds"),
        ({"extraArgs": [""]}, "/extraArgs/0"),
        ({"extraArgs": "--workers 2"}, "/extraArgs"),
        ({"extraVolumeMounts": [{"name": "ca"}]}, "/extraVolumeMounts/0"),
        ({"extraVolumes": [{"configMap": {"name": "x"}}]}, "/extraVolumes/0"),
        ({"config": "admin: {}"}, "/config"),
        ({"autoscaling": {"minReplicas": 0}}, "/autoscaling/minReplicas"),
        ({"autoscaling": {"targetCPUUtilizationPercentage": "70%"}}, "/autoscaling/targetCPUUtilizationPercentage"),
        ({"networkPolicy": {"adminFrom": "monitoring"}}, "/networkPolicy/adminFrom"),
        ({"networkPolicy": {"egress": []}}, "/networkPolicy"),
        ({"metrics": {"prometheusRule": {"errorRatio": 2}}}, "/metrics/prometheusRule/errorRatio"),
        ({"metrics": {"prometheusRule": {"certificateExpiryDays": 0}}}, "/metrics/prometheusRule/certificateExpiryDays"),
        ({"metrics": {"prometheusRule": {"disabled": ["PorticoNope"]}}}, "/metrics/prometheusRule/disabled/0"),
        ({"metrics": {"grafanaDashboard": {"namespace": "Grafana"}}}, "/metrics/grafanaDashboard/namespace"),
        ({"metallb": {"annotationPrefix": "metallb.example.com"}}, "/metallb/annotationPrefix"),
        ({"acme": {"externalAccountBinding": {"keyId": "k", "hmacKey": "not base64url!"}}},
         "/acme/externalAccountBinding/hmacKey"),
        ({"acme": {"caRoot": "ca.pem"}}, "/acme/caRoot"),
    ],
)
def test_values_schema_rejects_bad_new_values(bad, where):
    with pytest.raises(helm.HelmValuesError) as info:
        render_raw(bad)
    assert where in str(info.value)


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"listenerSets": {"external": {"proxyProtocol": True}}}, "proxyProtocol needs trustedProxies"),
        ({"listenerSets": {"external": {"defaultCertificate": {"secret": "x", "certFile": "/a", "keyFile": "/b"}}}},
         "not both"),
        ({"listenerSets": {"external": {"defaultCertificate": {"certFile": "/a"}}}}, "certFile and keyFile go together"),
        ({"listenerSets": {"edge2": {"ingressClass": {"name": "edge2"}}}}, "listenerSets.edge2.ports: give http, https or both"),
        ({"listenerSets": {"edge2": {"ports": {"http": 8080}}}}, "must all differ"),
        ({"listenerSets": {"edge2": {"ports": {"http": 9090}, "ingressClass": {"default": True}},
                           "external": {"ingressClass": {"default": True}}}}, "only one IngressClass"),
        ({"listenerSets": {"edge2": {"ports": {"http": 9090}, "ingressClass": {"enabled": False}}}},
         "adoptClasses must name at least one class"),
        ({"listenerSets": {"edge2": {"ports": {"http": 9090}, "adoptClasses": ["portico-external"]}}},
         "a class name may appear once"),
        ({"listenerSets": {"edge2": {"ports": {"http": 9090}, "portNamePrefix": "ext"}}}, "prefixes must differ"),
        ({"listenerSets": {"partners-a": {"ports": {"http": 9090}}, "partners-b": {"ports": {"http": 9091}}}},
         "prefixes must differ"),
        ({"listenerSets": {"external": {"enabled": False}, "internal": {"enabled": False}}}, "at least one listener set"),
        ({"listenerSets": {"internal": {"service": {"enabled": False}}}}, "without a Service"),
        ({"acme": {"enabled": True, "email": "a@example.com", "listenerSets": ["partner"]}}, "not an enabled listener set"),
        ({"acme": {"enabled": True, "email": "a@example.com"}, "listenerSets": {"external": {"ports": {"http": None}}}},
         "has no plain-HTTP port"),
        ({"acme": {"externalAccountBinding": {"keyId": "kid"}}}, "keyId and hmacKey go together"),
        ({"config": {"listenerSets": []}}, "config.listenerSets"),
        ({"metrics": {"prometheusRule": {"enabled": True}}}, "enable metrics.serviceMonitor, or set metrics.prometheusRule.selector"),
        ({"controller": {"terminationGracePeriodSeconds": 30}}, "must cover shutdown.drainDelay + shutdown.gracePeriod (35s)"),
        ({"autoscaling": {"enabled": True}, "controller": {"kind": "DaemonSet"}}, "autoscaling needs controller.kind: Deployment"),
        ({"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}}, "maxReplicas must be at least"),
        ({"fullnameOverride": "a" * 50, "listenerSets": {"very-long-set-name": {"ports": {"http": 9090},
                                                                                "portNamePrefix": "long"}}},
         "longer than 63 characters"),
    ],
)
def test_render_time_checks_for_new_values(bad, message):
    with pytest.raises(helm.HelmRenderError) as info:
        render_raw(bad)
    assert message in str(info.value)


def test_gateway_class_and_gateways_mapped_onto_listener_sets():
    # Without the Gateway API in the cluster and no Gateway asked for: no GatewayClass (it could not be applied).
    assert not [o for o in render({}) if o["kind"] in ("GatewayClass", "Gateway")]
    objects = render({
        "listenerSets": {
            "external": {"gateway": {"enabled": True, "hostname": "*.example.com", "certificateRefs": ["web-tls", "certs/shared"]}},
            "internal": {"gateway": {"enabled": True, "name": "inside", "allowedRoutes": {"namespaces": {"from": "Same"}}}},
        }
    })
    gc = only(objects, "GatewayClass", "portico")
    assert gc["spec"] == {"controllerName": "portico.dev/gateway-controller"}
    ext = only(objects, "Gateway", f"{RELEASE}-portico-external")
    assert ext["metadata"]["namespace"] == NAMESPACE
    assert ext["spec"]["gatewayClassName"] == "portico"
    http, https = ext["spec"]["listeners"]
    assert (http["name"], http["protocol"], http["port"], http["hostname"]) == ("http", "HTTP", 80, "*.example.com")
    assert http["allowedRoutes"] == {"namespaces": {"from": "All"}}
    assert (https["protocol"], https["port"]) == ("HTTPS", 443)
    assert https["tls"]["certificateRefs"] == [
        {"kind": "Secret", "name": "web-tls"},
        {"kind": "Secret", "namespace": "certs", "name": "shared"},
    ]
    inside = only(objects, "Gateway", "inside")
    assert [l["name"] for l in inside["spec"]["listeners"]] == ["http"], "no certificateRefs: no HTTPS listener"
    assert inside["spec"]["listeners"][0]["allowedRoutes"] == {"namespaces": {"from": "Same"}}
    config = config_of(objects)
    assert listener_set(config, "external")["gateways"] == [f"{NAMESPACE}/{RELEASE}-portico-external"]
    assert listener_set(config, "internal")["gateways"] == [f"{NAMESPACE}/inside"]
    # The class alone, forced on; or off even with Gateways (another release owns it).
    assert only(render({"gatewayAPI": {"gatewayClass": {"enabled": True, "name": "edge"}}}), "GatewayClass", "edge")
    assert not [o for o in render({"gatewayAPI": {"gatewayClass": {"enabled": False}}}) if o["kind"] == "GatewayClass"]
