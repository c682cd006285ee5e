"""docs/serving.md's bash examples run as written (against the test server instead of :8000)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e
DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "serving.md")


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="needs curl and jq")
def test_serving_doc_examples_run(server, allowed_dir):
    text = open(DOC).read()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    assert len(blocks) >= 8
    script = "set -euo pipefail\n" + "\n".join(blocks)
    script = script.replace("http://127.0.0.1:8000", server).replace("/tmp/hqseg-demo", f"{allowed_dir}/hqseg-demo")
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert '"status":"ok"' in out and "HTTP 400" in out and "HTTP 404" in out and "HTTP 403" in out
    assert '"source":"prompt"' in out and '"deleted":"vid_' in out
