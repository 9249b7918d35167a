"""The import graph: the inference CLIs stand without the training loop."""

import json
import subprocess
import sys


def test_sample_evaluate_and_bench_do_not_import_train():
    code = (
        "import json, sys\n"
        "import jaxmusic.sample, jaxmusic.evaluate, jaxmusic.bench\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('jaxmusic'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "jaxmusic.sample" in loaded and "jaxmusic.bench" in loaded
    assert "jaxmusic.train" not in loaded
