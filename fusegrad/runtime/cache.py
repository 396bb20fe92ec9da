"""The persistent compile cache: plan keys made of named components, and an SQLite index.

A plan's kernels are content-addressed module files (codegen.store), so what a plan runs never
depends on this index: it records what was compiled, for whom, and what a lookup found. Each
compiled plan is an entry, keyed by the hash of its components:

    graph     the structure of the graph (ops, attributes, wiring, constant values)
    inputs    the input shapes and dtypes
    config    the codegen settings that change the generated code
    fusegrad  fusegrad's version and a hash of the compiler's own source
    numba, llvmlite, numpy   their versions
    cpu       the host CPU's model and instruction sets
    target    the backend ("cpu")

Each component's text and hash are stored, so a miss says what changed ("numba version changed
(0.67.0 -> 0.68.1)", "graph changed at node 12"). The index also logs every lookup, which is
what `fusegrad cache explain` and `stats` read. Entries past the size cap (FUSEGRAD_CACHE_MAX_SIZE,
default 1 GiB) are pruned least recently used first, their kernel files with them.
"""
import contextlib
import functools
import glob
import hashlib
import json
import os
import platform
import re
import sqlite3
import time

import numpy as np

from ..codegen.native import host_cpu_key
from ..codegen.store import store, warn
from ..ir.graph import format_nodes, format_type
from .log import log

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY, name TEXT, source_file TEXT, target TEXT, components TEXT, summary TEXT,
    modules TEXT, guards TEXT, structure TEXT, description TEXT, dot TEXT, size INTEGER,
    created REAL, last_used REAL, hits INTEGER, compile_seconds REAL);
CREATE TABLE IF NOT EXISTS lookups (
    id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL, name TEXT, key TEXT, hit INTEGER,
    compiled INTEGER, seconds REAL, reason TEXT);
"""
COMPONENTS = ("graph", "inputs", "config", "fusegrad", "numba", "llvmlite", "numpy", "cpu", "target")
SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DEFAULT_MAX_SIZE = "1G"


def parse_size(text):
    """'500M', '1G', '4096' -> bytes; ValueError names the accepted forms."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ValueError(f"invalid size {text!r}: use a number of bytes with an optional K, M, G or T suffix")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2).upper()])


def parse_age(text):
    """'30d', '12h', '90m', '45s', '2w' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", str(text))
    if not match:
        raise ValueError(f"invalid age {text!r}: use a number with s, m, h, d or w (e.g. 30d)")
    return float(match.group(1)) * AGE_UNITS[match.group(2)]


def _digest(text):
    return hashlib.sha256(text.encode()).hexdigest()


def structure_text(graph):
    """The graph as text without types: one line a node, constant arrays by their bytes' hash."""
    lines = [line.split("  # ")[0] for line in format_nodes(graph.nodes, graph.inputs, graph.outputs).splitlines()[1:]]
    arrays = []
    for node in graph.nodes:
        values = [v for v in node.inputs if isinstance(v, np.ndarray)]
        values += [v for v in (node.attrs or {}).values() if isinstance(v, np.ndarray)]
        if node.op.name == "const":
            values.append(np.asarray(node.attrs["value"]))
        arrays += [hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()[:16] + str(v.dtype) for v in values]
    return "\n".join(lines + ([f"# constants {' '.join(arrays)}"] if arrays else []))


@functools.lru_cache(maxsize=None)
def _environment():
    """The components that do not depend on the graph, computed once per process."""
    from importlib.metadata import version   # numba's version without importing numba

    from .. import __version__
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sources = hashlib.sha256()
    compiler_files = (glob.glob(os.path.join(package, "codegen", "*.py")) + glob.glob(os.path.join(package, "ir", "*.py"))
                      + [os.path.join(package, "runtime", "plan.py")])
    for path in sorted(compiler_files):
        with open(path, "rb") as f:
            sources.update(f.read())
    return {"fusegrad": (f"{__version__} (compiler source {sources.hexdigest()[:12]})", sources.hexdigest()),
            "numba": (version("numba"), None), "llvmlite": (version("llvmlite"), None),
            "numpy": (np.__version__, None), "cpu": (f"{_cpu_name()} ({host_cpu_key()})", host_cpu_key())}


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def components(graph, target, config):
    """{name: (text, digest)} for every component of a plan's key, in COMPONENTS order."""
    structure = structure_text(graph)
    found = dict(_environment(),
                 graph=(f"{len(graph.nodes)} nodes", _digest(structure)),
                 inputs=(", ".join(format_type(p.dtype, p.shape) for p in graph.inputs), None),
                 config=(", ".join(f"{k}={v!r}" for k, v in sorted(config.items())), None),
                 target=(target, None))
    return {name: (found[name][0], found[name][1] or _digest(found[name][0])) for name in COMPONENTS}, structure


def key_of(parts):
    return _digest("\n".join(f"{name}={parts[name][1]}" for name in COMPONENTS))[:40]


def why_missed(parts, structure, previous):
    """What differs between a new key's components and the latest entry of the same function."""
    if previous is None:
        return "no entry of this function in the cache yet"
    old = json.loads(previous["components"])
    reasons = []
    for name in COMPONENTS:
        before, after = old.get(name, ("?", "?")), parts[name]
        if before[1] == after[1]:
            continue
        if name == "graph":
            reasons.append("graph changed " + _first_difference(previous["structure"] or "", structure))
        elif name == "cpu" and before[0] == after[0]:
            reasons.append(f"cpu features changed ({after[0]})")
        else:
            reasons.append(f"{name} changed ({before[0]} -> {after[0]})")
    return "; ".join(reasons) or "same components, entry removed (pruned or cleared)"


def _first_difference(before, after):
    a, b = before.splitlines(), after.splitlines()
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"at node {k}: `{x.strip()}` is now `{y.strip()}`"
    return f"in length ({len(a)} -> {len(b)} lines)"


class Index:
    """The SQLite index of one cache directory. Every method degrades to doing nothing (with one
    warning) when the database cannot be written; a file that is not a database is replaced."""

    def __init__(self, root):
        self.root = root
        self.path = os.path.join(root, "index.sqlite3")

    @contextlib.contextmanager
    def connect(self):
        connection = None
        try:
            try:
                connection = self._open()
            except sqlite3.DatabaseError as error:
                if isinstance(error, sqlite3.OperationalError):   # locked, no file handles, disk full: the
                    raise                                          # index is fine; record() warns instead
                warn(f"{self.path} is not a usable index ({error}); it is replaced by an empty one")
                for suffix in ("", "-journal", "-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(self.path + suffix)
                connection = self._open()
            with connection:
                yield connection
        finally:
            if connection is not None:
                connection.close()

    def _open(self):
        connection = sqlite3.connect(self.path, timeout=60)
        connection.row_factory = sqlite3.Row
        connection.executescript(SCHEMA)
        return connection

    def rows(self, where="", params=(), order="created DESC"):
        if not os.path.exists(self.path):
            return []
        with self.connect() as db:
            return [dict(r) for r in db.execute(f"SELECT * FROM entries {where} ORDER BY {order}", params)]

    def find(self, prefix):
        """The entries whose key starts with `prefix`."""
        return self.rows("WHERE key LIKE ?", (prefix.replace("%", "").replace("_", "") + "%",))

    def lookups(self, name=None, limit=20):
        if not os.path.exists(self.path):
            return []
        with self.connect() as db:
            query, params = "SELECT * FROM lookups", ()
            if name:
                query, params = query + " WHERE name LIKE ?", (f"%{name}%",)
            return [dict(r) for r in db.execute(query + " ORDER BY id DESC LIMIT ?", params + (limit,))]

    def stats(self):
        if not os.path.exists(self.path):
            return {"entries": 0, "size": 0, "lookups": 0, "hits": 0, "saved_seconds": 0.0}
        with self.connect() as db:
            entries, size = db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries").fetchone()
            lookups, hits = db.execute("SELECT COUNT(*), COALESCE(SUM(hit), 0) FROM lookups").fetchone()
            saved = db.execute("SELECT COALESCE(SUM(MAX(e.compile_seconds - l.seconds, 0)), 0) FROM lookups l "
                               "JOIN entries e ON e.key = l.key WHERE l.hit = 1").fetchone()[0]
        return {"entries": entries, "size": size, "lookups": lookups, "hits": hits, "saved_seconds": saved}

    def remove(self, keys):
        """Delete these entries, and the kernel files no remaining entry uses; returns bytes freed."""
        keys = set(keys)
        if not keys:
            return 0
        with self.connect() as db:
            rows = [dict(r) for r in db.execute("SELECT key, modules, size FROM entries")]
            kept = set()
            for r in rows:
                if r["key"] not in keys:
                    kept.update(json.loads(r["modules"]))
            doomed = set()
            for r in rows:
                if r["key"] in keys:
                    doomed.update(set(json.loads(r["modules"])) - kept)
            db.executemany("DELETE FROM entries WHERE key = ?", [(k,) for k in keys])
        freed = 0
        for module in doomed:
            for path in module_files(self.root, module):
                with contextlib.suppress(FileNotFoundError):
                    freed += os.path.getsize(path)
                    os.remove(path)
        return freed

    def prune(self, max_size=None, older_than=None):
        """Remove entries unused for `older_than` seconds, then least recently used ones until the
        entries' total size is at most `max_size` bytes. Returns (entries removed, bytes freed)."""
        rows = self.rows(order="last_used ASC")
        doomed = []
        if older_than is not None:
            cutoff = time.time() - older_than
            doomed += [r["key"] for r in rows if r["last_used"] < cutoff]
        if max_size is not None:
            total = sum(r["size"] for r in rows if r["key"] not in doomed)
            for r in rows:
                if total <= max_size:
                    break
                if r["key"] not in doomed:
                    doomed.append(r["key"])
                    total -= r["size"]
        return len(doomed), self.remove(doomed)

    def clear(self):
        """Remove every entry, the lookup log and every file fusegrad wrote (kernel modules, Numba's
        cache files of them, native libraries; not lock files); returns (entries, bytes). Nothing
        else in the directory is touched, and no link is followed."""
        keys = [r["key"] for r in self.rows()]
        count, freed = len(keys), self.remove(keys)
        for folder in ("kernels", os.path.join("kernels", "__pycache__")):   # lock files stay (module_files)
            try:
                entries = list(os.scandir(os.path.join(self.root, folder)))
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.name.startswith("fusegrad_") and entry.is_file(follow_symlinks=False):
                    freed += entry.stat(follow_symlinks=False).st_size
                    os.remove(entry.path)
        if os.path.exists(self.path):
            with self.connect() as db:
                db.execute("DELETE FROM lookups")
        return count, freed


def module_files(root, module):
    """A kernel module's files: its source and native libraries, Numba's index and code files. (Not
    its lock file: another process may hold it, and a new file in its place would be a second lock.)"""
    kernels = os.path.join(root, "kernels")
    return (glob.glob(os.path.join(kernels, glob.escape(module) + ".*"))
            + glob.glob(os.path.join(kernels, "__pycache__", glob.escape(module) + ".*")))


def max_size():
    return parse_size(os.environ.get("FUSEGRAD_CACHE_MAX_SIZE", DEFAULT_MAX_SIZE))


def record(plan, seconds, compiled):
    """Log `plan`'s lookup, after its first call (which took `seconds` and compiled `compiled`
    kernels), and add its entry when it is new. Never raises: the index is only a record."""
    kernels = store(plan.cache_dir)
    if not kernels.usable:
        return
    try:
        _record(Index(kernels.root), plan, seconds, compiled)
    except Exception as error:   # sqlite3.Error, OSError; a failure here must not fail the step
        warn(f"could not update the index {os.path.join(kernels.root, 'index.sqlite3')} "
             f"({type(error).__name__}: {error}); the compiled plan runs regardless")


def _record(index, plan, seconds, compiled):
    info = plan.info
    now = time.time()
    with index.connect() as db:
        hit = db.execute("SELECT 1 FROM entries WHERE key = ?", (plan.key,)).fetchone() is not None
        if hit:
            db.execute("UPDATE entries SET hits = hits + 1, last_used = ? WHERE key = ?", (now, plan.key))
            reason = None if not compiled else f"{compiled} kernels were compiled again (their Numba cache was missing)"
        else:
            previous = db.execute("SELECT components, structure FROM entries WHERE name = ? AND target = ? "
                                  "ORDER BY last_used DESC LIMIT 1", (info["name"], plan.target)).fetchone()
            reason = why_missed(plan.components, plan.structure, previous and dict(previous))
            modules = sorted({k.module for k in plan.kernels})
            size = sum(os.path.getsize(p) for m in modules for p in module_files(index.root, m) if os.path.exists(p))
            summary = {"nodes": len(plan.graph.nodes), "kernels": len(plan.kernels),
                       "steps": len(plan.steps), "kernel_ops": sum(len(k.group.nodes) for k in plan.kernels)}
            db.execute("INSERT OR REPLACE INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (plan.key, info["name"], info.get("source_file"), plan.target, json.dumps(plan.components),
                        json.dumps(summary), json.dumps(modules), info.get("guards"), plan.structure,
                        plan.describe(), plan.to_dot(), size, now, now, 0,
                        plan.compile_seconds + seconds))
        db.execute("INSERT INTO lookups (time, name, key, hit, compiled, seconds, reason) VALUES (?,?,?,?,?,?,?)",
                   (now, info["name"], plan.key, int(hit), compiled, plan.compile_seconds + seconds, reason))
        total = db.execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()[0]
    log("cache", lambda: f"{info['name']}: cache {'hit' if hit else 'miss'} {plan.key[:12]}"
                         + (f" ({reason})" if reason else "")
                         + f", {compiled} kernels compiled, first call {seconds:.3f} s")
    limit = max_size()
    if total > limit:
        removed, freed = index.prune(max_size=limit)
        log("cache", f"pruned {removed} least recently used entries ({freed} bytes) to stay under {limit} bytes")
