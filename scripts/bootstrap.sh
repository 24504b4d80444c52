#!/usr/bin/env bash
# Set up everything the demo and the tests need on a Debian 12 machine, as root:
# Debian packages, the project's virtualenv, the lab kernel. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

# Targets, initiators, the lab VM, storage tools, filesystem tools for the guard,
# qemu-img for Cinder's image copies, sg3-utils for SCSI reservations.
APT_PACKAGES=(
  python3 python3-venv python3-dev gcc
  qemu-system-x86 busybox-static
  open-iscsi nvme-cli udev kmod iproute2 procps util-linux dmsetup
  lvm2 thin-provisioning-tools e2fsprogs xfsprogs btrfs-progs dosfstools
  gfs2-utils ocfs2-tools gdisk fdisk fio
  openssh-server openssh-client targetcli-fb
  qemu-utils sg3-utils
  pacemaker pacemaker-cli-utils corosync systemd prometheus
)
step "Debian packages"
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  # Installing must not start daemons on the host: the lab starts its own.
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
else
  echo "all ${#APT_PACKAGES[@]} present"
fi

step "Python virtualenv (.venv)"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.shareblock-installed
want=$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test,lab,lint,bench,cinder-host]'
  echo "$want" > "$stamp"
fi
.venv/bin/shareblock --version

step "Real Cinder for the driver's Cinder test (.venv-cinder, cinder 29.x)"
if [ ! -x .venv-cinder/bin/python ]; then
  "$PYTHON" -m venv .venv-cinder
fi
if [ "$(cat .venv-cinder/.shareblock-installed 2>/dev/null)" != "$want" ]; then
  .venv-cinder/bin/python -m pip install -q --upgrade pip
  .venv-cinder/bin/python -m pip install -q 'cinder>=29.0.0,<30' oslotest fixtures testtools \
    'pytest>=8,<10' -e '.[cinder-host]'
  echo "$want" > .venv-cinder/.shareblock-installed
fi

step "Lab kernel (Debian linux-image-6.12-amd64, unpacked into .cache/lab)"
if [ "$(.venv/bin/shareblock-lab mode)" = vm ]; then
  .venv/bin/shareblock-lab fetch
else
  echo "this kernel serves LIO and nvmet itself: no VM needed"
fi
