"""A real multi-host shoal cluster on one machine, for drills, tests and ``shoal dev cluster``.

Every host is a network namespace with its own address on an underlay Linux bridge
(``198.18.K.0/24``, a benchmarking range that is never routed off the machine; K is the
first free index, so concurrent clusters do not collide). Each host runs real
``shoal agent --server`` and/or ``--client`` processes, started with ``nsenter --net``
(only the network namespace is entered: the mount namespace, and so /sys/fs/cgroup, is
shared, and runc works from such an agent). Each host has its own data, runtime and image
directories and its own logs under ``ROOT/<host>/``.

Faults: :meth:`DevCluster.kill` (SIGKILL every process of a host; ``containers=True``
also kills its containers, as a power cut does), :meth:`DevCluster.partition` (an
nftables drop on the host's underlay interface in both directions, or its link set
down) and :meth:`DevCluster.heal`, :meth:`DevCluster.restart`.

Teardown (:meth:`DevCluster.close`; also a context manager, and an ``atexit`` hook) removes
processes (by pid, and whatever else lives in a host's namespace), the runc containers whose
bundles are under the cluster's directory, mounts under it, the namespaces, veths and the
bridge. A cluster whose owner died without tearing down (SIGKILL) is swept by the next
cluster that takes the same index: a lock file per index under ``/run/shoal-devcluster``
records what it owned.

Modules: ``cluster`` (:class:`DevCluster`: lifecycle, faults, calls), ``hosts`` (a host and
its processes), ``network`` (subnet claim, bridge, namespaces, partitions), ``processes``
(start, kill, stop a host's agents), ``cleanup`` (finding and removing what a cluster made),
``waiting`` (:func:`wait_for`), ``rootfs`` (a busybox image for the clients). A tool for
drills, tests and ``shoal dev cluster`` (which loads it lazily); no other shoal code imports it.
"""

from shoal.devcluster.cluster import DevCluster

__all__ = ["DevCluster"]
