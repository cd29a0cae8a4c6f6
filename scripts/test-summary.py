#!/usr/bin/env python3
"""Reduces meson's build/meson-logs/testlog.json to one closing line, `N passed, N failed`
(preceded by a `skipped: N` line).

meson's own summary counts whole test programs and has no plain pass/fail line; our C and Node tests
print TAP, one `ok`/`not ok` line per check, so this counts those checks instead (per TAP subtest when a
test's stdout has TAP lines, else per test). Skips never count as passed. Exits non-zero when anything
failed, errored or timed out, or when nothing ran at all, so a CI run can never pass by testing nothing.

usage: test-summary.py TESTLOG_JSON [--meson-rc N] [--failed-step NAME ...]
  --meson-rc N         exit status of `meson test`; non-zero with no failure counted adds one failure
  --failed-step NAME   a step before the tests failed (setup, build): counted as one failure
"""
import argparse
import json
import re
import sys

# A top-level TAP test line (subtests of nested TAP are indented and not counted twice).
TAP_LINE = re.compile(r'^(not ok|ok)(?:\s+(\d+))?(?:\s+-)?(?:\s+([^#]*?))?\s*(#\s*(\S+)(.*))?$')
BAD_RESULTS = {'FAIL', 'ERROR', 'TIMEOUT', 'UNEXPECTEDPASS', 'INTERRUPT'}


def count_tap(stdout):
    """(passed, failed, skipped, failed_names) from TAP lines, or None when there are none."""
    passed = failed = skipped = 0
    names = []
    seen = False
    for line in stdout.splitlines():
        m = TAP_LINE.match(line.rstrip())
        if not m:
            continue
        seen = True
        ok = m.group(1) == 'ok'
        directive = (m.group(5) or '').upper()
        name = (m.group(3) or '').strip() or ('subtest %s' % (m.group(2) or '?'))
        if directive.startswith('SKIP'):
            skipped += 1
        elif directive.startswith('TODO'):
            if ok:                      # unexpected pass: meson treats it as a failure too
                failed += 1
                names.append(name + ' (TODO passed)')
            else:
                skipped += 1            # expected failure
        elif ok:
            passed += 1
        else:
            failed += 1
            names.append(name)
    return (passed, failed, skipped, names) if seen else None


def summarise(records):
    passed = failed = skipped = 0
    failures = []
    for rec in records:
        test = rec.get('name', '?')
        result = rec.get('result', 'ERROR')
        tap = count_tap(rec.get('stdout') or '')
        if tap is not None:
            p, f, s, names = tap
            passed, failed, skipped = passed + p, failed + f, skipped + s
            failures += ['%s: %s' % (test, n) for n in names]
            if result in BAD_RESULTS and f == 0:
                # Crashed, timed out or broke its plan after the checks it printed: one more failure.
                failed += 1
                failures.append('%s: %s (exit status %s)' % (test, result, rec.get('returncode')))
        elif result == 'OK' or result == 'EXPECTEDFAIL':
            passed += 1
        elif result == 'SKIP':
            skipped += 1
        else:
            failed += 1
            failures.append('%s: %s (exit status %s)' % (test, result, rec.get('returncode')))
    return passed, failed, skipped, failures


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('testlog')
    ap.add_argument('--meson-rc', type=int, default=0)
    ap.add_argument('--failed-step', action='append', default=[])
    args = ap.parse_args(argv)

    records = []
    problems = ['%s failed' % s for s in args.failed_step]
    if not args.failed_step:
        try:
            with open(args.testlog, encoding='utf-8') as f:
                for lineno, line in enumerate(f, 1):
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        records.append(json.loads(line))
                    except ValueError:
                        problems.append('%s:%d: not JSON' % (args.testlog, lineno))
        except OSError as e:
            problems.append('no test log (%s)' % e.strerror)

    passed, failed, skipped, failures = summarise(records)
    failed += len(problems)
    failures += problems
    if args.meson_rc != 0 and failed == 0:
        failed += 1
        failures.append('meson test exited with status %d' % args.meson_rc)

    if failures:
        print('failures:')
        for f in failures:
            print('  ' + f)
    if passed + failed == 0:
        print('nothing ran: every test was skipped or none is defined')
    print('skipped: %d' % skipped)
    print('%d passed, %d failed' % (passed, failed))
    sys.stdout.flush()
    return 1 if failed or passed == 0 else 0


if __name__ == '__main__':
    try:
        rc = main(sys.argv[1:])
    except Exception as e:  # never end without the closing line
        print('test-summary: %s: %s' % (type(e).__name__, e))
        print('0 passed, 1 failed')
        rc = 1
    sys.exit(rc)
