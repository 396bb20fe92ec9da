"""Where generated kernel modules live, and how they are written and imported safely.

A kernel is a real module file, `<cache>/kernels/fusegrad_k_<sha of its source>.py`, imported from
there so that Numba's own cache (`kernels/__pycache__/*.nbi` index and `*.nbc` code) serves it in
later processes. Importing a file runs it, and Numba's cache has sharp edges (NUMBA_NOTES §3), so:

- A cache directory is checked once per process. One that other users can write to, or that
  another user owns, is refused: importing from it would run their code. One this process cannot
  write to (read-only, disk full) is not used either. Either way kernels are compiled in memory,
  with one warning that says why.
- A module file is written atomically (temporary file, then rename) and compared with the source
  before it is imported, so a truncated or edited file is rewritten, never run.
- Numba reads and writes a module's cache files under a lock file of that module: Numba updates
  its index by an unlocked read-modify-write, which loses entries when processes compile at once.
  A cache file Numba cannot load (truncated, garbage) is deleted, with one warning, and the
  kernel is compiled again instead of failing every call.
"""
import contextlib
import functools
import glob
import os
import stat
import sys
import tempfile
import threading
import warnings

from ..runtime.log import log
from . import native

try:
    import fcntl
except ImportError:   # Windows: no advisory locks; Numba's own temporary-file writes remain
    fcntl = None


# FUSEGRAD_NATIVE_KERNELS=0 neither builds nor loads native kernel libraries
NATIVE = os.environ.get("FUSEGRAD_NATIVE_KERNELS", "1") != "0"


def default_dir():
    """FUSEGRAD_CACHE_DIR when set, else the platform's user cache directory for fusegrad."""
    root = os.environ.get("FUSEGRAD_CACHE_DIR")
    if root:
        return os.path.abspath(os.path.expanduser(root))
    try:
        import platformdirs
        return platformdirs.user_cache_dir("fusegrad", appauthor=False)
    except ImportError:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return os.path.join(base, "fusegrad")


def warn(message):
    warnings.warn(f"fusegrad cache: {message}", RuntimeWarning, stacklevel=2)


def unsafe_reason(path):
    """Why `path` (an existing directory, or a file to load) must not be used, or None."""
    if not hasattr(os, "getuid"):
        return None
    info = os.stat(path)
    if info.st_uid != os.getuid():
        return f"{path} belongs to another user (uid {info.st_uid})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} is writable by other users (mode {stat.S_IMODE(info.st_mode):#o}; `chmod go-w` it)"
    return None


class Store:
    """The kernel modules of one cache directory. `reason` is None while the directory is used;
    otherwise it says why kernels are compiled in memory instead."""

    def __init__(self, root):
        self.root = root
        self.kernels = os.path.join(root, "kernels")
        self.locks = os.path.join(root, "locks")
        self.reason = None
        self._modules = {}   # module name -> the module, loaded
        self._numba = {}     # (module name, function name) -> its compiled function
        try:
            numba_cache = os.path.join(self.kernels, "__pycache__")   # Numba's pickles: loading runs them
            for path in (root, self.kernels, self.locks, numba_cache):
                os.makedirs(path, mode=0o700, exist_ok=True)
                unsafe = unsafe_reason(path)
                if unsafe is not None:
                    self.reason = f"refused: {unsafe}; loading kernels from it would run code others wrote"
                    break
                if not os.access(path, os.W_OK):
                    self.reason = f"{path} is not writable"
                    break
        except OSError as error:
            self.reason = f"cannot create {error.filename or root} ({error.strerror or error})"
        if self.reason is not None:
            warn(f"{self.reason}. Kernels are compiled in memory for this process; set FUSEGRAD_CACHE_DIR "
                 "to a directory of your own to cache them.")

    @property
    def usable(self):
        return self.reason is None

    def degrade(self, why):
        """Stop using the directory for this process (a write failed: disk full, permissions)."""
        if self.reason is None:
            self.reason = why
            warn(f"{why}. Kernels are compiled in memory from now on in this process.")

    def load(self, source, module_name):
        """The module of `source`: imported from its file in the cache, or built in memory."""
        if self.reason is None:
            path = os.path.join(self.kernels, module_name + ".py")
            try:
                self._write(path, source)
                module = _module_from_source(source, path, module_name)
            except OSError as error:
                self.degrade(f"writing {path} failed ({error.strerror or error})")
            else:
                return module
        return _in_memory(source, module_name)

    def kernel(self, kernel):
        """The compiled function of `kernel` (a codegen.cpu.Kernel): its native library when one
        was built for its shapes on this machine (see codegen.native: no Numba in the process until
        a call needs the Numba kernel, for other arguments), else the Numba kernel of its module."""
        if self.reason is None and NATIVE:
            path = os.path.join(self.kernels, kernel.module + ".py")
            library = native.library_path(path, kernel)
            if os.path.exists(library) and unsafe_reason(library) is None:   # loading it runs it
                try:
                    self._write(path, kernel.source)   # the fallback's file, checked as every kernel file is
                    return native.load(library, fallback=_Deferred(self.numba_kernel, kernel.source, kernel.module))
                except native.NativeUnavailable as error:   # truncated, another build format: built again
                    log("cache", f"native library not used ({error}); the Numba kernel runs, and it is rebuilt")
                    with contextlib.suppress(OSError):
                        os.remove(library)
                except OSError as error:
                    self.degrade(f"writing {path} failed ({error.strerror or error})")
        return self.numba_kernel(kernel.source, kernel.module)

    def numba_kernel(self, source, module_name, name="kernel"):
        """The compiled function `name` of a kernel module, loaded once per process (it serves
        every shape), its Numba cache guarded."""
        fn = self._numba.get((module_name, name))
        if fn is None:
            module = self._modules.get(module_name)
            if module is None:
                module = self._modules[module_name] = self.load(source, module_name)
            fn = self._numba[module_name, name] = getattr(module, name)
            self.guard(fn, module_name)
        return fn

    def build_native(self, kernels):
        """Build, in a background thread, the native library of each of these kernels (after their
        first call) that has none yet, so that later processes can run them without Numba."""
        if self.reason is None and NATIVE:
            todo = {}
            for k in kernels:
                if hasattr(k.fn, "overloads"):
                    library = native.library_path(k.fn.py_func.__code__.co_filename, k)
                    if not os.path.exists(library):
                        todo[library] = k
            if todo:
                _builds.submit(todo)

    def guard(self, dispatcher, module_name):
        """Make `dispatcher` (a kernel's njit function) read and write Numba's cache under this
        module's lock, and recover from corrupt cache files."""
        from numba.core.caching import FunctionCache   # imported with the kernel module already
        if self.reason is None and isinstance(getattr(dispatcher, "_cache", None), FunctionCache):
            dispatcher._cache = _locked_cache_class()(dispatcher.py_func,
                                                      os.path.join(self.locks, module_name + ".lock"), self)

    def _write(self, path, source):
        try:
            with open(path, encoding="utf-8") as f:
                if f.read() == source:
                    return
            warn(f"{path} did not match its kernel's source (truncated or edited); it is rewritten")
        except FileNotFoundError:
            pass
        except (UnicodeDecodeError, ValueError):
            warn(f"{path} was not a readable kernel file; it is rewritten")
        handle, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=os.path.basename(path) + ".", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as f:
                f.write(source)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)   # atomic: another process (or thread) never sees half a file
        except OSError:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise


def _module_from_source(source, path, module_name):
    """The module of `source`, whose file at `path` holds exactly that text: the verified text is
    compiled (no bytecode file is read, so a stale or damaged .pyc cannot stand in for it) under
    the file's name, which is what Numba's cache keys on."""
    module = type(sys)(module_name)
    module.__file__ = path
    sys.modules[module_name] = module   # before exec: Numba's cache pickles the module by name
    exec(compile(source, path, "exec"), module.__dict__)
    return module


CACHED = "@njit(cache=True"


def _in_memory(source, module_name):
    """Run the kernel source as a module that Numba does not cache (it has no file to key on)."""
    module = type(sys)(module_name)
    code = compile(source.replace(CACHED, "@njit(cache=False", 1), f"<fusegrad kernel {module_name}>", "exec")
    exec(code, module.__dict__)
    return module


@contextlib.contextmanager
def file_lock(path):
    """An exclusive advisory lock on `path` (created if missing) for the duration of the block."""
    if fcntl is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@functools.lru_cache(maxsize=None)
def _locked_cache_class():
    """Numba's function cache, locked per module, treating an unloadable entry as a miss (a
    class made on first use, so that importing fusegrad does not import Numba)."""
    from numba.core.caching import FunctionCache

    class LockedCache(FunctionCache):
        def __init__(self, py_func, lock_path, store):
            super().__init__(py_func)
            self._lock_path = lock_path
            self._store = store

        def load_overload(self, sig, target_context):
            with file_lock(self._lock_path):
                try:
                    return super().load_overload(sig, target_context)
                except Exception as error:   # truncated, garbage or foreign files: discard, recompile
                    self._discard(error)
                    return None

        def save_overload(self, sig, data):
            try:
                with file_lock(self._lock_path):
                    super().save_overload(sig, data)
            except OSError as error:   # full disk, permissions changed: keep the compiled code in memory
                self._store.degrade(f"saving a compiled kernel to {self.cache_path} failed ({error.strerror or error})")

        def _discard(self, error):
            cache_file = self._cache_file
            stem = os.path.join(cache_file._cache_path, cache_file._index_name[:-len(".nbi")])
            for path in [stem + ".nbi"] + glob.glob(glob.escape(stem) + ".*.nbc"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            warn(f"discarded the unreadable Numba cache of {self._py_func.__module__}.{self._py_func.__name__} "
                 f"({type(error).__name__}: {error}); the kernel is compiled again")

    return LockedCache


class _Deferred:
    """`make(*how)`, made at its first call (the Numba kernel behind a native library: importing
    it imports Numba, which a process whose calls all match the library never needs)."""

    def __init__(self, make, *how):
        self.make, self.how, self.fn = make, how, None

    def __call__(self, *args):
        if self.fn is None:
            self.fn = self.make(*self.how)
        return self.fn(*args)


class _Builds:
    """One background thread at a time building native libraries, in order. It is not a daemon:
    the interpreter waits for it at exit, so a short script still leaves its libraries behind."""

    def __init__(self):
        self.lock = threading.Lock()
        self.queue = []
        self.queued = set()   # library paths submitted in this process (built or queued)
        self.worker = None
        self.fork_lock = None

    def submit(self, kernels):
        """kernels: {library path: kernel}."""
        with self.lock:
            self.queue += [k for path, k in kernels.items() if path not in self.queued]
            self.queued.update(kernels)
            if self.worker is None and self.queue:
                self.worker = threading.Thread(target=self._work, name="fusegrad native builds")
                self.worker.start()

    def _work(self):
        while True:
            with self.lock:
                if not self.queue:
                    self.worker = None
                    return
                kernel = self.queue.pop(0)
            try:
                native.build(kernel)
            except Exception as error:   # a library is an optimisation: never fail the program for one
                log("cache", f"native: {kernel.name} not built ({type(error).__name__}: {error})")


_builds = _Builds()
_stores = {}


def _compiler_lock():
    """Numba's global compiler lock, which a native build holds for its LLVM work (None until
    Numba is imported)."""
    module = sys.modules.get("numba.core.compiler_lock")
    return module.global_compiler_lock if module is not None else None


def _before_fork():
    # a child forked while the build thread holds these would inherit them held, by a thread
    # it does not have: every Numba compile in it would wait forever
    _builds.lock.acquire()
    lock = _builds.fork_lock = _compiler_lock()
    if lock is not None:
        lock.acquire()


def _after_fork(child):
    lock = _builds.fork_lock
    if lock is not None:
        lock.release()
    if child:   # the build thread did not come along: its queue goes with it
        _builds.queue, _builds.worker = [], None
    _builds.lock.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=lambda: _after_fork(False),
                        after_in_child=lambda: _after_fork(True))


def store(root=None):
    """The Store of `root` (default_dir() when None), checked once per process."""
    root = os.path.abspath(root) if root else default_dir()
    found = _stores.get(root)
    if found is None:
        found = _stores[root] = Store(root)
    return found
