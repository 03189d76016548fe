#!/bin/sh
# Installs, from Debian 12's archive only, what building, testing and the
# demo need. Run as root. Safe to run again.
set -eu
PKGS="build-essential autoconf automake pkg-config
libstrophe-dev libexpat1-dev libconfig-dev libssl-dev libsqlite3-dev
libevent-dev libcmocka-dev
prosody prosody-modules ejabberd python3-slixmpp
iproute2 procps groff-base mandoc valgrind clang libclang-rt-14-dev yggdrasil"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages:$missing (run as root to install them)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
