"""The CUDA tests' JUnit XML as JSON, and whether the stage passed: no failure, no skip.

    python benchmarks/gpu/junit_summary.py tests.xml tests.json

On the GPU machine a skipped test is a failure: every test there must run (a missing
bitsandbytes or a build without CUDA kernels would otherwise pass unseen).
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

OUTCOMES = ("failure", "error", "skipped")


def outcome(case: ElementTree.Element) -> tuple[str, str]:
    for name in OUTCOMES:
        found = case.find(name)
        if found is not None:
            return name, (found.get("message") or "")[:500]
    return "passed", ""


def main() -> None:
    source, target = (Path(argument) for argument in sys.argv[1:3])
    if not source.exists():
        report = {"passed": 0, "problem": f"pytest wrote no report ({source.name})", "cases": []}
    else:
        cases = []
        for case in ElementTree.parse(source).iter("testcase"):
            result, message = outcome(case)
            cases.append({"test": case.get("name"), "outcome": result,
                          "seconds": float(case.get("time") or 0), "message": message})
        report = {"passed": sum(c["outcome"] == "passed" for c in cases), "cases": cases}
        for name in OUTCOMES:
            report[name] = sum(c["outcome"] == name for c in cases)
    target.write_text(json.dumps(report, indent=1) + "\n")
    bad = sum(report.get(name, 0) for name in OUTCOMES)
    print(f"tests: {report['passed']} passed, {bad} failed, errored or skipped")
    if bad or not report["passed"]:
        sys.exit("the CUDA tests did not all run and pass: see tests.json")


if __name__ == "__main__":
    main()
