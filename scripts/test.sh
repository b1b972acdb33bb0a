#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs, builds the
# C extension (warnings are errors), runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# A C compiler with OpenMP and Python headers (Debian); skipped when present.
if ! command -v gcc >/dev/null 2>&1 || ! "$PY" -c "import sysconfig,os,sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'],'Python.h')))"; then
    apt-get update -qq && apt-get install -y -qq build-essential python3-dev python3-pip
fi

export SPECSTREAM_WERROR=${SPECSTREAM_WERROR:-1}
"$PY" -m pip install -q --disable-pip-version-check -e ".[test]"
exec "$PY" -m pytest -q -ra "$@"
