"""deploy/kubernetes: generated files up to date, the PrometheusRule equal to the rule bundle,
every manifest valid against Kubernetes' schemas (offline), and the pieces consistent with
each other and with mlmon's own config."""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import urllib.parse
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from helpers import require_binary
from mlmon.core.config import load_config, split_address
from mlmon.core.monitor import Monitor

from bundle import outputs
from bundle.params import Params

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "kubernetes"


def _generator():
    spec = importlib.util.spec_from_file_location("k8s_generate", K8S / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


def test_generated_manifests_are_up_to_date():
    gen = _generator()
    for name, render in gen.OUTPUTS.items():
        assert (K8S / name).read_text() == render(), "run python -m bundle"
    # and the bundle hands the generator the rules it renders, with the same result
    rendered = outputs.render(Params())
    for name in gen.OUTPUTS:
        assert rendered[Path("deploy/kubernetes") / name] == (K8S / name).read_text()


def test_the_prometheusrule_holds_exactly_the_rule_bundle(tmp_path):
    groups = load("prometheusrule.yaml")["spec"]["groups"]
    bundle = []
    for path in sorted((ROOT / "prometheus/rules").glob("*.yml")):
        bundle += yaml.safe_load(path.read_text())["groups"]
    assert groups == bundle
    assert sum(len(g["rules"]) for g in groups) > 100
    # and the operator's Prometheus would load them
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": groups}))
    out = subprocess.run(
        [require_binary("promtool"), "check", "rules", str(rules)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(
    "name",
    ["deployment.yaml", "service.yaml", "configmap.yaml", "store.yaml", "store-service.yaml"],
)
def test_core_manifests_are_valid_kubernetes(name):
    doc = load(name)
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_validator_rejects_a_broken_deployment():
    doc = load("deployment.yaml")
    bad = copy.deepcopy(doc)
    bad["spec"]["template"]["spec"]["containers"][1]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, kubernetes_validate.latest_version(), strict=True)
    bad = copy.deepcopy(doc)
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, kubernetes_validate.latest_version(), strict=True)


# The parts of the prometheus-operator's monitoring.coreos.com/v1 API these manifests use,
# strict: a misspelt or misplaced key fails.
_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}
_DURATION = {"type": "string", "pattern": "^(0|(([0-9]+)(y|w|d|h|m|s|ms))+)$"}
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {
                    "type": "object",
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        }
                    },
                    "additionalProperties": False,
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                        },
                        "additionalProperties": False,
                    },
                },
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}
_RULE = {
    "type": "object",
    "required": ["expr"],
    "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
    "properties": {
        "record": {"type": "string"},
        "alert": {"type": "string"},
        "expr": {"type": ["string", "integer"]},
        "for": _DURATION,
        "keep_firing_for": _DURATION,
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}
PROMETHEUS_RULE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string"},
                            "interval": _DURATION,
                            "rules": {"type": "array", "items": _RULE},
                        },
                        "additionalProperties": False,
                    },
                }
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}


def test_operator_resources_match_their_schema():
    jsonschema.validate(load("servicemonitor.yaml"), SERVICE_MONITOR)
    jsonschema.validate(load("prometheusrule.yaml"), PROMETHEUS_RULE)
    bad = load("servicemonitor.yaml")
    bad["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SERVICE_MONITOR)
    bad = load("prometheusrule.yaml")
    bad["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, PROMETHEUS_RULE)


def test_the_pieces_fit_together(tmp_path):
    dep, svc = load("deployment.yaml"), load("service.yaml")
    cm, sm = load("configmap.yaml"), load("servicemonitor.yaml")
    kust = load("kustomization.yaml")
    assert sorted(kust["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    pod = dep["spec"]["template"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    # the job the alerts and dashboards select (bundle/params.py)
    job = svc["metadata"]["labels"][sm["spec"]["jobLabel"]]
    assert Params().job_selector == f'job="{job}"'
    sidecar = next(c for c in pod["spec"]["containers"] if c["name"] == "mlmon")
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    svc_ports = {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]}
    assert set(svc_ports.values()) <= set(ports)
    assert sm["spec"]["endpoints"][0]["port"] in svc_ports

    # mlmon's config as the pod sees it: the ConfigMap's items mounted at /etc/mlmon
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "mlmon-config")
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    etc = tmp_path / "etc"
    for item in volume["configMap"]["items"]:
        (etc / item["path"]).parent.mkdir(parents=True, exist_ok=True)
        (etc / item["path"]).write_text(cm["data"][item["key"]])
    mount = next(m for m in sidecar["volumeMounts"] if m["name"] == "mlmon-config")
    assert (
        sidecar["args"][sidecar["args"].index("--config") + 1] == mount["mountPath"] + "/mlmon.yml"
    )
    cfg = load_config(etc / "mlmon.yml")
    assert split_address(cfg.server.listen_address)[1] == ports["metrics"]
    assert split_address(cfg.proxy.listen_address)[1] == ports["http"]
    model = next(c for c in pod["spec"]["containers"] if c["name"] == "model")
    upstream_port = cfg.proxy.upstream_host_port[1]
    assert upstream_port == model["ports"][0]["containerPort"]
    state = next(m for m in sidecar["volumeMounts"] if m["name"] == "mlmon-state")
    assert str(cfg.server.snapshot_dir) == state["mountPath"]
    assert Monitor(cfg).models["credit-risk"].schema.config.name == "credit-risk"
    assert cfg.proxy.routes["credit-risk"].inputs == tuple(f.name for f in cfg.models[0].features)

    # the sidecars' store is the store Service, which selects the store's pods and port
    store, store_svc = load("store.yaml"), load("store-service.yaml")
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    url = urllib.parse.urlsplit(env["MLMON_STORE_URL"])
    assert url.scheme == "redis" and url.hostname == store_svc["metadata"]["name"]
    (port,) = [p for p in store_svc["spec"]["ports"] if p["port"] == url.port]
    store_pod = store["spec"]["template"]
    assert store_svc["spec"]["selector"].items() <= store_pod["metadata"]["labels"].items()
    assert (
        store["spec"]["selector"]["matchLabels"].items() <= store_pod["metadata"]["labels"].items()
    )
    (valkey,) = store_pod["spec"]["containers"]
    assert port["targetPort"] in {p["name"] for p in valkey["ports"]}
    # the records nearest their end go first when the store is full (docs/fleet.md)
    assert valkey["args"][valkey["args"].index("--maxmemory-policy") + 1] == "volatile-ttl"
