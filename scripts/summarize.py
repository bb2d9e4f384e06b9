#!/usr/bin/python3
"""Adds up JUnit XML reports (Criterion's and pytest's) into one "N passed, N failed" line."""
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0
missing = []
for path in sys.argv[1:]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        missing.append(path)
        continue
    for case in root.iter("testcase"):
        kinds = {child.tag for child in case}
        if kinds & {"failure", "error"}:
            failed += 1
        elif "skipped" in kinds:
            skipped += 1
        else:
            passed += 1
    # A suite that crashed before reporting its cases counts as a failure.
    for suite in root.iter("testsuite"):
        errors = int(suite.get("errors", "0") or 0)
        cases = len(list(suite.iter("testcase")))
        if errors and cases == 0:
            failed += errors
for path in missing:
    print(f"missing or unreadable report: {path}")
    failed += 1
if skipped:
    print(f"({skipped} skipped)")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
