"""The CI dependency audit's verdict (.ci/audit.py): a known vulnerability that a release fixes fails, unless
.ci/audit-ignore.txt accepts it; one without a fix and a package nobody could audit are reported only."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location("audit", Path(__file__).resolve().parents[1] / ".ci" / "audit.py")
assert _spec is not None and _spec.loader is not None
audit = importlib.util.module_from_spec(_spec)
sys.modules["audit"] = audit  # dataclasses look their module up while the script loads
_spec.loader.exec_module(audit)


def test_only_an_unaccepted_fixable_vulnerability_fails() -> None:
    packages = [
        audit.Package("fixable", "1.0", [audit.Vulnerability("GHSA-fix", ["1.1"])], "pip-audit"),
        audit.Package("accepted", "2.0", [audit.Vulnerability("PYSEC-ok", ["2.1"])], "latest-release page"),
        audit.Package("unfixed", "3.0", [audit.Vulnerability("GHSA-open", [])], "latest-release page"),
        audit.Package("clean", "4.0", [], "pip-audit"),
        audit.Package("unknown", "5.0", note="installed 5.0, the index describes only its latest release 6.0"),
    ]
    failing, reported = audit.judge(packages, {"PYSEC-ok": "not reachable from our code"})
    assert failing == ["fixable 1.0: GHSA-fix (fixed in: 1.1)"]
    assert reported == ["accepted 2.0: PYSEC-ok (fixed in: 2.1) - accepted: not reachable from our code",
                        "unfixed 3.0: GHSA-open (fixed in: no release)"]
