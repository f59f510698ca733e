"""A consortium on this machine for the tests (:class:`fedledger.node.local.LocalConsortium`),
with some of its nodes in network namespaces of their own, to cut them off."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from etcd_cluster import require_etcd

from fedledger.node.local import LocalConsortium

__all__ = ["Consortium", "NetworkNamespace", "require_etcd"]


class NetworkNamespace:
    """A network namespace joined to this one by a veth pair (host side ``host_ip``, namespace side
    ``ip``); :meth:`cut` takes the link down, :meth:`restore` brings it back. Needs root."""

    def __init__(self, name: str, index: int) -> None:
        self.name = name
        self.host_if, self.ns_if = f"flh{index}", f"fln{index}"
        self.host_ip, self.ip = f"10.213.{index}.1", f"10.213.{index}.2"

    @staticmethod
    def available() -> bool:
        probe = f"flprobe{os.getpid()}"
        ok = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
        if ok:
            subprocess.run(["ip", "netns", "del", probe], capture_output=True)
        return ok

    def _ip(self, *args: str, ns: bool = False) -> None:
        command = ["ip", "netns", "exec", self.name, "ip", *args] if ns else ["ip", *args]
        subprocess.run(command, check=True, capture_output=True)

    def create(self) -> None:
        self.delete()
        self._ip("netns", "add", self.name)
        self._ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        self._ip("link", "set", self.ns_if, "netns", self.name)
        self._ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        self._ip("link", "set", self.host_if, "up")
        self._ip("addr", "add", f"{self.ip}/30", "dev", self.ns_if, ns=True)
        self._ip("link", "set", self.ns_if, "up", ns=True)
        self._ip("link", "set", "lo", "up", ns=True)

    def cut(self) -> None:
        self._ip("link", "set", self.host_if, "down")

    def restore(self) -> None:
        self._ip("link", "set", self.host_if, "up")

    def delete(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


class Consortium(LocalConsortium):
    """Node i runs in ``netns[i]`` when given (the etcd members then listen on every address)."""

    def __init__(self, base: Path, stakes: list[int], netns: dict[int, NetworkNamespace] | None = None, **kw) -> None:
        super().__init__(base, stakes, etcd_listen_all=bool(netns), **kw)
        self.netns = netns or {}

    def start(self) -> None:
        for ns in self.netns.values():
            ns.create()
        super().start()

    def start_node(self, i: int, wait: bool = True, command: list[str] | None = None) -> None:
        ns = self.netns.get(i)
        if ns is not None and command is None:
            etcd = [u.replace("127.0.0.1", ns.host_ip) for u in self.etcd.client_urls]
            command = ["ip", "netns", "exec", ns.name, *self.node_command(i, etcd, f"{ns.ip}:0")]
        super().start_node(i, wait, command)

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            for ns in self.netns.values():
                ns.delete()
