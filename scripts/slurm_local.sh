#!/usr/bin/env bash
# A real single-node SLURM cluster with accounting on this machine (Debian/Ubuntu, root, no systemd needed),
# for trying `drl-train -m +launcher=slurm ...` and running `pytest -m slurm`.
#
#   sudo bash scripts/slurm_local.sh start    # install slurm-wlm, munge, slurmdbd, mariadb-server; start them
#   sudo bash scripts/slurm_local.sh stop     # stop the daemons (by their pid files)
#
# The node is "localhost" with this machine's CPUs and no GPUs (so launcher gpus_per_node must stay null/0).
# Accounting (slurmdbd + MariaDB) makes `sacct` work, which submitit needs to see a job's state.
set -euo pipefail

STATE=/var/lib/drl-slurm            # MariaDB data dir and the SLURM daemons' pid files
CONF=/etc/slurm
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemAvailable/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))

install_packages() {
  if ! command -v slurmctld >/dev/null || ! command -v mariadbd >/dev/null || ! command -v slurmdbd >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge slurmdbd mariadb-server >/dev/null
  fi
}

write_configs() {
  mkdir -p "$CONF" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge "$STATE"
  cat > "$CONF/slurm.conf" <<EOF
ClusterName=drl
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
SchedulerParameters=batch_sched_delay=0
KillWait=5
MinJobAge=3600
EnforcePartLimits=ALL
JobRequeue=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  cat > "$CONF/slurmdbd.conf" <<EOF
DbdHost=localhost
SlurmUser=root
AuthType=auth/munge
PidFile=$STATE/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$CONF/slurmdbd.conf"
}

start_munge() {
  [ -s /etc/munge/munge.key ] || mungekey --create --force 2>/dev/null || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chown munge:munge /etc/munge/munge.key /run/munge && chmod 400 /etc/munge/munge.key
  su -s /bin/sh munge -c "munged --pid-file=/run/munge/munged.pid" 2>/dev/null || true
}

start_mariadb() {
  if [ ! -d "$STATE/mysql/mysql" ]; then
    mariadb-install-db --user=mysql --datadir="$STATE/mysql" >/dev/null
  fi
  chown -R mysql:mysql "$STATE/mysql"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  mariadbd --user=mysql --datadir="$STATE/mysql" --bind-address=127.0.0.1 --pid-file=/run/mysqld/mariadb.pid \
    --socket=/run/mysqld/mysqld.sock >/var/log/slurm/mariadb.log 2>&1 &
  for _ in $(seq 50); do mariadb -e "select 1" >/dev/null 2>&1 && break; sleep 0.2; done
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
              CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

start() {
  install_packages
  write_configs
  start_munge
  start_mariadb
  slurmdbd
  for _ in $(seq 50); do sacctmgr -i list cluster >/dev/null 2>&1 && break; sleep 0.2; done
  sacctmgr -i add cluster drl >/dev/null 2>&1 || true
  slurmctld
  slurmd -N localhost
  for _ in $(seq 50); do sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed" && break; sleep 0.2; done
  sinfo
}

stop() {
  for name in slurmd slurmctld slurmdbd; do
    [ -s "$STATE/$name.pid" ] && kill "$(cat "$STATE/$name.pid")" 2>/dev/null || true
  done
  [ -s /run/mysqld/mariadb.pid ] && kill "$(cat /run/mysqld/mariadb.pid)" 2>/dev/null || true
  [ -s /run/munge/munged.pid ] && kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
