import os
import shutil
import subprocess
import sys
from pathlib import Path


def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    assert torchrun.exists() or shutil.which("torchrun")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port", "29517",
                           str(root / "tests" / "finetune" / "ddp_worker.py"), str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = [(tmp_path / "out" / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert digests[0] == digests[1] and digests[0][1] == "2"
