#!/usr/bin/env bash
# pyvswitch.sh — one entry point that sets up everything a fresh Debian 12 root needs, then acts.
#   ./pyvswitch.sh demo [ARGS]   namespaces ping each other through the daemon
#   ./pyvswitch.sh test [ARGS]   the whole test suite (pytest ARGS)
#   ./pyvswitch.sh bench [ARGS]  the benchmarks
#   ./pyvswitch.sh setup         only the set-up
# Set-up is idempotent: system packages only when one is missing, the venv only when
# requirements.txt changed, the build (Cython, BPF) incremental.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
TOP=$PWD
VENV=$TOP/.venv
STAMPS=$TOP/.stamps
APT_PACKAGES=(
  python3 python3-venv python3-dev build-essential pkg-config
  clang llvm libbpf-dev bpftool linux-libc-dev libdpdk-dev dpdk
  iproute2 iputils-ping procps ethtool tcpdump tshark
  openvswitch-common openvswitch-switch openvswitch-switch-dpdk ovn-central ovn-host
)

say() { printf '[pyvswitch.sh] %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    say "must run as root (namespaces, AF_PACKET, XDP and apt-get need it); try: sudo $0 $*"
    exit 2
  fi
}

ensure_apt() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_venv() {
  mkdir -p "$STAMPS"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    /usr/bin/python3 -m venv "$VENV"
    rm -f "$STAMPS/requirements"
  fi
  local want; want=$(sha256sum requirements.txt | cut -d' ' -f1)
  if [ "$(cat "$STAMPS/requirements" 2>/dev/null)" != "$want" ]; then
    say "installing Python dependencies (requirements.txt)"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt \
      >"$STAMPS/pip.log" 2>&1 || { cat "$STAMPS/pip.log" >&2; say "pip install failed"; exit 1; }
    echo "$want" > "$STAMPS/requirements"
    rm -f "$STAMPS/package"
  fi
}

ensure_build() {
  local want; want=$(sha256sum setup.py | cut -d' ' -f1)
  if [ "$(cat "$STAMPS/package" 2>/dev/null)" != "$want" ]; then
    say "installing pyvswitch into the venv (editable)"
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-build-isolation --no-deps -e . \
      >"$STAMPS/pip.log" 2>&1 || { cat "$STAMPS/pip.log" >&2; say "pip install -e . failed"; exit 1; }
    echo "$want" > "$STAMPS/package"
  fi
  # Incremental: recompiles only changed .pyx / .bpf.c files.
  "$VENV/bin/python" setup.py -q build_ext --inplace >"$STAMPS/build.log" 2>&1 || {
    cat "$STAMPS/build.log" >&2; say "build failed"; exit 1; }
}

setup_all() { need_root "$@"; ensure_apt; ensure_venv; ensure_build; }

cmd=${1:-help}; shift || true
case "$cmd" in
  setup) setup_all ;;
  demo)  setup_all; exec "$VENV/bin/pyvswitch" demo "$@" ;;
  test)  setup_all; exec "$VENV/bin/python" -m pytest "$@" ;;
  bench) setup_all; exec "$VENV/bin/pyvswitch" bench "$@" ;;
  run)   setup_all; exec "$VENV/bin/pyvswitch" run "$@" ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; [ "$cmd" = help ] ;;
esac
