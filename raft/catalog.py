"""The service catalog's side of the FSM: what a registration write keeps, and what goes with
an allocation or a node.

An agent writes the whole set of an allocation's registrations (``service.sync``); the set is
kept only while the allocation may serve: it runs (desired ``run``, not terminal on its client)
on a ready node. Whatever ends that removes the set in the same Raft entry — a stop or an
eviction in a plan, a terminal status from the client, the node going down or being purged —
so a registration is never left behind and a late sync from an agent cannot bring one back.
Like the rest of the FSM these functions never raise on bad input: the endpoint validated it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from shoal.jobs.structs import CLIENT_TERMINAL, NODE_READY, Allocation, ServiceRegistration
from shoal.raft import ops
from shoal.raft.change import Change

if TYPE_CHECKING:
    from shoal.raft.state import StateStore

TOPIC = "Service"


def serving(store: StateStore, alloc: Allocation) -> bool:
    """May ``alloc`` have registrations: it is meant to run, has not ended, and its node is ready."""
    if alloc.desired_status != "run" or alloc.client_status in CLIENT_TERMINAL:
        return False
    node = store.get_node(alloc.node_id)
    return node is not None and node.status == NODE_READY


def _change(index: int, type_: str, reg_id: str, reg: ServiceRegistration | None) -> Change:
    return Change(index, TOPIC, type_, reg_id, reg)


def drop_alloc(store: StateStore, alloc_id: str, index: int, changes: list[Change]) -> int:
    """Remove every registration of ``alloc_id``; returns how many went."""
    ids = store.service_ids_of_alloc(alloc_id)
    for reg_id in ids:
        store.delete_service(reg_id)
        changes.append(_change(index, "ServiceDeregistration", reg_id, None))
    return len(ids)


def drop_if_done(store: StateStore, alloc: Allocation, index: int, changes: list[Change]) -> None:
    """After ``alloc`` changed: its registrations go once it no longer serves."""
    if not serving(store, alloc):
        drop_alloc(store, alloc.id, index, changes)


def drop_node(store: StateStore, node_id: str, index: int, changes: list[Change]) -> None:
    """The node is down or gone: no allocation of it serves any more."""
    for alloc_id in store.alloc_ids_of_node(node_id):
        drop_alloc(store, alloc_id, index, changes)


def sync(store: StateStore, p: ops.ServiceSync, index: int, changes: list[Change]) -> dict[str, list[str]]:
    """Set each listed allocation's registrations to exactly the given ones. An allocation that is
    unknown, on another node or no longer serving keeps none (``refused`` names it, so its agent
    stops asking). Unchanged registrations keep their indexes and make no change event."""
    refused: list[str] = []
    for entry in p.allocs:
        alloc = store.get_alloc(entry.alloc_id)
        wanted = {r.id: r for r in entry.registrations}
        if alloc is None or alloc.node_id != p.node_id or not serving(store, alloc):
            if wanted:
                refused.append(entry.alloc_id)
            wanted = {}
        for reg_id in store.service_ids_of_alloc(entry.alloc_id):
            if reg_id not in wanted:
                store.delete_service(reg_id)
                changes.append(_change(index, "ServiceDeregistration", reg_id, None))
        for reg_id, reg in wanted.items():
            assert alloc is not None
            old = store.get_service(reg_id)
            # the allocation's identity comes from the state, not from the request
            reg = dataclasses.replace(reg, alloc_id=alloc.id, node_id=alloc.node_id, namespace=alloc.namespace,
                                      job_id=alloc.job_id, create_index=old.create_index if old else index,
                                      modify_index=index)
            if old is not None and dataclasses.replace(old, modify_index=index) == reg:
                continue
            store.put_service(reg)
            changes.append(_change(index, "ServiceRegistration", reg_id, reg))
    return {"refused": refused}
