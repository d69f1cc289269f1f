#!/usr/bin/python3
"""Runs every mqgate test and prints `N passed, N failed` as its last line.

Unit tests are the doctest executables the build puts in <build>/test/unit; each test
case counts once. Integration tests are the Python files test/**/test_*.py; each test
method counts once. Every file runs in its own process, with a timeout, so a hang or a
crash fails that file only.

    /usr/bin/python3 test/run.py --build-dir build-test [-j 3] [-k substring] [files...]
"""
import argparse
import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DOCTEST_SUMMARY = re.compile(r"test cases:\s*(\d+)\s*\|\s*(\d+) passed\s*\|\s*(\d+) failed")
FILE_TIMEOUT_S = 600
TIMEOUT_MARK = re.compile(r"^# run\.py: timeout (\d+)$", re.M)


def find_unit_tests(build_dir):
    unit_dir = os.path.join(build_dir, "test", "unit")
    if not os.path.isdir(unit_dir):
        return []
    found = []
    for name in sorted(os.listdir(unit_dir)):
        path = os.path.join(unit_dir, name)
        if name.endswith("_test") and os.access(path, os.X_OK) and os.path.isfile(path):
            found.append(path)
    return found


def find_python_tests():
    found = []
    for dirpath, _dirs, files in os.walk(HERE):
        for name in files:
            if name.startswith("test_") and name.endswith(".py"):
                found.append(os.path.join(dirpath, name))
    return sorted(found)


def run_process(cmd, env, timeout):
    """Runs cmd in its own process group; returns (returncode, output, timed_out)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            cwd=ROOT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out.decode(errors="replace"), False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return -9, out.decode(errors="replace"), True


def run_unit(path, env, timeout):
    rc, out, timed_out = run_process([path, "--no-version", "--force-colors=false"], env, timeout)
    m = None
    for m in DOCTEST_SUMMARY.finditer(out):
        pass
    if m is None or timed_out:
        return 0, 1, out
    passed, failed = int(m.group(2)), int(m.group(3))
    if rc != 0 and failed == 0:  # crashed after the summary, e.g. a leak report
        failed = 1
    return passed, failed, out


def file_timeout(path, default):
    """A test file may need longer than the default: a line `# run.py: timeout <seconds>`."""
    with open(path, encoding="utf-8") as f:
        m = TIMEOUT_MARK.search(f.read())
    return max(default, int(m.group(1))) if m else default


def run_python(path, env, timeout, pattern):
    timeout = file_timeout(path, timeout)
    cmd = ["/usr/bin/python3", os.path.join(HERE, "lib", "run_file.py"), path]
    if pattern:
        cmd += ["-k", pattern]
    rc, out, timed_out = run_process(cmd, env, timeout)
    result = None
    for line in out.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    if result is None or timed_out:
        return 0, 1, out + ("\n[timed out]" if timed_out else "\n[no result line]")
    failed = result["failed"] + (1 if rc not in (0, 1) else 0)
    return result["passed"], failed, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build-test"))
    ap.add_argument("-j", "--jobs", type=int, default=3)
    ap.add_argument("-k", dest="pattern", help="only test names containing this")
    ap.add_argument("-v", "--verbose", action="store_true", help="print output of passing files")
    ap.add_argument("--timeout", type=int, default=FILE_TIMEOUT_S)
    ap.add_argument("files", nargs="*", help="test files or unit executables (default: all)")
    args = ap.parse_args()

    build_dir = os.path.abspath(args.build_dir)
    env = dict(os.environ)
    env["MQGATE_BUILD_DIR"] = build_dir
    env["MQGATE_SOURCE_DIR"] = ROOT
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")

    jobs = []
    if args.files:
        for f in args.files:
            f = os.path.abspath(f)
            jobs.append(("py" if f.endswith(".py") else "unit", f))
    else:
        jobs += [("unit", p) for p in find_unit_tests(build_dir)]
        jobs += [("py", p) for p in find_python_tests()]

    total_passed = total_failed = 0
    started = time.monotonic()

    def run(job):
        kind, path = job
        t0 = time.monotonic()
        if kind == "unit":
            result = run_unit(path, env, args.timeout)
        else:
            result = run_python(path, env, args.timeout, args.pattern)
        return job, result, time.monotonic() - t0

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for (kind, path), (passed, failed, out), secs in pool.map(run, jobs):
            total_passed += passed
            total_failed += failed
            rel = os.path.relpath(path, ROOT) if path.startswith(ROOT) else path
            status = "ok  " if failed == 0 else "FAIL"
            print(f"{status} {rel}: {passed} passed, {failed} failed ({secs:.1f}s)", flush=True)
            if failed or args.verbose:
                print("    " + out.replace("\n", "\n    ").rstrip(), flush=True)

    print(f"total time {time.monotonic() - started:.1f}s")
    print(f"{total_passed} passed, {total_failed} failed")
    return 0 if total_failed == 0 and total_passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
