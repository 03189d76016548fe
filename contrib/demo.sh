#!/bin/sh
# README command one: installs packages, builds the gateway in build/demo,
# then runs contrib/demo.py (a private Prosody, the gateway, one user).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
sh contrib/install-deps.sh
[ -x configure ] || autoreconf -fi >/dev/null
mkdir -p build/demo
cd build/demo
[ -f Makefile ] || "$top/configure" >configure.out
make -j2 barev-gateway >make.out
GATEWAY_BIN="$PWD/barev-gateway" TEST_SRCDIR="$top" \
	exec /usr/bin/python3 "$top/contrib/demo.py" "$@"
