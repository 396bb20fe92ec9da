"""The persistent compile cache (runtime/cache.py, codegen/store.py) and `fusegrad cache`.

Fresh processes show what a user restarting a script sees: the first compiles, the next loads
without compiling, and both compute the same numbers. Faults are made for real: processes racing,
truncated and garbage files, a read-only and a world-writable directory."""
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys

import numpy as np
import pytest

import fusegrad
from fusegrad.runtime import cache
from fusegrad.runtime.cache import Index

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A compiled SGD step of a small MLP; HIDDEN (argv[1]) changes the graph. Prints the losses and a
# checksum of the parameters after three steps.
STEP = """
import json, sys, warnings
warnings.simplefilter("always")
import numpy as np
import fusegrad as torch
hidden = int(sys.argv[1])
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(6, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 3))
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))

@torch.compile
def step(x, y):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss

losses = [step(x, y).item() for _ in range(4)]
assert step.replays >= 1, step.last_reason
print(json.dumps({"losses": losses, "params": [float(p.detach().numpy().astype(np.float64).sum())
                                                for p in model.parameters()]}))
print("numba imported:", "numba" in sys.modules, file=sys.stderr)
"""


def run_step(cache_dir, hidden=5, extra_env=None):
    env = dict(os.environ, FUSEGRAD_CACHE_DIR=str(cache_dir), **(extra_env or {}))
    result = subprocess.run([sys.executable, "-c", STEP, str(hidden)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def start_step(cache_dir, hidden):
    env = dict(os.environ, FUSEGRAD_CACHE_DIR=str(cache_dir))
    return subprocess.Popen([sys.executable, "-c", STEP, str(hidden)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def cli(*args, cache_dir=None, stdin=""):
    env = dict(os.environ)
    if cache_dir is not None:
        env["FUSEGRAD_CACHE_DIR"] = str(cache_dir)
    return subprocess.run([sys.executable, "-m", "fusegrad", "cache", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A cache directory after one cold process and one warm one, with both results."""
    root = tmp_path_factory.mktemp("warm")
    cold, cold_err = run_step(root)
    again, warm_err = run_step(root)
    return root, cold, again, cold_err + warm_err


def numba_files(root, suffix):
    return sorted(p for p in (root / "kernels" / "__pycache__").iterdir() if p.name.endswith(suffix))


def test_second_process_loads_without_compiling(warm):
    root, cold, again, stderr = warm
    assert again == cold
    newest, first = Index(str(root)).lookups("step", 2)
    assert (first["hit"], newest["hit"]) == (0, 1)
    assert first["compiled"] > 0 and newest["compiled"] == 0   # Numba's own count of compilations
    assert first["reason"] == "no entry of this function in the cache yet"
    [entry] = Index(str(root)).rows()
    assert entry["name"] == "step" and entry["hits"] == 1 and entry["source_file"] == "<string>"
    assert json.loads(entry["summary"])["kernels"] >= 1 and entry["size"] > 0
    assert "warning" not in stderr.lower(), stderr


def test_warm_process_runs_native_kernels_without_numba(warm, tmp_path):
    """With native libraries (built in the background after a plan's first run, finished before the
    process exits), a later process runs the same step without importing Numba at all."""
    native = {"FUSEGRAD_NATIVE_KERNELS": "1"}
    cold, stderr = run_step(tmp_path, extra_env=native)
    assert cold == warm[1] and "numba imported: True" in stderr
    libraries = sorted((tmp_path / "kernels").glob("fusegrad_k_*.so"))
    assert libraries, sorted(p.name for p in (tmp_path / "kernels").iterdir())
    result, stderr = run_step(tmp_path, extra_env=native)
    assert result == cold
    assert "numba imported: False" in stderr, stderr
    assert Index(str(tmp_path)).lookups("step", 1)[0]["hit"] == 1
    libraries[0].write_bytes(libraries[0].read_bytes()[:1000])   # truncated: unusable, never fatal
    result, stderr = run_step(tmp_path, extra_env=native)
    assert result == cold and "numba imported: True" in stderr
    assert sorted((tmp_path / "kernels").glob("fusegrad_k_*.so")) == libraries   # and built again
    result, stderr = run_step(tmp_path, extra_env=native)
    assert result == cold and "numba imported: False" in stderr
    os.chmod(libraries[0], 0o666)   # others could have replaced it: never loaded
    result, stderr = run_step(tmp_path, extra_env=native)
    assert result == cold and "numba imported: True" in stderr


def test_four_processes_compiling_at_once_lose_nothing(tmp_path):
    procs = [start_step(tmp_path, hidden) for hidden in (5, 5, 7, 7)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [e for _, e in outputs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert results[0] == results[1] and results[2] == results[3]
    assert len(Index(str(tmp_path)).rows()) == 2
    for hidden, expected in ((5, results[0]), (7, results[2])):   # every Numba index entry survived
        result, _ = run_step(tmp_path, hidden)
        assert result == expected
        assert Index(str(tmp_path)).lookups("step", 1)[0]["compiled"] == 0


def copy_cache(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_truncated_kernel_file_is_rewritten_not_run(warm, tmp_path):
    root, cold, _, _ = warm
    root = copy_cache(root, tmp_path / "c")
    kernel = sorted((root / "kernels").glob("fusegrad_k_*.py"))[0]
    source = kernel.read_text()
    kernel.write_text(source[:len(source) // 2].rsplit("\n", 1)[0] + "\n")   # still valid Python, half a kernel
    result, stderr = run_step(root)
    assert result == cold
    assert "did not match its kernel's source (truncated or edited); it is rewritten" in stderr
    assert kernel.read_text() == source


@pytest.mark.parametrize("suffix, damage", [(".nbc", b""), (".nbc", b"\x80\x04garbage"), (".nbi", b"garbage")])
def test_corrupt_numba_cache_file_is_discarded_and_rebuilt(warm, tmp_path, suffix, damage):
    root, cold, _, _ = warm
    root = copy_cache(root, tmp_path / "c")
    victim = numba_files(root, suffix)[0]
    victim.write_bytes(victim.read_bytes()[:40] if damage == b"" else damage)
    result, stderr = run_step(root)
    assert result == cold
    assert stderr.count("discarded the unreadable Numba cache of fusegrad_k_") == 1, stderr
    assert Index(str(root)).lookups("step", 1)[0]["compiled"] == 1
    result, stderr = run_step(root)   # rebuilt: the next process loads everything
    assert result == cold and "discarded" not in stderr
    assert Index(str(root)).lookups("step", 1)[0]["compiled"] == 0


def test_garbage_index_is_replaced(warm, tmp_path):
    root, cold, _, _ = warm
    root = copy_cache(root, tmp_path / "c")
    (root / "index.sqlite3").write_bytes(b"this is not an SQLite database" * 100)
    result, stderr = run_step(root)
    assert result == cold
    assert "index.sqlite3 is not a usable index (file is not a database); it is replaced by an empty one" in stderr
    [lookup] = Index(str(root)).lookups()
    assert lookup["hit"] == 0 and lookup["compiled"] == 0   # the index was lost, the kernels were not


def _make_read_only(path):
    """chmod where that binds (not root); else the immutable attribute. False when neither works."""
    os.chmod(path, 0o555)
    if not os.access(path, os.W_OK):
        return True
    os.chmod(path, 0o755)
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        try:
            (path / "probe").touch()
        except OSError:
            return True
        subprocess.run(["chattr", "-i", str(path)], check=True)
    return False


def test_read_only_cache_dir_compiles_in_memory(warm, tmp_path):
    _, cold, _, _ = warm
    root = tmp_path / "ro"
    root.mkdir(mode=0o700)
    if not _make_read_only(root):
        pytest.skip("cannot make a read-only directory here (root without chattr)")
    try:
        result, stderr = run_step(root)
    finally:
        subprocess.run(["chattr", "-i", str(root)], capture_output=True)
        os.chmod(root, 0o700)
    assert result == cold
    assert stderr.count("fusegrad cache: cannot create") + stderr.count("is not writable") == 1, stderr
    assert "Kernels are compiled in memory for this process" in stderr
    assert list(root.iterdir()) == []


def test_full_disk_compiles_in_memory(warm, tmp_path):
    """A 16 KiB file system (a private mount namespace: needs root) fills at the first kernels."""
    _, cold, _, _ = warm
    root = tmp_path / "small"
    root.mkdir()
    command = (f"mount -t tmpfs -o size=16k,mode=0700 tmpfs {root} && cd {ROOT} && "
               f"FUSEGRAD_CACHE_DIR={root} exec {sys.executable} -c \"$STEP\" 5")
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs tmpfs {root}"],
                                                         capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small file system here (unshare -m and mount need root)")
    result = subprocess.run(["unshare", "-m", "sh", "-c", command], env=dict(os.environ, STEP=STEP),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == cold
    assert result.stderr.count("(No space left on device). Kernels are compiled in memory from now on in this "
                               "process.") == 1, result.stderr


def test_world_writable_cache_dir_is_refused(warm, tmp_path):
    _, cold, _, _ = warm
    root = tmp_path / "shared"
    (root / "kernels").mkdir(parents=True)
    os.chmod(root, 0o777)
    planted = root / "kernels" / "planted.py"
    planted.write_text("raise SystemExit('code from another user ran')\n")
    result, stderr = run_step(root)
    assert result == cold
    assert f"refused: {root} is writable by other users (mode 0o777; `chmod go-w` it); loading kernels " \
           "from it would run code others wrote" in stderr
    assert sorted(p.name for p in (root / "kernels").iterdir()) == ["planted.py"]   # nothing written there
    assert not (root / "index.sqlite3").exists()


# -- in-process: keys, explanations, pruning

def compiled_step(cache_dir, n):
    w = fusegrad.ones(n, requires_grad=True)

    @fusegrad.compile(cache_dir=str(cache_dir))
    def scaled(x):
        loss = (w * x).tanh().sum()
        loss.backward()
        return loss

    x = fusegrad.ones(n)
    for _ in range(3):
        scaled(x)
    assert scaled.replays >= 1
    return scaled


def test_miss_explains_the_changed_component(tmp_path, monkeypatch):
    compiled_step(tmp_path, 4)
    environment = cache._environment()
    monkeypatch.setattr(cache, "_environment", lambda: dict(environment, numba=("0.0.1", None)))
    compiled_step(tmp_path, 4)
    newest = Index(str(tmp_path)).lookups("scaled", 1)[0]
    assert newest["hit"] == 0
    assert newest["reason"] == f"numba changed ({environment['numba'][0]} -> 0.0.1)"
    monkeypatch.undo()
    compiled_step(tmp_path, 5)
    reason = Index(str(tmp_path)).lookups("scaled", 1)[0]["reason"]
    assert "inputs changed (f32[4], f32[4]" in reason and "-> f32[5], f32[5]" in reason, reason


def test_structure_key_sees_constant_values():
    from fusegrad.ir.graph import Builder
    from fusegrad.ir import dtypes as D
    keys = []
    for value in (np.arange(3.0), np.arange(3.0) + 1):
        b = Builder()
        x = b.placeholder(None, (3,), D.float64)
        graph = b.graph([b.add(x, b.const(value))])
        keys.append(cache.key_of(cache.components(graph, "cpu", {})[0]))
    assert keys[0] != keys[1]


def test_size_cap_prunes_least_recently_used_and_keeps_shared_kernels(tmp_path, monkeypatch):
    compiled_step(tmp_path, 4)
    [first] = Index(str(tmp_path)).rows()
    monkeypatch.setenv("FUSEGRAD_CACHE_MAX_SIZE", str(first["size"] + 1))
    compiled_step(tmp_path, 6)   # same kernels (sizes are loop bounds), another entry
    [kept] = Index(str(tmp_path)).rows()
    assert kept["key"] != first["key"] and kept["last_used"] >= first["last_used"]
    for module in json.loads(kept["modules"]):
        assert (tmp_path / "kernels" / f"{module}.py").exists()


def test_parse_size_and_age():
    assert cache.parse_size("1G") == 1 << 30 and cache.parse_size("500M") == 500 << 20
    assert cache.parse_size("4096") == 4096 and cache.parse_size("1.5KiB") == 1536
    assert cache.parse_age("30d") == 30 * 86400 and cache.parse_age("90m") == 5400
    with pytest.raises(ValueError, match=r"invalid size '1X': use a number of bytes with an optional K, M, G or T"):
        cache.parse_size("1X")
    with pytest.raises(ValueError, match=r"invalid age 'soon': use a number with s, m, h, d or w \(e.g. 30d\)"):
        cache.parse_age("soon")


# -- the command line, run for real

def test_cli_list_show_stats_explain(warm):
    root = warm[0]
    listed = cli("list", cache_dir=root)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["KEY", "FUNCTION", "TARGET", "KERNELS", "SIZE", "HITS", "CREATED", "LAST", "USED"]
    key = row.split()[0]
    assert row.split()[1:3] == ["step", "cpu"]
    [entry] = json.loads(cli("list", "--json", cache_dir=root).stdout)
    assert entry["key"].startswith(key) and entry["hits"] == 1 and entry["components"]["target"][0] == "cpu"

    shown = cli("show", key[:6], cache_dir=root)
    assert shown.returncode == 0, shown.stderr
    for expected in (f"key          {entry['key']}", "function     step", "# key components", "numba ",
                     "# guards", "def guard(A, K):", "# plan", "@njit(cache=True", "# driver", "def run("):
        assert expected in shown.stdout
    dot = cli("show", key, "--dot", cache_dir=root)
    assert dot.returncode == 0 and dot.stdout.startswith('digraph "step_0" {')
    assert dot.stdout.count("subgraph cluster_") == entry["summary"]["kernels"]
    stats = cli("stats", cache_dir=root).stdout
    assert "entries             1\n" in stats and "lookups             2 (1 hits, 1 misses)" in stats
    assert "hit rate            50.0%" in stats
    explained = cli("explain", "step", cache_dir=root).stdout.splitlines()
    assert " hit  " in explained[0] and " miss  " in explained[1]
    assert explained[2].strip() == "no entry of this function in the cache yet"
    assert cli("dir", cache_dir=root).stdout.strip() == str(root)


def test_cli_errors_are_one_line_with_exit_codes(warm, tmp_path):
    root = warm[0]
    cases = [(("show", "0000"), 1, f"fusegrad cache: no entry's key starts with '0000' in {root}"),
             (("show", "xyz"), 2, "fusegrad cache: error: KEY must be a hexadecimal key or key prefix, got 'xyz'"),
             (("prune",), 2, "fusegrad cache: error: prune needs --max-size and/or --older-than"),
             (("prune", "--max-size", "lots"), 2, "fusegrad cache: error: invalid size 'lots': use a number of "
                                                   "bytes with an optional K, M, G or T suffix"),
             (("frobnicate",), 2, "fusegrad cache: error: argument action: invalid choice: 'frobnicate'"),
             (("explain", "nothing_like_this"), 1, "fusegrad cache: no lookups recorded for a function matching "
                                                    f"'nothing_like_this' in {root}")]
    for args, code, message in cases:
        result = cli(*args, cache_dir=root)
        assert (result.returncode, result.stdout) == (code, ""), (args, result)
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(message), (args, result.stderr)


def test_cli_clear_asks_and_prune_removes(warm, tmp_path):
    root = copy_cache(warm[0], tmp_path / "c")
    refused = cli("clear", cache_dir=root, stdin="n\n")
    assert refused.returncode == 1 and "Remove all 1 entries and every kernel from" in refused.stdout
    assert len(Index(str(root)).rows()) == 1
    pruned = cli("prune", "--older-than", "1d", cache_dir=root)
    assert (pruned.returncode, pruned.stdout) == (0, "removed 0 entries, freed 0 B\n")
    pruned = cli("prune", "--max-size", "0", cache_dir=root)
    assert pruned.returncode == 0 and pruned.stdout.startswith("removed 1 entries, freed ")
    assert list((root / "kernels").glob("*.py")) == [] and Index(str(root)).rows() == []
    result, _ = run_step(root)
    assert result == warm[1]
    cleared = cli("clear", "--yes", cache_dir=root)
    assert cleared.returncode == 0 and cleared.stdout.startswith("removed 1 entries, freed ")
    assert list((root / "kernels").rglob("*.nb*")) == []
    assert cli("list", cache_dir=root).stdout == f"no entries in {root}\n"


def test_clear_removes_only_what_fusegrad_wrote(warm, tmp_path):
    """Found in review: clear deleted every file under kernels/, following links out of it."""
    root = copy_cache(warm[0], tmp_path / "c")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data.txt").write_text("precious")
    (root / "kernels" / "notes.txt").write_text("mine")
    (root / "kernels" / "link").symlink_to(outside)
    cleared = cli("clear", "--yes", cache_dir=root)
    assert cleared.returncode == 0, cleared.stderr
    assert (outside / "data.txt").read_text() == "precious" and (root / "kernels" / "notes.txt").exists()
    assert list((root / "kernels").glob("fusegrad_*")) == []
    os.chmod(root, 0o777)
    refused = cli("clear", "--yes", cache_dir=root)
    assert refused.returncode == 2 and refused.stderr.startswith(f"fusegrad cache: error: refusing to delete "
                                                                 f"from {root}: {root} is writable by other users")


def test_a_failing_index_is_kept_not_replaced(tmp_path, monkeypatch):
    """Only a file that is not a database is replaced; an operational failure (no file handles,
    a full disk, a lock) leaves the index as it is (found in review: EMFILE wiped it)."""
    index = Index(str(tmp_path))
    with index.connect() as db:
        db.execute("INSERT INTO entries (key, name, modules, size, last_used) VALUES ('abc', 'f', '[]', 1, 0)")
    real_connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: (_ for _ in ()).throw(
        sqlite3.OperationalError("unable to open database file")))
    with pytest.raises(sqlite3.OperationalError, match="unable to open database file"):
        index.stats()
    monkeypatch.setattr(sqlite3, "connect", real_connect)
    assert [r["key"] for r in index.rows()] == ["abc"]


FORK = """
import os, sys, time
import numpy as np
import fusegrad as fg
from fusegrad.codegen import store
x = fg.tensor(np.linspace(0, 1, 64, dtype=np.float32))
f = fg.compile(lambda x: (fg.sin(x) * 2 + x.exp()).sum())
for _ in range(2):
    f(x)
assert store._builds.worker is not None   # native builds are running in their thread
pid = os.fork()
if pid == 0:
    g = fg.compile(lambda x: (fg.cos(x) * 3 - x).sum())
    g(x); g(x)
    os._exit(0)
deadline = time.time() + 120
while time.time() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        sys.exit(status)
    time.sleep(0.2)
os.kill(pid, 9)
sys.exit("the child hung")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forking_while_native_builds_run(tmp_path):
    """A child forked while the build thread holds Numba's compiler lock compiles normally (found
    in review: it inherited the lock held and hung at its first compile)."""
    env = dict(os.environ, FUSEGRAD_CACHE_DIR=str(tmp_path), FUSEGRAD_NATIVE_KERNELS="1")
    result = subprocess.run([sys.executable, "-c", FORK], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr


def test_console_script_matches_module():
    script = shutil.which("fusegrad")
    if script is None:
        pytest.skip("the fusegrad script is not on PATH (pip install -e . puts it there)")
    result = subprocess.run([script, "cache", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "{dir,list,show,stats,explain,clear,prune}" in result.stdout


def test_stat_mode_of_a_fresh_cache_is_private(tmp_path):
    compiled_step(tmp_path / "fresh", 3)
    for path in (tmp_path / "fresh", tmp_path / "fresh" / "kernels"):
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o022 == 0
