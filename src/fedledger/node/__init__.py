"""The node layer: fedledger processes that share one order of transactions through etcd."""

__all__: list[str] = []
