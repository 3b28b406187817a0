"""What a job file may contain: the blocks shoal maps, and why the rest of Nomad's are refused.

Every attribute or block of a job file is either decoded into the model or
reported: as unsupported (a Nomad feature shoal does not have, with the reason
below) or as unknown (not Nomad at all; likely a typo).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BlockKind:
    labelled: bool = False  # job "web", group "cache", task "redis", port "db", target "r1"
    repeated: bool = False  # may appear more than once (labelled blocks always may)


_L = BlockKind(labelled=True)
_R = BlockKind(repeated=True)
_S = BlockKind()

# Child blocks of each block type ("" is the file itself). Maps (meta, env, config)
# are attributes that may also be written as a block; they are not listed here.
CHILDREN: dict[str, dict[str, BlockKind]] = {
    "": {"job": _L},
    "job": {"group": _L, "constraint": _R, "affinity": _R, "spread": _R, "reschedule": _S},
    "group": {
        "task": _L,
        "constraint": _R,
        "affinity": _R,
        "spread": _R,
        "restart": _S,
        "reschedule": _S,
        "network": _S,
        "service": _R,
        "ephemeral_disk": _S,
    },
    "task": {
        "constraint": _R,
        "affinity": _R,
        "restart": _S,
        "resources": _S,
        "service": _R,
        "lifecycle": _S,
        "logs": _S,
    },
    "spread": {"target": _L},
    "network": {"port": _L},
    "service": {"check": _R, "check_restart": _S},
    "check": {"check_restart": _S},
}

# Attributes shoal maps, per block type.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "job": ("name", "type", "priority", "namespace", "region", "datacenters", "node_pool", "meta"),
    "group": ("count", "meta"),
    "task": ("driver", "config", "env", "user", "kill_timeout", "kill_signal", "meta", "leader"),
    "resources": ("cpu", "memory", "memory_max"),
    "restart": ("attempts", "interval", "delay", "mode"),
    "reschedule": ("attempts", "interval", "delay", "delay_function", "max_delay", "unlimited"),
    "network": ("mode", "name"),
    "port": ("static", "to"),
    "service": ("name", "port", "tags", "canary_tags", "provider", "address_mode"),
    "check": ("name", "type", "port", "path", "command", "args", "interval", "timeout", "task"),
    "check_restart": ("limit", "grace", "ignore_warnings"),
    "lifecycle": ("hook", "sidecar"),
    "constraint": ("attribute", "operator", "value", *("distinct_hosts", "distinct_property", "regexp",
                   "version", "semver", "set_contains", "set_contains_all", "set_contains_any")),
    "affinity": ("attribute", "operator", "value", "weight"),
    "spread": ("attribute", "weight"),
    "target": ("percent",),
    "ephemeral_disk": ("size", "migrate", "sticky"),
    "logs": ("max_files", "max_file_size", "disabled", "enabled"),
}

_CONSUL = "shoal has no Consul integration"
_VAULT = "shoal has no Vault integration"
_UPDATES = "shoal has no rolling updates, canaries or deployments; a changed job replaces its allocations"
_DISCONNECT = "shoal has no disconnected-client handling; allocations on a lost node are replaced"
_VOLUMES = "shoal has no host or CSI volumes"
_CHECK_THRESHOLDS = "shoal has no check thresholds; a check passes or fails on each run"
_PLAIN_HTTP = "http checks are plain-http GET requests"
_MESH = "shoal has no Consul Connect service mesh"

# Nomad features shoal refuses, with the reason shown to the user after
# "not supported: ". Keyed by the block type they appear in; "*" applies anywhere.
UNSUPPORTED: dict[str, dict[str, str]] = {
    "*": {
        "vault": _VAULT,
        "consul": _CONSUL,
        "identity": "shoal issues no workload identities",
        "scaling": "shoal has no autoscaling policies; set count",
        "update": _UPDATES,
        "migrate": "shoal has no drain migration strategies",
    },
    "job": {
        "periodic": "shoal does not run periodic (cron) jobs",
        "parameterized": "shoal does not run parameterized (dispatch) jobs",
        "multiregion": "shoal does not run multi-region jobs",
        "all_at_once": "shoal places allocations as capacity allows, never all at once",
        "vault_token": _VAULT,
        "consul_token": _CONSUL,
        "consul_namespace": _CONSUL,
        "ui": "shoal has no web UI to describe the job in",
        "id": 'the job ID is the label of the job block: job "ID" { ... }',
    },
    "group": {
        "volume": _VOLUMES,
        "max_client_disconnect": _DISCONNECT,
        "disconnect": _DISCONNECT,
        "stop_after_client_disconnect": _DISCONNECT,
        "prevent_reschedule_on_lost": _DISCONNECT,
        "shutdown_delay": "shoal has no shutdown delays; tasks get kill_signal, then kill_timeout",
    },
    "task": {
        "artifact": "shoal does not download artifacts into task directories; put them in the image",
        "template": "shoal does not render templates (consul-template); use env or bake files into the image",
        "volume_mount": _VOLUMES,
        "csi_plugin": "shoal has no CSI plugins",
        "dispatch_payload": "shoal does not run parameterized (dispatch) jobs",
        "kind": _MESH,
        "shutdown_delay": "shoal has no shutdown delays; tasks get kill_signal, then kill_timeout",
        "action": "shoal has no task actions",
        "schedule": "shoal has no task schedules",
        "secret": "shoal has no secrets integration",
    },
    "resources": {
        "network": "a network inside resources is Nomad's deprecated form: declare "
        'network { port "LABEL" { ... } } in the group instead',
        "device": "shoal has no device plugins (GPUs and the like)",
        "cores": "shoal reserves no whole cores; use cpu (MHz)",
        "numa": "shoal has no NUMA-aware placement",
        "iops": "iops is deprecated in Nomad and has no meaning in shoal",
        "disk": "disk belongs in the group: ephemeral_disk { size = MB }",
        "secrets": "shoal has no secrets integration",
    },
    "restart": {"render_templates": "shoal does not render templates"},
    "network": {
        "mbits": "shoal reserves no network bandwidth",
        "dns": "shoal has no per-group DNS settings",
        "hostname": "shoal has no per-group hostnames",
        "reserved_ports": "shoal has no reserved port ranges",
        "cni": "shoal has no CNI networks",
    },
    "port": {
        "host_network": "shoal has no named host networks",
        "ignore_collision": "shoal always checks ports for collisions",
    },
    "service": {
        "connect": _MESH,
        "address": 'a service advertises the address its address_mode gives ("auto", "host" or "alloc")',
        "canary_meta": _UPDATES,
        "enable_tag_override": _CONSUL,
        "tagged_addresses": _CONSUL,
        "meta": "shoal's service catalog holds no service metadata; use tags",
        "on_update": _UPDATES,
        "task": "task belongs on script checks, not on the service",
        "cluster": _CONSUL,
        "kind": _MESH,
        "weights": _CONSUL,
    },
    "check": {
        "on_update": _UPDATES,
        "initial_status": "checks start critical until they pass",
        "method": _PLAIN_HTTP,
        "header": _PLAIN_HTTP,
        "body": _PLAIN_HTTP,
        "protocol": _PLAIN_HTTP,
        "tls_skip_verify": _PLAIN_HTTP,
        "tls_server_name": _PLAIN_HTTP,
        "grpc_service": "shoal has no grpc checks",
        "grpc_use_tls": "shoal has no grpc checks",
        "expose": _MESH,
        "address_mode": "checks connect to the task's port from inside its network namespace "
        "(on the host for raw_exec tasks)",
        "success_before_passing": _CHECK_THRESHOLDS,
        "failures_before_critical": _CHECK_THRESHOLDS,
        "failures_before_warning": _CHECK_THRESHOLDS,
        "notes": "shoal's checks carry no notes",
    },
}


def unsupported_reason(block_type: str, name: str) -> str | None:
    return UNSUPPORTED.get(block_type, {}).get(name) or UNSUPPORTED["*"].get(name)


def known_names(block_type: str) -> list[str]:
    """Everything a block of this type may hold, for 'did you mean' suggestions."""
    return [*ATTRIBUTES.get(block_type, ()), *CHILDREN.get(block_type, {})]
