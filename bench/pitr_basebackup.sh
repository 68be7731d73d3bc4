#!/bin/bash
# Base backup and restore to a moment, against pg_basebackup | zstd -3 (one run; bench/README.md).
# A private cluster (initdb as postgres, archiving into a fresh repository through .wal-venv's
# vaultflow-wal), pgbench -i -s $SCALE (default 30), then: pg_basebackup -Ft -X fetch | zstd -3,
# vaultflow pitr base-backup, vaultflow pitr restore --to-time, and the restored server's recovery
# until promotion. Run as root from the checkout after `make wal-venv`: SCALE=100 bench/pitr_basebackup.sh
set -euo pipefail
WT=$(cd "$(dirname "$0")/.." && pwd); cd $WT
BIN=/usr/lib/postgresql/15/bin
B=$(mktemp -d /tmp/vf-pitr-bench-XXXX); chown postgres: $B; chmod 755 $B
cleanup() { set +e; grep -iE "error|fatal" $B/log 2>/dev/null | tail -5; for d in $B/restored $B/data; do [ -f $d/postmaster.pid ] && runuser -u postgres -- $BIN/pg_ctl -D $d -m immediate stop >/dev/null 2>&1; done; rm -rf $B; }
trap cleanup EXIT
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
export VAULTFLOW_PASSPHRASE='bench passphrase' VAULTFLOW_REPO=$B/repo PYTHONPATH=$WT
PY=${PY:-$WT/.venv/bin/python}
$PY -m vaultflow.cli.main init >/dev/null
echo "$VAULTFLOW_PASSPHRASE" > $B/pass; chmod 600 $B/pass; chown -R postgres: $B
runuser -u postgres -- $BIN/initdb -D $B/data --auth=trust -U postgres --locale=C --no-sync >/dev/null
cat >> $B/data/postgresql.conf <<CONF
wal_level = replica
archive_mode = on
archive_command = 'VAULTFLOW_REPO=$B/repo VAULTFLOW_PASSPHRASE_FILE=$B/pass $WT/.wal-venv/bin/vaultflow-wal push %p'
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$B'
CONF
runuser -u postgres -- env -u VAULTFLOW_PASSPHRASE $BIN/pg_ctl -D $B/data -l $B/log -w start >/dev/null
URL=postgresql://postgres@127.0.0.1:$PORT
/usr/bin/time -f "pgbench -i: %e s" pgbench -q -i -s ${SCALE:-30} -h 127.0.0.1 -p $PORT -U postgres postgres 2>&1 | tail -1
psql -qAt -h 127.0.0.1 -p $PORT -U postgres -c "select pg_size_pretty(pg_database_size('postgres'))" postgres
psql -qAt -h 127.0.0.1 -p $PORT -U postgres -c "select pg_switch_wal()" postgres >/dev/null; sleep 5
/usr/bin/time -f "pg_basebackup -Ft -X fetch | zstd -3: %e s" bash -c "pg_basebackup -h 127.0.0.1 -p $PORT -U postgres -D - -Ft -X fetch --checkpoint=fast | zstd -3 -q > $B/plain.tar.zst"
ls -l $B/plain.tar.zst | awk '{print "zstd -3 tar bytes:", $5}'
/usr/bin/time -f "vaultflow pitr base-backup: %e s" $PY -m vaultflow.cli.main pitr base-backup $URL
du -sb $B/repo/chains | awk '{print "repository chains bytes:", $1}'
sleep 1.1  # the recorded stop is rounded up to the next second
T=$(psql -qAt -h 127.0.0.1 -p $PORT -U postgres -c "select clock_timestamp()" postgres)
sleep 1; pgbench -n -T 5 -h 127.0.0.1 -p $PORT -U postgres postgres >/dev/null 2>&1
psql -qAt -h 127.0.0.1 -p $PORT -U postgres -c "select pg_switch_wal()" postgres >/dev/null; sleep 8
/usr/bin/time -f "second vaultflow pitr base-backup: %e s" $PY -m vaultflow.cli.main pitr base-backup $URL --json \
    | $PY -c 'import json,sys; r=json.load(sys.stdin); print("second base backup:", r["kind"], "added", r["added_bytes"], "of", r["stored_bytes"], "bytes")'
/usr/bin/time -f "vaultflow pitr restore (lay out): %e s" $PY -m vaultflow.cli.main pitr restore 127.0.0.1:$PORT --to-time "$T" --pgdata $B/restored --passphrase-file $B/pass --wal-command $WT/.wal-venv/bin/vaultflow-wal
P2=$((PORT+1))
start=$(date +%s.%N)
runuser -u postgres -- env -u VAULTFLOW_PASSPHRASE $BIN/pg_ctl -D $B/restored -l $B/rlog -o "-p $P2" -w -t 300 start >/dev/null
until [ "$(psql -qAt -h 127.0.0.1 -p $P2 -U postgres -c 'select pg_is_in_recovery()' postgres 2>/dev/null)" = "f" ]; do sleep 0.2; done
end=$(date +%s.%N); echo "recovery to promotion: $(echo "$end - $start" | bc) s"
psql -qAt -h 127.0.0.1 -p $P2 -U postgres -c "select count(*) from pgbench_history" postgres | awk '{print "pgbench_history rows in the copy (0 expected: target before the run):", $1}'
