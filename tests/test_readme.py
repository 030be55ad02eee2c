"""The README's Quick start and .ci/run must not drift apart."""

import re

from tests.conftest import REPO


def _quick_start():
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quick_start_has_two_commands_and_ci_runs_the_test_one():
    install_run, test_cmd = _quick_start()
    ci = (REPO / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines()
    assert "pytest" in test_cmd and "jcausal" in install_run
