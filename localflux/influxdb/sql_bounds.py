"""A size bound on SQL, checked before DataFusion sees the text.

DataFusion plans a chain of binary operators (`1+1+...+1`, `a OR b OR ...`, `UNION ALL`,
`JOIN`) as a left-deep tree and walks it recursively, in time that grows with the square of
its length: 1,000 terms take a second to plan, 5,000 a minute and a half, and 10,000 overflow
the native stack (SIGSEGV). Nesting is already bounded by the SQL parser (50 levels); chains
are not. So a statement may hold at most `MAX_OPERATORS` operators, counted outside string
literals, quoted identifiers and comments. Real queries use a few dozen; long value lists
belong in `IN (...)`, which is no chain.

>>> operator_count("SELECT * FROM t WHERE time > now() - interval '1 hour' AND a = 'x-y'")
5
>>> operator_count('SELECT "a+b" FROM t -- 1+1\\n WHERE x IN (1, 2, 3) UNION ALL SELECT 1')
1
>>> check_size("SELECT " + "+".join(["1"] * 1002))
Traceback (most recent call last):
...
localflux.influxdb.sql_bounds.QueryTooComplex: query too complex: 1001 operators (the limit is 1000 per statement); use IN (...) lists or split the query
"""

from __future__ import annotations

import re

MAX_OPERATORS = 1000

# Tokens that never hold an operator, then the operators DataFusion builds chains from.
_TOKENS = re.compile(
    r"""
      (?P<skip>'(?:[^']|'')*'?           # string literal ('' escapes a quote)
             |"(?:[^"]|"")*"?            # quoted identifier
             |--[^\n]*                   # line comment
             |/\*[\s\S]*?(?:\*/|\Z)      # block comment
      )
    | (?P<word>\b(?:AND|OR|NOT|IS|LIKE|ILIKE|SIMILAR|BETWEEN|AT|COLLATE
                  |UNION|INTERSECT|EXCEPT|JOIN)\b)
    | (?P<symbol>::|\|\||<=|>=|<>|!=|->>|->|=>|[-+*/%<>=^&|~\[])
    """,
    re.IGNORECASE | re.VERBOSE,
)


class QueryTooComplex(ValueError):
    """The statement is over the operator bound; the message says what to do instead."""


def operator_count(sql: str) -> int:
    """Operators in `sql`, outside literals, quoted names and comments."""
    return sum(1 for match in _TOKENS.finditer(sql) if match.lastgroup != "skip")


def check_size(sql: str) -> None:
    """Raise QueryTooComplex when `sql` holds more than MAX_OPERATORS operators."""
    count = operator_count(sql)
    if count > MAX_OPERATORS:
        raise QueryTooComplex(
            f"query too complex: {count} operators (the limit is {MAX_OPERATORS} per "
            "statement); use IN (...) lists or split the query"
        )
