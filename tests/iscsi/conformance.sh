#!/usr/bin/env bash
# Runs libiscsi's iscsi-test-cu (all suites, data-loss tests on) against an iSCSI URL and summarises.
#
# Usage: tests/iscsi/conformance.sh iscsi://127.0.0.1:PORT/IQN/LUN [MULTIPATH_URL]
# A test counts as passed only if it ran without printing [SKIPPED]; CUnit counts skips as passes.
# Prints passed / skipped / failed counts, the failed and skipped test names, and exits non-zero on
# any failure or when fewer than MIN_PASSED (default 200) tests really passed.
# Env: MIN_PASSED, TIMEOUT (seconds, default 900), EXTRA_ARGS (e.g. "-S"), LOG (full output file),
# MULTIPATH (default 1), TESTS (iscsi-test-cu -t spec, default ALL). The MultipathIO suite needs a second URL; without one, MULTIPATH=1 passes
# the same URL again: two sessions (I_T nexuses) to the same LU are exactly what a multipath
# initiator uses, and what those tests check. MULTIPATH=0 runs the plain single-URL suite.
set -uo pipefail

URL=${1:?usage: conformance.sh iscsi://host:port/iqn/lun [multipath-url]}
MPATH=${2:-}
if [[ -z $MPATH && ${MULTIPATH:-1} == 1 ]]; then
    MPATH=$URL
fi
MIN_PASSED=${MIN_PASSED:-200}
TIMEOUT=${TIMEOUT:-900}
LOG=${LOG:-$(mktemp /tmp/iscsi-conformance.XXXXXX)}

# shellcheck disable=SC2086
timeout "$TIMEOUT" iscsi-test-cu -d -t "${TESTS:-ALL}" \
    --initiator-name=iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test \
    --initiator-name-2=iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2 \
    ${EXTRA_ARGS:-} "$URL" ${MPATH:+"$MPATH"} >"$LOG" 2>&1
rc=$?

python3 - "$LOG" "$MIN_PASSED" "$rc" <<'PY'
import re, sys
log, min_passed, rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
text = open(log, errors="replace").read()
suite, results = None, []
for line in text.splitlines():
    m = re.match(r"Suite: (\S+)", line)
    if m:
        suite = m.group(1)
        continue
    m = re.match(r"\s+Test: (\S+) \.\.\.(.*)", line)
    if m:
        results.append([f"{suite}.{m.group(1)}", m.group(2), None])
        continue
    if results:
        results[-1][1] += "\n" + line
for r in results:
    body = r[1]
    # "[FAILED] ..." lines are libiscsi logging expected errors; CUnit marks a failed test with a
    # bare FAILED and numbered assertion lines.
    if re.search(r"(?<!\[)\bFAILED\b(?!\])", body):
        r[2] = "failed"
    elif "[SKIPPED]" in body:
        r[2] = "skipped"
    else:
        r[2] = "passed"
# CUnit's own summary is authoritative for failures.
m = re.search(r"tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", text)
cunit_failed = int(m.group(4)) if m else None
counts = {k: sum(1 for r in results if r[2] == k) for k in ("passed", "skipped", "failed")}
print(f"tests run: {len(results)}  passed: {counts['passed']}  skipped: {counts['skipped']}  "
      f"failed: {counts['failed']} (CUnit failed: {cunit_failed})")
for r in results:
    if r[2] == "failed":
        print(f"FAILED  {r[0]}")
for r in results:
    if r[2] == "skipped":
        why = re.search(r"\[SKIPPED\]\s*(.*)", r[1])
        print(f"skipped {r[0]}: {why.group(1).strip() if why else ''}")
print(f"full log: {log}")
bad = counts["failed"] > 0 or (cunit_failed or 0) > 0 or cunit_failed is None
if rc not in (0, 1) or m is None:
    print(f"iscsi-test-cu exited with {rc} (timeout or crash)")
    bad = True
if counts["passed"] < min_passed:
    print(f"only {counts['passed']} passed, MIN_PASSED is {min_passed}")
    bad = True
sys.exit(1 if bad else 0)
PY
