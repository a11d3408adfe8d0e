"""Intuit's query language (docs/qbo.md §2.3): parser and evaluator, pure functions with no I/O.

`SELECT * | count(*) FROM Entity [WHERE c AND c ...] [ORDERBY|ORDER BY f [ASC|DESC], ...]
[STARTPOSITION n] [MAXRESULTS n]` with `= < > <= >= IN LIKE`. Field paths match case-insensitively
(`Metadata.CreateTime` finds `MetaData.CreateTime`); a `…Ref` field compares by its `value`.
Datetimes compare as instants, whatever their offsets. Ranges on `MetaData.CreateTime` and `Id`
lookups use the table's index, so paging through 100,000 payments does not re-sort or re-scan."""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol

MAX_RESULTS_CAP = 1000
DEFAULT_MAX_RESULTS = 100
CREATE_TIME = "metadata.createtime"
UPDATED_TIME = "metadata.lastupdatedtime"
_COMPARISONS = ("=", "<", ">", "<=", ">=")

Op = Literal["=", "<", ">", "<=", ">=", "IN", "LIKE"]
Literal_ = str | Decimal | bool | None


class QueryError(ValueError):
    """A statement Intuit would refuse: `code` 4000 (QueryParserError) or 4001 (QueryValidationError)."""

    def __init__(self, detail: str, code: str = "4000") -> None:
        super().__init__(detail)
        self.code = code
        kind = "QueryParserError" if code == "4000" else "QueryValidationError"
        self.detail = f"{kind}: {detail}"


@dataclass(frozen=True)
class Condition:
    path: str  # lower-cased dotted path
    op: Op
    values: tuple[Literal_, ...]


@dataclass(frozen=True)
class OrderKey:
    path: str
    descending: bool = False


@dataclass(frozen=True)
class Query:
    entity: str  # as written; the caller maps it to its canonical name
    count: bool
    where: tuple[Condition, ...] = ()
    order: tuple[OrderKey, ...] = ()
    start_position: int = 1
    max_results: int = DEFAULT_MAX_RESULTS


# --- tokenizer --------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^'\\]|\\.|'')*')
  | (?P<number>-?\d+(?:\.\d+)?(?![A-Za-z_]))
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op><=|>=|<>|!=|=|<|>)
  | (?P<punct>[(),*])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int

    @property
    def upper(self) -> str:
        return self.text.upper()


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            if text[pos] == "'":
                raise QueryError(f"Lexical error at line 1, column {pos + 1}: unterminated string literal")
            raise QueryError(f'Lexical error at line 1, column {pos + 1}. Encountered: "{text[pos]}"')
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append(_Tok(kind, m.group(), pos))
        pos = m.end()
    return tokens


def _unquote(token: str) -> str:
    body = token[1:-1]
    return re.sub(r"\\(.)|''", lambda m: m.group(1) or "'", body)


# --- parser -----------------------------------------------------------------------------------


@dataclass
class _Parser:
    tokens: list[_Tok]
    text: str
    i: int = 0
    _end: _Tok = field(init=False)

    def __post_init__(self) -> None:
        self._end = _Tok("eof", "<EOF>", len(self.text))

    def peek(self) -> _Tok:
        return self.tokens[self.i] if self.i < len(self.tokens) else self._end

    def take(self) -> _Tok:
        tok = self.peek()
        self.i += 1
        return tok

    def fail(self, tok: _Tok | None = None) -> QueryError:
        tok = tok or self.peek()
        return QueryError(f'Encountered " {tok.text} " at line 1, column {tok.pos + 1}.')

    def keyword(self, word: str) -> None:
        tok = self.take()
        if tok.kind != "name" or tok.upper != word:
            raise self.fail(tok)

    def at_keyword(self, *words: str) -> bool:
        tok = self.peek()
        return tok.kind == "name" and tok.upper in words

    def punct(self, char: str) -> None:
        tok = self.take()
        if tok.text != char or tok.kind not in ("punct",):
            raise self.fail(tok)

    def integer(self) -> int:
        tok = self.take()
        if tok.kind != "number" or not re.fullmatch(r"-?\d+", tok.text):
            raise self.fail(tok)
        return int(tok.text)

    def field_path(self) -> str:
        tok = self.take()
        if tok.kind != "name" or tok.upper in _RESERVED:
            raise self.fail(tok)
        return tok.text.lower()

    def literal(self) -> Literal_:
        tok = self.take()
        if tok.kind == "string":
            return _unquote(tok.text)
        if tok.kind == "number":
            return Decimal(tok.text)
        if tok.kind == "name" and tok.upper in ("TRUE", "FALSE"):
            return tok.upper == "TRUE"
        if tok.kind == "name" and tok.upper == "NULL":
            return None
        raise self.fail(tok)


_RESERVED = {
    "SELECT",
    "FROM",
    "WHERE",
    "AND",
    "OR",
    "NOT",
    "IN",
    "LIKE",
    "ORDERBY",
    "ORDER",
    "BY",
    "ASC",
    "DESC",
    "STARTPOSITION",
    "MAXRESULTS",
    "COUNT",
    "TRUE",
    "FALSE",
    "NULL",
}


def parse(text: str) -> Query:
    """Parse one statement or raise QueryError (4000 for syntax, 4001 for values out of range)."""
    if not text or not text.strip():
        raise QueryError("The query provided was empty")
    p = _Parser(_tokenize(text), text)
    p.keyword("SELECT")
    count = False
    if p.peek().text == "*":
        p.take()
    elif p.at_keyword("COUNT"):
        p.take()
        p.punct("(")
        p.punct("*")
        p.punct(")")
        count = True
    else:
        raise p.fail()
    p.keyword("FROM")
    entity_tok = p.take()
    if entity_tok.kind != "name" or "." in entity_tok.text or entity_tok.upper in _RESERVED:
        raise p.fail(entity_tok)
    where: list[Condition] = []
    if p.at_keyword("WHERE"):
        p.take()
        where.append(_condition(p))
        while p.at_keyword("AND"):
            p.take()
            where.append(_condition(p))
        if p.at_keyword("OR", "NOT"):
            raise QueryError(f"{p.peek().upper} is not supported; use AND, IN or separate queries")
    order: list[OrderKey] = []
    if p.at_keyword("ORDERBY", "ORDER"):
        if p.take().upper == "ORDER":
            p.keyword("BY")
        order.append(_order_key(p))
        while p.peek().text == ",":
            p.take()
            order.append(_order_key(p))
    start, max_results = 1, DEFAULT_MAX_RESULTS
    if p.at_keyword("STARTPOSITION"):
        p.take()
        start = max(1, p.integer())
    if p.at_keyword("MAXRESULTS"):
        p.take()
        max_results = p.integer()
        if max_results < 1:
            raise QueryError(f"MAXRESULTS must be at least 1, not {max_results}", code="4001")
        if max_results > MAX_RESULTS_CAP:  # refused, not capped (quickbooks-ruby #24)
            raise QueryError(f"value {max_results} is too large. Max allowed value is {MAX_RESULTS_CAP}", code="4001")
    if p.peek().kind != "eof":
        raise p.fail()
    return Query(
        entity=entity_tok.text,
        count=count,
        where=tuple(where),
        order=tuple(order),
        start_position=start,
        max_results=max_results,
    )


def _condition(p: _Parser) -> Condition:
    path = p.field_path()
    tok = p.take()
    if tok.kind == "op":
        if tok.text in ("<>", "!="):
            raise QueryError(f"Operator {tok.text} is not supported")
        return Condition(path, tok.text, (p.literal(),))  # type: ignore[arg-type]
    if tok.kind == "name" and tok.upper == "IN":
        p.punct("(")
        values = [p.literal()]
        while p.peek().text == ",":
            p.take()
            values.append(p.literal())
        p.punct(")")
        return Condition(path, "IN", tuple(values))
    if tok.kind == "name" and tok.upper == "LIKE":
        value = p.literal()
        if not isinstance(value, str):
            raise QueryError("LIKE needs a quoted pattern")
        return Condition(path, "LIKE", (value,))
    raise p.fail(tok)


def _order_key(p: _Parser) -> OrderKey:
    path = p.field_path()
    descending = False
    if p.at_keyword("ASC", "DESC"):
        descending = p.take().upper == "DESC"
    return OrderKey(path, descending)


# --- values -----------------------------------------------------------------------------------

_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?$")
_DIGITS = re.compile(r"^-?\d+$")


def parse_datetime(text: str, tz: tzinfo) -> datetime | None:
    """ISO 8601 with or without offset (no offset: the company's zone); None if not a datetime."""
    if not _DATETIME.match(text):
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=tz)


def to_micros(dt: datetime) -> int:
    """Microseconds since the epoch, exact (no float rounding)."""
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


def resolve(row: Mapping[str, Any], path: str) -> Any:
    """The value at a lower-cased dotted path, matched case-insensitively; a Ref yields its value."""
    value: Any = row
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        found = _NOTHING
        for key, item in value.items():
            if key.lower() == part:
                found = item
                break
        if found is _NOTHING:
            return None
        value = found
    if isinstance(value, Mapping) and "value" in value:
        return value["value"]
    return value


_NOTHING = object()


def _comparable(left: Any, right: Literal_, tz: tzinfo) -> tuple[Any, Any] | None:
    """Bring a stored value and a literal to one comparable type, or None if they cannot match."""
    if left is None or right is None or isinstance(left, (list, Mapping)):
        return None
    if isinstance(left, bool) or isinstance(right, bool):
        if isinstance(right, str):
            right = right.lower() == "true"
        if isinstance(left, str):
            left = left.lower() == "true"
        return (left, right) if isinstance(left, bool) and isinstance(right, bool) else None
    if isinstance(left, (int, float, Decimal)) or isinstance(right, Decimal):
        try:
            return Decimal(str(left)), Decimal(str(right))
        except InvalidOperation:
            return None
    left_s, right_s = str(left), str(right)
    left_dt, right_dt = parse_datetime(left_s, tz), parse_datetime(right_s, tz)
    if left_dt is not None and right_dt is not None:
        return left_dt, right_dt
    if _DIGITS.match(left_s) and _DIGITS.match(right_s):
        return int(left_s), int(right_s)
    return left_s.casefold(), right_s.casefold()


def _like(value: Any, pattern: str) -> bool:
    if value is None or isinstance(value, (Mapping, list)):
        return False
    regex = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, str(value), re.IGNORECASE | re.DOTALL) is not None


def matches(row: Mapping[str, Any], cond: Condition, tz: tzinfo) -> bool:
    value = resolve(row, cond.path)
    if cond.op == "LIKE":
        return _like(value, str(cond.values[0]))
    if cond.op == "IN":
        for literal in cond.values:
            pair = _comparable(value, literal, tz)
            if pair is not None and pair[0] == pair[1]:
                return True
        return False
    pair = _comparable(value, cond.values[0], tz)
    if pair is None:
        return False
    left, right = pair
    try:
        if cond.op == "=":
            return bool(left == right)
        if cond.op == "<":
            return bool(left < right)
        if cond.op == ">":
            return bool(left > right)
        if cond.op == "<=":
            return bool(left <= right)
        return bool(left >= right)
    except TypeError:
        return False


def _sort_value(value: Any, tz: tzinfo) -> tuple[int, Any]:
    if value is None or isinstance(value, (Mapping, list)):
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, (int, float, Decimal)):
        return (2, Decimal(str(value)))
    text = str(value)
    dt = parse_datetime(text, tz)
    if dt is not None:
        return (3, to_micros(dt))
    if _DIGITS.match(text):
        return (2, Decimal(text))
    return (4, text.casefold())


# --- evaluation -------------------------------------------------------------------------------


class IndexedTable(Protocol):
    """Rows of one entity, kept in default order (CreateTime, then Id), with their MetaData times cached."""

    @property
    def rows(self) -> Mapping[str, Mapping[str, Any]]: ...

    def created_of(self, row: Mapping[str, Any]) -> int:
        """CreateTime in µs since the epoch."""
        ...

    def updated_of(self, row: Mapping[str, Any]) -> int:
        """LastUpdatedTime in µs since the epoch."""
        ...

    def ids_between(self, lo_us: int | None, hi_us: int | None) -> Sequence[str]:
        """Ids with lo_us <= CreateTime < hi_us (None: unbounded), in default order."""
        ...

    def in_order(self, ids: Iterable[str]) -> list[str]:
        """The existing ids among `ids`, in default order."""
        ...


@dataclass(frozen=True)
class Result:
    rows: list[Mapping[str, Any]]
    total: int | None = None  # only for count(*)


def _index_plan(query: Query, table: IndexedTable, tz: tzinfo) -> tuple[Sequence[str], list[Condition]]:
    """Choose candidate ids from the Id or CreateTime index; return them with the conditions left to check."""
    rest = list(query.where)
    for cond in query.where:
        if cond.path == "id" and cond.op in ("=", "IN"):
            rest.remove(cond)
            wanted = [str(v) for v in cond.values if v is not None and not isinstance(v, bool)]
            wanted = [str(int(Decimal(v))) if _DIGITS.match(v) else v for v in wanted]
            return table.in_order(dict.fromkeys(wanted)), rest
    lo: int | None = None
    hi: int | None = None
    for cond in query.where:
        if cond.path != CREATE_TIME or cond.op not in ("=", "<", ">", "<=", ">="):
            continue
        literal = cond.values[0]
        dt = parse_datetime(literal, tz) if isinstance(literal, str) else None
        if dt is None:
            continue
        rest.remove(cond)
        t = to_micros(dt)
        if cond.op in (">=", "="):
            lo = t if lo is None else max(lo, t)
        if cond.op == ">":
            lo = t + 1 if lo is None else max(lo, t + 1)
        if cond.op in ("<=", "="):
            hi = t + 1 if hi is None else min(hi, t + 1)
        if cond.op == "<":
            hi = t if hi is None else min(hi, t)
    return table.ids_between(lo, hi), rest


def _time_bounds(conds: list[Condition], tz: tzinfo) -> tuple[list[Condition], int | None, int | None]:
    """Split LastUpdatedTime comparisons off as [lo, hi) µs bounds (checked on the cached instants)."""
    rest: list[Condition] = []
    lo: int | None = None
    hi: int | None = None
    for cond in conds:
        literal = cond.values[0] if cond.values else None
        dt = parse_datetime(literal, tz) if isinstance(literal, str) else None
        if cond.path != UPDATED_TIME or cond.op not in _COMPARISONS or dt is None:
            rest.append(cond)
            continue
        t = to_micros(dt)
        low = {">=": t, "=": t, ">": t + 1}.get(cond.op)
        high = {"<=": t + 1, "=": t + 1, "<": t}.get(cond.op)
        if low is not None:
            lo = low if lo is None else max(lo, low)
        if high is not None:
            hi = high if hi is None else min(hi, high)
    return rest, lo, hi


def _sort_key(table: IndexedTable, path: str, tz: tzinfo) -> Callable[[Mapping[str, Any]], tuple[int, Any]]:
    """How rows sort on one ORDERBY field: Ids as numbers, MetaData times as instants (cached)."""
    if path == "id":
        return lambda row: (2, int(row["Id"]))  # Ids are numeric strings
    if path == UPDATED_TIME:
        return lambda row: (3, table.updated_of(row))
    if path == CREATE_TIME:
        return lambda row: (3, table.created_of(row))
    return lambda row: _sort_value(resolve(row, path), tz)


def execute(query: Query, table: IndexedTable, tz: tzinfo, tie_rng: random.Random | None = None) -> Result:
    """Run a parsed query against one entity's table (the caller has resolved the entity name).

    Rows that tie on the ORDERBY fields come by Id ascending, or, with `tie_rng`, in its shuffled order
    (Intuit documents no tiebreaker)."""
    ids, rest = _index_plan(query, table, tz)
    rest, lo, hi = _time_bounds(rest, tz)
    rows = table.rows
    # The index's own order serves ascending CreateTime (ties by Id ascending); anything else is sorted.
    by_index = len(query.order) == 1 and query.order[0].path == CREATE_TIME and not query.order[0].descending
    natural = not query.order or (by_index and tie_rng is None)

    def matching() -> Iterator[Mapping[str, Any]]:
        for row_id in ids:
            row = rows.get(row_id)
            if row is None:
                continue
            if lo is not None or hi is not None:
                updated = table.updated_of(row)
                if (lo is not None and updated < lo) or (hi is not None and updated >= hi):
                    continue
            if all(matches(row, c, tz) for c in rest):
                yield row

    if query.count:
        return Result([], total=sum(1 for _ in matching()))
    skip, take = query.start_position - 1, query.max_results
    if natural and not rest and lo is None and hi is None:
        page = [rows[i] for i in ids[skip : skip + take] if i in rows]
        return Result(page)
    if natural:
        return Result(list(itertools.islice(matching(), skip, skip + take)))
    found = list(matching())
    if tie_rng is not None:
        tie_rng.shuffle(found)
    else:
        found.sort(key=_sort_key(table, "id", tz))
    for key in reversed(query.order):
        found.sort(key=_sort_key(table, key.path, tz), reverse=key.descending)
    return Result(found[skip : skip + take])
