#!/usr/bin/env bash
# Prepare a kernel to serve LIO and nvmet targets and host initiators, then run
# the lab command. Runs as root inside the lab VM, or on a real lab machine:
# every step is idempotent and leaves running daemons and existing files alone.
set -u
cmdfile=$1
rcfile=${2:-}
say() { echo "[lab] $*" >&2; }

modules="configfs target_core_mod target_core_iblock target_core_file iscsi_target_mod
  nvmet nvmet-tcp nvme-tcp nvme-fabrics iscsi_tcp sd_mod dm_mod dm_flakey dm_thin_pool loop"
for m in $modules; do
  modprobe "$m" 2>/dev/null || say "module $m not loaded"
done
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
ip link set lo up
mkdir -p /etc/target /etc/iscsi /run/lock/iscsi /var/lib/iscsi /etc/nvme
[ -s /etc/iscsi/initiatorname.iscsi ] ||
  echo "InitiatorName=$(iscsi-iname -p iqn.2004-10.com.ubuntu)" > /etc/iscsi/initiatorname.iscsi
[ -s /etc/nvme/hostnqn ] || nvme gen-hostnqn > /etc/nvme/hostnqn
[ -s /etc/nvme/hostid ] || cat /proc/sys/kernel/random/uuid > /etc/nvme/hostid
if ! pgrep -x systemd-udevd >/dev/null; then
  /lib/systemd/systemd-udevd --daemon 2>/dev/null || say "udevd did not start"
  udevadm trigger --action=add >/dev/null 2>&1
  udevadm settle -t 10
fi
pgrep -x iscsid >/dev/null || iscsid || say "iscsid did not start"
say "kernel $(uname -r): LIO $(test -d /sys/kernel/config/target/iscsi -o -d /sys/kernel/config/target/core && echo yes || echo no), nvmet $(test -d /sys/kernel/config/nvmet && echo yes || echo no)"

[ -n "$rcfile" ] && : > "$rcfile.started"  # the runner boots again only if this is missing
bash "$cmdfile"
rc=$?
[ -n "$rcfile" ] && echo "$rc" > "$rcfile"
sync
exit "$rc"
