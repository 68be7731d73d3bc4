#!/usr/bin/env bash
# The main job on the embedded default: a sample SQLite database, a local repository and
# Prefect's embedded API. Backup, list, restore, then prove the restored copy equals the source.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO="$PWD/.demo"
rm -rf "$DEMO"
mkdir -p "$DEMO"
export PATH="$PWD/.venv/bin:$PATH"
export VAULTFLOW_HOME="$DEMO/home"            # the catalog lives here
export PREFECT_HOME="$DEMO/prefect"           # Prefect's embedded SQLite API keeps its state here
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export VAULTFLOW_REPO="$DEMO/repo"
export VAULTFLOW_PASSPHRASE="${VAULTFLOW_PASSPHRASE:-demo passphrase, change me}"

python -m vaultflow.sample_data create "$DEMO/sample.db" --rows 50000
vaultflow init
vaultflow backup "sqlite:///$DEMO/sample.db"
vaultflow backup "sqlite:///$DEMO/sample.db" --kind incremental   # nothing changed: nothing is dumped
vaultflow snapshots
vaultflow stats
SNAP=$(vaultflow snapshots --status Succeeded --json | python -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"][:8])')
vaultflow restore "$SNAP" "sqlite:///$DEMO/restored.db"
python -m vaultflow.sample_data compare "$DEMO/sample.db" "$DEMO/restored.db"
vaultflow export "$SNAP" --to "$DEMO/exported.db"
python -m vaultflow.sample_data compare "$DEMO/sample.db" "$DEMO/exported.db"
vaultflow drill --snapshot "$SNAP"        # restore into a scratch copy, check rows, checksums, schema, expectations
vaultflow stats                           # now with "last proven restorable"
echo "demo finished: repository in $DEMO/repo, catalog in $DEMO/home"
