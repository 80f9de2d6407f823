#!/usr/bin/env bash
# Runs pytest with the given interpreter; pytest's exit 5 ("no tests collected") is a failure.
set -u
python=$1; shift
"$python" -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "run_tests.sh: pytest collected no tests; treating this as a failure" >&2
  exit 1
fi
exit "$status"
