#!/usr/bin/python3
"""Runs one Python test file with unittest and prints a machine-readable result line.

    run_file.py path/to/test_x.py [-k substring]

The last line is `RESULT {"passed": n, "failed": n, "skipped": n}`; test/run.py reads it.
Each test method counts once; an error in setUpClass counts as one failure.
"""
import importlib.util
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    path = os.path.abspath(sys.argv[1])
    pattern = None
    if len(sys.argv) > 3 and sys.argv[2] == "-k":
        pattern = sys.argv[3]
    sys.path.insert(0, os.path.dirname(path))
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    loader = unittest.TestLoader()
    if pattern:
        loader.testNamePatterns = [f"*{pattern}*"]
    suite = loader.loadTestsFromModule(module)
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
    # A test counts once: subTest failures, or an error plus a tearDown failure, are
    # several entries for one test id.
    failed_ids = {t.id().split(" ")[0] for t, _ in result.failures + result.errors}
    failed_ids |= {t.id() for t in result.unexpectedSuccesses}
    failed = len(failed_ids)
    skipped = len(result.skipped)
    passed = max(0, result.testsRun - failed - skipped)
    sys.stdout.flush()
    print("RESULT " + json.dumps({"passed": passed, "failed": failed, "skipped": skipped}))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
