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
# iscsid kept running as a Debian host keeps it: there, iscsid.socket starts it
# again for the next iscsiadm after it exits; the lab has no systemd as PID 1
# for that, so a loop does it and says so (a crash of iscsid shows in the log).
if ! pgrep -x iscsid >/dev/null; then
  setsid bash -c 'while true; do
      iscsid -f >/dev/null 2>&1
      echo "[lab] iscsid exited with status $?; starting it again" >&2
      sleep 1
    done' </dev/null &
  for _ in $(seq 50); do  # until it listens on its (abstract) socket
    grep -q ISCSIADM_ABSTRACT_NAMESPACE /proc/net/unix && break
    sleep 0.2
  done
  grep -q ISCSIADM_ABSTRACT_NAMESPACE /proc/net/unix || say "iscsid did not start"
fi
say "kernel $(uname -r): LIO $(test -d /sys/kernel/config/target/iscsi -o -d /sys/kernel/config/target/core && echo yes || echo no), nvmet $(test -d /sys/kernel/config/nvmet && echo yes || echo no)"

[ -n "$rcfile" ] && : > "$rcfile.started"  # the runner boots again only if this is missing
bash "$cmdfile"
rc=$?
[ -n "$rcfile" ] && echo "$rc" > "$rcfile"
sync
exit "$rc"
