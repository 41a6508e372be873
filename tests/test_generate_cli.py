"""`python -m rocket.generate` on a tiny checkpoint written the way rocket.train writes it."""

import os
import subprocess
import sys

from tests.helpers import save_tiny_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cli_decodes_a_checkpoint_with_a_draft_and_reports_stats(tmp_path):
    workdir = tmp_path / "run"
    save_tiny_run(workdir)
    cmd = [
        sys.executable,
        "-m",
        "rocket.generate",
        f"--checkpoint={workdir}",
        f"--draft_checkpoint={workdir}",
    ]
    cmd += ["--method=speculative", "--max_new_tokens=12", "--temperature=0.8", "--prompt=def f"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=os.environ)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("def f")
    # The target drafting for itself accepts every draft: 5 tokens per target call (gamma = 4).
    assert "tokens/s" in lines[-1] and "acceptance 1.000" in lines[-1], lines[-1]
    bad = subprocess.run(cmd[:4] + ["--method=beam"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "unknown decoding method" in bad.stderr
    bad = subprocess.run(cmd[:4] + ["--step=7"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"error: No checkpoint step 7 in {str(workdir / 'checkpoints')!r}; available steps: [1]."
    ], bad.stderr
