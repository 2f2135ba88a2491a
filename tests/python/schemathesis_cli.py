"""The schemathesis command line, with one guard for a CPython 3.11 bug.

Hypothesis names each filtered strategy by parsing the source of the lambda it filters
with (`ast.parse` of the whole module). On CPython 3.11 before 3.11.9 that parse can fail
with `SystemError: AST constructor recursion depth mismatch` when it runs deep in a
stack (CPython gh-106905, fixed in 3.11.9/3.12.1); schemathesis reports it as a runtime
error of whichever operation it was generating for (seen on `GET /v1/audit/export`, with
this machine's Python 3.11.7). The name is only for display, so on that error the lambda
is described as unknown and generation goes on: nothing that is checked changes.

Usage: python tests/python/schemathesis_cli.py <schemathesis arguments>
"""

import sys

from hypothesis.internal import lambda_sources

_describe = lambda_sources._lambda_description


def _describe_or_unknown(f, *args, **kwargs):
    try:
        return _describe(f, *args, **kwargs)
    except SystemError:
        return "lambda: <unknown>"


lambda_sources._lambda_description = _describe_or_unknown

from schemathesis.cli import schemathesis  # noqa: E402  (after the guard is in place)

if __name__ == "__main__":
    sys.exit(schemathesis())
