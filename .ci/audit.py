"""Known vulnerabilities of the installed dependencies (the virtual environment made from requirements*.txt), for CI.

pip-audit (requirements-dev.txt) asks PyPI's JSON API about each installed version. Where it cannot tell - the index
this project's machines reach serves only each project's own page, so every version page is "not found" and
pip-audit skips the package while printing "No known vulnerabilities found" - the project page is read instead: its
`vulnerabilities` list is about the latest release, so it applies when the installed version is that release. A
package that neither way describes is listed as not audited, never counted as clean. (OSV, pip-audit's other
service, is not reachable from these machines.)

Exit status 1 when an installed package has a known vulnerability that a released version fixes and that
.ci/audit-ignore.txt does not list (one "ID reason" per line): upgrade it, or list it with the reason. Vulnerabilities
without a fixed release and packages that could not be audited are reported but do not fail: nothing in this
repository can fix them. Run: .venv/bin/python .ci/audit.py
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

INDEX = "https://pypi.org/pypi"
IGNORE_FILE = Path(__file__).with_name("audit-ignore.txt")


@dataclass
class Vulnerability:
    id: str
    fixed_in: list[str]
    """Releases that fix it; empty when none does yet."""


@dataclass
class Package:
    name: str
    version: str
    vulns: list[Vulnerability] = field(default_factory=list)
    audited_by: str | None = None
    """"pip-audit", "latest-release page", or None when not audited."""
    note: str = ""


def run_pip_audit() -> list[Package]:
    """pip-audit's view of this environment (PyPI service), one Package per installed distribution."""
    if importlib.util.find_spec("pip_audit") is None:
        sys.exit("audit: pip-audit is not installed here; install the dev requirements: make setup-dev")
    installed = {_canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "audit.json"
        done = subprocess.run(
            [sys.executable, "-m", "pip_audit", "--vulnerability-service", "pypi", "--format", "json",
             "--progress-spinner", "off", "--output", str(report)],
            capture_output=True, text=True, timeout=900,
        )
        if not report.exists():  # no service reached: every package goes to the project pages
            print(f"audit: pip-audit gave no report ({' '.join(done.stderr.split())[-300:] or done.returncode})")
            return [Package(name, version, note="pip-audit gave no report") for name, version in installed.items()]
        data = json.loads(report.read_text())
    packages = []
    for dependency in data.get("dependencies", []):
        name = dependency["name"]
        package = Package(name, dependency.get("version") or installed.get(_canonical(name), "?"))
        if "skip_reason" in dependency:
            package.note = dependency["skip_reason"]
        else:
            package.audited_by = "pip-audit"
            package.vulns = [Vulnerability(str(v["id"]), [str(f) for f in v.get("fix_versions") or []])
                             for v in dependency.get("vulns", [])]
        packages.append(package)
    return packages


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def from_project_page(package: Package) -> None:
    """Fill in a package pip-audit skipped from its project page, when the installed version is the latest."""
    try:
        with urllib.request.urlopen(f"{INDEX}/{package.name}/json", timeout=60) as response:
            page = json.load(response)
    except (urllib.error.URLError, TimeoutError, ValueError) as error:
        package.note = f"project page unreadable ({error})"
        return
    latest = str(page.get("info", {}).get("version", ""))
    installed = package.version.split("+", 1)[0]  # a local build such as 2.13.0+cpu is that release
    if installed != latest:
        package.note = f"installed {package.version}, the index describes only its latest release {latest}"
        return
    package.audited_by = "latest-release page"
    package.vulns = [Vulnerability(str(v.get("id")), [str(f) for f in v.get("fixed_in") or []])
                     for v in page.get("vulnerabilities") or [] if not v.get("withdrawn")]


def ignored() -> dict[str, str]:
    if not IGNORE_FILE.exists():
        return {}
    entries = {}
    for line in IGNORE_FILE.read_text().splitlines():
        ident, _, reason = line.split("#", 1)[0].strip().partition(" ")
        if ident:
            entries[ident] = reason.strip()
    return entries


def judge(packages: list[Package], accepted: dict[str, str]) -> tuple[list[str], list[str]]:
    """(lines that fail the audit: fixable and not accepted, lines only reported)."""
    failing, reported = [], []
    for package in packages:
        for vuln in package.vulns:
            line = f"{package.name} {package.version}: {vuln.id} (fixed in: {', '.join(vuln.fixed_in) or 'no release'})"
            if vuln.id in accepted:
                reported.append(f"{line} - accepted: {accepted[vuln.id]}")
            elif vuln.fixed_in:
                failing.append(line)
            else:
                reported.append(line)
    return failing, reported


def main() -> int:
    packages = run_pip_audit()
    skipped = [p for p in packages if p.audited_by is None]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(from_project_page, skipped))
    failing, reported = judge(packages, ignored())
    by_pip_audit = sum(p.audited_by == "pip-audit" for p in packages)
    by_page = sum(p.audited_by == "latest-release page" for p in packages)
    not_audited = [p for p in packages if p.audited_by is None]
    print(f"dependency audit: {len(packages)} installed packages; {by_pip_audit} audited by pip-audit, {by_page} from "
          f"their latest-release page, {len(not_audited)} not audited; {len(failing)} fixable and {len(reported)} "
          "other known vulnerabilities")
    for line in failing:
        print(f"  FIXABLE  {line}")
    for line in reported:
        print(f"  known    {line}")
    if not_audited:
        print("  not audited: " + "; ".join(f"{p.name} {p.version} ({p.note})" for p in not_audited))
    if failing:
        print("audit: upgrade the packages above, or list the ids in .ci/audit-ignore.txt with the reason")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
