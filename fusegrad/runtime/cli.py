"""The `fusegrad` command line (also `python -m fusegrad`): `fusegrad cache list|show|stats|explain|
clear|prune|dir`.

Exit codes: 0 done, 1 not found (or a clear refused), 2 usage. Errors are one line on stderr."""
import argparse
import datetime
import json
import os
import sys

from ..codegen.store import default_dir, unsafe_reason
from .cache import COMPONENTS, Index, parse_age, parse_size

PROG = "fusegrad cache"


class UsageError(Exception):
    pass


class NotFound(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # argparse prints usage plus the error; one line is the contract here
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _size(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _when(t):
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def _table(header, rows):
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [header, *rows])


def _entry(index, prefix):
    if not prefix or not all(c in "0123456789abcdef" for c in prefix.lower()):
        raise UsageError(f"KEY must be a hexadecimal key or key prefix, got {prefix!r}")
    found = index.find(prefix.lower())
    if not found:
        raise NotFound(f"no entry's key starts with {prefix!r} in {index.root}")
    if len(found) > 1:
        raise UsageError(f"key prefix {prefix!r} matches {len(found)} entries "
                         f"({', '.join(e['key'][:12] for e in found[:5])}); give more of the key")
    return found[0]


def cmd_dir(index, args, out):
    print(index.root, file=out)


def cmd_list(index, args, out):
    rows = index.rows()
    if args.json:
        print(json.dumps([{k: (json.loads(v) if k in ("components", "summary", "modules") else v)
                           for k, v in r.items() if k not in ("description", "dot", "structure", "guards")}
                          for r in rows], indent=2), file=out)
        return
    if not rows:
        print(f"no entries in {index.root}", file=out)
        return
    print(_table(("KEY", "FUNCTION", "TARGET", "KERNELS", "SIZE", "HITS", "CREATED", "LAST USED"),
                 [(r["key"][:12], r["name"], r["target"], json.loads(r["summary"])["kernels"], _size(r["size"]),
                   r["hits"], _when(r["created"]), _when(r["last_used"])) for r in rows]), file=out)


def cmd_show(index, args, out):
    entry = _entry(index, args.key)
    if args.dot:
        if not entry["dot"]:
            raise NotFound(f"entry {entry['key'][:12]} has no recorded graph picture")
        print(entry["dot"], file=out)
        return
    summary = json.loads(entry["summary"])
    components = json.loads(entry["components"])
    lines = [f"key          {entry['key']}",
             f"function     {entry['name']}",
             f"source file  {entry['source_file'] or '-'}",
             f"target       {entry['target']}",
             f"created      {_when(entry['created'])}",
             f"last used    {_when(entry['last_used'])} ({entry['hits']} hits)",
             f"compile time {entry['compile_seconds']:.3f} s (plan, Numba, first run)",
             f"size         {_size(entry['size'])}",
             f"graph        {summary['nodes']} nodes, {summary['kernels']} kernels of {summary['kernel_ops']} ops, "
             f"{summary['steps'] - summary['kernels']} other steps",
             "", "# key components",
             _table(("COMPONENT", "VALUE", "HASH"), [(n, components[n][0], components[n][1][:12]) for n in COMPONENTS]),
             "", "# guards", entry["guards"] or "(none: an eager backward graph, keyed by structure)",
             "", "# plan", entry["description"]]
    print("\n".join(lines), file=out)


def cmd_stats(index, args, out):
    s = index.stats()
    rate = f"{100 * s['hits'] / s['lookups']:.1f}%" if s["lookups"] else "-"
    print(f"cache directory     {index.root}\n"
          f"entries             {s['entries']}\n"
          f"size                {_size(s['size'])}\n"
          f"lookups             {s['lookups']} ({s['hits']} hits, {s['lookups'] - s['hits']} misses)\n"
          f"hit rate            {rate}\n"
          f"compile time saved  {s['saved_seconds']:.2f} s", file=out)


def cmd_explain(index, args, out):
    rows = index.lookups(args.function, args.last)
    if not rows:
        raise NotFound("no lookups recorded" + (f" for a function matching {args.function!r}" if args.function else "")
                       + f" in {index.root}")
    for r in rows:
        verdict = "hit " if r["hit"] else "miss"
        print(f"{_when(r['time'])}  {verdict}  {r['key'][:12]}  {r['name']}  "
              f"({r['seconds']:.3f} s, {r['compiled']} kernels compiled)"
              + (f"\n    {r['reason']}" if r["reason"] else ""), file=out)


def cmd_clear(index, args, out):
    rows = index.rows()
    if not args.yes:
        print(f"Remove all {len(rows)} entries and every kernel from {index.root}? [y/N] ", end="", file=out,
              flush=True)
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise NotFound("nothing removed (answer y, or pass --yes)")
    count, freed = index.clear()
    print(f"removed {count} entries, freed {_size(freed)}", file=out)


def cmd_prune(index, args, out):
    if args.max_size is None and args.older_than is None:
        raise UsageError("prune needs --max-size and/or --older-than")
    try:
        max_size = None if args.max_size is None else parse_size(args.max_size)
        older_than = None if args.older_than is None else parse_age(args.older_than)
    except ValueError as error:
        raise UsageError(str(error)) from None
    removed, freed = index.prune(max_size=max_size, older_than=older_than)
    print(f"removed {removed} entries, freed {_size(freed)}", file=out)


def parser():
    top = _Parser(prog="fusegrad", description="fusegrad's command line.")
    commands = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    cache = commands.add_parser("cache", help="inspect and manage the compile cache",
                                description="Inspect and manage the compile cache.")
    cache.add_argument("--cache-dir",
                       help="the cache directory (default: $FUSEGRAD_CACHE_DIR, else the user cache directory)")
    sub = cache.add_subparsers(dest="action", required=True, parser_class=_Parser)
    sub.add_parser("dir", help="print the cache directory").set_defaults(run=cmd_dir)
    p = sub.add_parser("list", help="the entries, newest first")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=cmd_list)
    p = sub.add_parser("show", help="one entry: key components, guards, IR, kernels, timings")
    p.add_argument("key", help="an entry's key, or a unique prefix of it")
    p.add_argument("--dot", action="store_true", help="print the plan's graph in Graphviz DOT instead")
    p.set_defaults(run=cmd_show)
    sub.add_parser("stats", help="entries, size, hit rate, compile time saved").set_defaults(run=cmd_stats)
    p = sub.add_parser("explain", help="the last lookups of a function, and why they missed")
    p.add_argument("function", nargs="?", help="part of a function's qualified name (default: every function)")
    p.add_argument("--last", type=int, default=10, help="how many lookups (default 10)")
    p.set_defaults(run=cmd_explain)
    p = sub.add_parser("clear", help="remove every entry (asks first)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")
    p.set_defaults(run=cmd_clear)
    p = sub.add_parser("prune", help="remove old or least recently used entries")
    p.add_argument("--max-size", help="keep at most this much (e.g. 500M, 1G)")
    p.add_argument("--older-than", help="remove entries unused for this long (e.g. 30d, 12h)")
    p.set_defaults(run=cmd_prune)
    return top


def main(argv=None, out=None):
    out = out or sys.stdout
    try:
        args = parser().parse_args(argv)
        root = os.path.abspath(os.path.expanduser(args.cache_dir)) if args.cache_dir else default_dir()
        if args.run in (cmd_clear, cmd_prune) and os.path.isdir(root):
            unsafe = unsafe_reason(root)
            if unsafe is not None:
                raise UsageError(f"refusing to delete from {root}: {unsafe}")
        args.run(Index(root), args, out)
        return 0
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except NotFound as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:   # `fusegrad cache show KEY | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as error:   # one line, never a traceback
        print(f"{PROG}: error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
