#!/usr/bin/env bash
# Runs the Python client's tests (clients/python): the unit tests (a mock Stepgate) and the
# integration tests, which start the release server and the sandbox themselves on free ports
# with a throw-away data folder and stop them after. Builds both binaries first unless
# NO_BUILD=1 (scripts/test.sh has just built them). Extra arguments go to pytest.
# Ends with one line, "python client: N passed, M failed", counted from the JUnit report
# (target/python-tests/junit.xml); a run that wrote no report counts as one failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-python
export PATH="$HOME/.cargo/bin:$PWD/.tools/node_modules/.bin:$PATH"

if [ "${NO_BUILD:-0}" != 1 ]; then
  cargo leptos build --release --precompress
  cargo build --release -p sandbox
fi

python=$PWD/.tools/python-venv/bin/python
report=$PWD/target/python-tests/junit.xml
mkdir -p "$(dirname "$report")"
rm -f "$report"
status=0
# No cache folder or bytecode left in the checkout.
(
  cd clients/python &&
    CI=true PYTHONDONTWRITEBYTECODE=1 "$python" -m pytest -p no:cacheprovider -q -rfE \
      --junitxml="$report" "$@" </dev/null
) || status=1

read -r passed failed skipped < <("$python" -c '
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print(0, 1, 0)
    raise SystemExit
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
failed = total["failures"] + total["errors"]
print(total["tests"] - failed - total["skipped"], failed, total["skipped"])
' "$report")
skipped_note=""
[ "$skipped" = 0 ] || skipped_note=" ($skipped skipped)"
echo "python client: $passed passed, $failed failed$skipped_note"
[ "$failed" = 0 ] || status=1
exit $status
