#!/usr/bin/env bash
# Install Azurite (Microsoft's Azure Storage emulator) from the npm registry into a project-local folder,
# for the Azure Blob tests of tests/test_crm_cloud.py. Idempotent: does nothing when the pinned version is
# already there. Needs node and npm (Node 20 is enough: azurite 3.36+ wants Node >= 21, hence the pin).
#
#   bash .ci/install-azurite.sh            # installs into var/tools/azurite (gitignored)
#   AZURITE_DIR=/some/dir bash .ci/install-azurite.sh
#
# The tests find it at var/tools/azurite/node_modules/.bin/azurite-blob, or through $AZURITE_BLOB_BIN,
# or on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

AZURITE_VERSION="${AZURITE_VERSION:-3.35.0}"
AZURITE_DIR="${AZURITE_DIR:-var/tools/azurite}"
BIN="$AZURITE_DIR/node_modules/.bin/azurite-blob"
PACKAGE_JSON="$AZURITE_DIR/node_modules/azurite/package.json"

if ! command -v npm >/dev/null; then
    echo "install-azurite: npm is not installed (apt-get install nodejs npm)" >&2
    exit 1
fi

installed=""
if [ -x "$BIN" ] && [ -f "$PACKAGE_JSON" ]; then
    installed="$(node -p "require('./$PACKAGE_JSON').version" 2>/dev/null || true)"
fi
if [ "$installed" = "$AZURITE_VERSION" ]; then
    echo "install-azurite: azurite $AZURITE_VERSION already in $AZURITE_DIR"
    exit 0
fi

mkdir -p "$AZURITE_DIR"
[ -f "$AZURITE_DIR/package.json" ] || echo '{"private": true}' > "$AZURITE_DIR/package.json"
npm install --prefix "$AZURITE_DIR" --no-audit --no-fund --loglevel=error --save-exact \
    "azurite@$AZURITE_VERSION"
"$BIN" --version >/dev/null
echo "install-azurite: azurite $AZURITE_VERSION installed in $AZURITE_DIR ($BIN)"
