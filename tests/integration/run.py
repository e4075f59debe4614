#!/usr/bin/env python3
"""Run every test_* function of tests/integration/test_*.py (or those named
on the command line as file.py or file.py::name). Exit non-zero on failure."""
import importlib.util
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main():
    sel = sys.argv[1:]
    files = sorted(f for f in os.listdir(HERE) if f.startswith("test_") and f.endswith(".py"))
    failed, passed = [], 0
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
        for n in names:
            if wanted and None not in wanted and n not in wanted:
                continue
            t0 = time.time()
            try:
                getattr(mod, n)()
                passed += 1
                print(f"PASS {f}::{n} ({time.time() - t0:.1f}s)", flush=True)
            except Exception:
                failed.append(f"{f}::{n}")
                print(f"FAIL {f}::{n} ({time.time() - t0:.1f}s)", flush=True)
                traceback.print_exc()
    print(f"integration: {passed} passed, {len(failed)} failed in {time.time() - t_all:.0f}s")
    for f in failed:
        print("  failed:", f)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
