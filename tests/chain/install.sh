#!/usr/bin/env bash
# Install the avsnode Python test chain (tests/chain/server.py) into a venv.
#   tests/chain/install.sh [VENV_DIR]        default VENV_DIR: /opt/avsnode-testchain
# Idempotent: a stamp holding the hash of requirements.txt makes a second run a no-op.
# Afterwards: VENV_DIR/bin/python tests/chain/server.py --port 0
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-/opt/avsnode-testchain}"
req="$here/requirements.txt"
stamp="$venv/.avsnode-testchain.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi
if [[ ! -x "$venv/bin/python" ]]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
"$venv/bin/python" -c 'import eth_tester, eth.vm.forks, vyper, eth_abi, eth_utils' \
    || { echo "install.sh: test chain packages do not import" >&2; exit 1; }
echo "$want" > "$stamp"
