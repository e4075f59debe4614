#!/usr/bin/env python3
"""Run every test_* function of tests/integration/test_*.py (or those named
on the command line as file.py or file.py::name). Each ends PASS, FAIL or
SKIP (a test raises harness.Skip when it cannot run here); the last line
says `N passed, N failed, N skipped`. With CI=true a skip whose reason means
the machine is broken (Skip(..., broken=True): not root, no network
namespaces, ffmpeg missing, a route missing from the build) fails instead.
Exit non-zero on any failure."""
import importlib.util
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from harness import Skip  # noqa: E402


def main():
    sel = sys.argv[1:]
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    files = sorted(f for f in os.listdir(HERE) if f.startswith("test_") and f.endswith(".py"))
    known = set(files)
    for s in sel:
        if s.split("::")[0] not in known:
            print(f"no such test file: {s}")
            sys.exit(2)
    failed, skipped, passed = [], [], 0
    t_all = time.time()
    for f in files:
        wanted = [s.split("::", 1)[1] if "::" in s else None for s in sel if s.split("::")[0] == f]
        if sel and not wanted:
            continue
        spec = importlib.util.spec_from_file_location(f[:-3], os.path.join(HERE, f))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        names = [n for n in dir(mod) if n.startswith("test_") and callable(getattr(mod, n))]
        names.sort(key=lambda n: getattr(mod, n).__code__.co_firstlineno)
        for w in wanted:
            if w is not None and w not in names:
                failed.append(f"{f}::{w}")
                print(f"FAIL {f}::{w} (no such test)", flush=True)
        for n in names:
            if wanted and None not in wanted and n not in wanted:
                continue
            t0 = time.time()
            name = f"{f}::{n}"
            try:
                getattr(mod, n)()
                passed += 1
                print(f"PASS {name} ({time.time() - t0:.1f}s)", flush=True)
            except Skip as e:
                if ci and e.broken:
                    failed.append(name)
                    print(f"FAIL {name} (CI=true, the machine cannot run it: {e.reason})", flush=True)
                else:
                    skipped.append(f"{name}: {e.reason}")
                    print(f"SKIP {name} ({e.reason})", flush=True)
            except Exception:
                failed.append(name)
                print(f"FAIL {name} ({time.time() - t0:.1f}s)", flush=True)
                traceback.print_exc()
    print(f"integration: {passed} passed, {len(failed)} failed, {len(skipped)} skipped "
          f"in {time.time() - t_all:.0f}s")
    for f in failed:
        print("  failed:", f)
    for s in skipped:
        print("  skipped:", s)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
