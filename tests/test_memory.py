"""Importing fusegrad fixes glibc's malloc thresholds (fusegrad/runtime/memory.py), so that arrays
freed by one eager step are reused by the next instead of faulting in fresh pages; settings the
user made are left alone."""
import os
import platform
import subprocess
import sys

import pytest

from fusegrad.runtime.memory import tune_malloc

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Four 5 MiB arrays made and freed per step, as an eager step makes and frees its temporaries:
# with glibc's starting thresholds the 20 MiB go back to the system after every step.
_FAULTS_PER_STEP = """
import resource, sys
import numpy as np
import fusegrad

def step():
    arrays = [np.ones(5 * 2 ** 20 // 8) for _ in range(4)]
    del arrays

step(); step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 10)
"""


def _faults_per_step(**environ):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "FUSEGRAD_TUNE"))}
    result = subprocess.run([sys.executable, "-c", _FAULTS_PER_STEP], capture_output=True, text=True,
                            env=dict(env, **environ), timeout=120)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_memory_freed_by_a_step_is_reused_by_the_next():
    tuned, untuned = _faults_per_step(), _faults_per_step(FUSEGRAD_TUNE_MALLOC="0")
    # 20 MiB of fresh pages would be 5,120 faults a step
    assert tuned < 50, f"{tuned} page faults per step after importing fusegrad ({untuned} with FUSEGRAD_TUNE_MALLOC=0)"


@pytest.mark.parametrize("environ", [{"FUSEGRAD_TUNE_MALLOC": "0"}, {"MALLOC_TRIM_THRESHOLD_": "131072"},
                                     {"MALLOC_MMAP_THRESHOLD_": "131072"}, {"MALLOC_TOP_PAD_": "0"},
                                     {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}])
def test_malloc_settings_of_the_user_are_left_alone(environ):
    assert tune_malloc(environ) is False


def test_malloc_thresholds_are_set_on_glibc():
    assert tune_malloc({}) is GLIBC
