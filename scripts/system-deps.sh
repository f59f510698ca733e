#!/bin/sh
# Install the system packages fedledger's native build and tests need, if any is missing
# (Debian/Ubuntu): a C compiler, the OpenSSL 3, GMP and libsodium headers, and the etcd server
# the ordering tests run a cluster of. A no-op when all are present.
set -eu
missing=""
for pkg in build-essential libssl-dev libgmp-dev libsodium-dev etcd-server; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
echo "system-deps: installing$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
