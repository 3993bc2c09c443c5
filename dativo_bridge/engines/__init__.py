"""Engines that run a source's partitions apart from the driver (see docs/scale-out.md)."""

from dativo_bridge.engines.partitions import Partition, PartitionedReader

__all__ = ["Partition", "PartitionedReader", "run_with_ray"]


def __getattr__(name: str) -> object:
    if name == "run_with_ray":  # importing the runner only when asked for
        from dativo_bridge.engines.ray_engine import run_with_ray

        return run_with_ray
    raise AttributeError(name)
