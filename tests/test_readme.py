"""README.md stays true: its Python examples run, and CI runs its test block."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "README has no Python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})


def test_ci_runs_readme_test_block():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "## Run the tests" in README and "'/^## Run the tests/" in ci
    quick = re.search(r"## Quick start\n\n```bash\n(.*?)```", README, flags=re.S).group(1).strip()
    assert quick == "pip install . && hqseg demo"
