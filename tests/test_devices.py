"""Devices in the main test process (no GPU, no simulator here), and the cuda cases of
tests/cuda_cases.py run where a "cuda" device exists: under Numba's CUDA simulator in a
subprocess (NUMBA_ENABLE_CUDASIM=1 must be set before numba is imported, and this process has
imported it already), and on a real GPU with `pytest -m cuda`."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fusegrad as fg
from fusegrad.runtime import devices

NO_GPU = ("No CUDA GPUs are available (numba.cuda finds no GPU; set NUMBA_ENABLE_CUDASIM=1 before importing "
          "fusegrad to run the 'cuda' device in Numba's CUDA simulator)")
TESTS = os.path.dirname(os.path.abspath(__file__))


def test_cpu_tensors_print_and_convert_as_before():
    x = fg.tensor([1.0, 2.0])
    assert x.device is devices.CPU and not x.is_cuda and repr(x) == "tensor([1., 2.])"
    assert x.cpu() is x and x.to("cpu") is x and x.to(fg.device("cpu")) is x
    assert np.asarray(x) is x.numpy()
    cuda = fg.device("cuda")
    assert cuda.type == "cuda" and cuda.index is None and repr(cuda) == "device(type='cuda')"
    assert fg.device("cuda", 1) == fg.device("cuda:1") != cuda


@pytest.mark.skipif(fg.cuda.is_available(), reason="a GPU is present")
def test_cuda_refused_without_a_gpu():
    assert fg.cuda.device_count() == 0
    fg.cuda.synchronize()   # nothing queued: returns
    for make in (lambda: fg.ones(1, device="cuda"), lambda: fg.ones(1).cuda(), lambda: fg.ones(1).to("cuda:0"),
                 lambda: fg.nn.Linear(2, 2).cuda(), lambda: fg.set_default_device("cuda"),
                 lambda: fg.zeros_like(fg.ones(1), device="cuda")):
        with pytest.raises(RuntimeError) as info:
            make()
        assert str(info.value) == NO_GPU
    assert fg.get_default_device() is devices.CPU


def _run_cases(env, timeout):
    result = subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-p", "no:cacheprovider", "-x",
                             os.path.join(TESTS, "cuda_cases.py")], cwd=os.path.dirname(TESTS), env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-3000:]


def test_cuda_cases_under_the_simulator():
    _run_cases(dict(os.environ, NUMBA_ENABLE_CUDASIM="1"), timeout=600)


@pytest.mark.cuda
def test_cuda_cases_on_the_gpu():
    _run_cases({k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}, timeout=1200)
