"""Print each pytest run's figures and one closing line for all of them together."""

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

totals = {"passed": 0, "failed": 0, "skipped": 0}
for name in sys.argv[1:]:
    path = Path(name)
    if not path.exists():
        print(f"{path.name}: no report (the run did not start)")
        totals["failed"] += 1
        continue
    root = ET.parse(path).getroot()  # noqa: S314 - our own pytest report, not untrusted input
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    tests = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    passed = tests - failed - skipped
    print(f"{path.stem}: {passed} passed, {failed} failed, {skipped} skipped")
    totals["passed"] += passed
    totals["failed"] += failed
    totals["skipped"] += skipped
print(f"all: {totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped")
