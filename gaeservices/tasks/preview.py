"""What a task will call, shown without running anything: a safe, bounded preview.

The admin page and ``gaeservices tasks list`` show each task's callable and
arguments. A task body is a signed pickle, and unpickling runs code: it imports
the callable's module (with whatever that module does at import time) and calls
the constructors the pickle names. The web process that shows the page need
not even have the application's modules. So nothing is unpickled here:

- the body's signature is checked first (:meth:`PayloadCodec.open`); a body that
  does not verify is described as such and its bytes are not read further;
- the verified pickle is *read*, opcode by opcode (:mod:`pickletools`), into
  symbols -- ``module.name`` for a global, ``f(args)`` for a reduction,
  containers of those -- and rendered like ``repr`` would, within a length
  budget: strings and containers are cut with ``…``, and a pickle too long to
  read is named, not walked.

The result is plain text: whoever puts it in HTML escapes it.
"""

from __future__ import annotations

import pickletools
from typing import Any

from .payload import ExpiredPayload, ForgedPayload, MalformedPayload, PayloadCodec

__all__ = ["CallPreview", "describe_pickle", "describe_body"]

#: Opcodes read at most; a call bigger than this is named, not previewed.
MAX_OPS = 200_000
MAX_ITEMS = 12  # container items kept (the rest are counted)
MAX_TEXT = 80  # characters of a string (bytes: bytes) kept
MAX_INT_DIGITS = 40


class CallPreview:
    """``callable`` (``module.qualname``) and ``arguments`` (``1, 'a', key=…``) as text.

    ``problem`` is set, and both texts are empty, when the body or its call
    cannot be read (a forged signature, a missing stored payload).
    """

    __slots__ = ("callable", "arguments", "problem")

    def __init__(self, callable: str = "", arguments: str = "", problem: str = "") -> None:
        self.callable = callable
        self.arguments = arguments
        self.problem = problem

    def __repr__(self) -> str:
        if self.problem:
            return f"<CallPreview problem={self.problem!r}>"
        return f"<CallPreview {self.callable}({self.arguments})>"


def describe_body(codec: PayloadCodec, body: bytes | None, *, width: int = 300) -> CallPreview:
    """Verify a task body, then preview its call; nothing is unpickled."""
    if not body:
        return CallPreview(problem="no payload (the task finished)")
    try:
        envelope = codec.open(body)
    except ForgedPayload:
        return CallPreview(problem="the signature does not verify: not read")
    except (MalformedPayload, ExpiredPayload) as exc:
        return CallPreview(problem=f"unreadable payload: {exc}")
    try:
        pickled = codec.call(envelope)
    except LookupError:
        return CallPreview(problem="its stored payload is gone")
    except ForgedPayload:
        return CallPreview(problem="the stored payload's signature does not verify: not read")
    except MalformedPayload as exc:
        return CallPreview(problem=f"unreadable stored payload: {exc}")
    return describe_pickle(pickled, width=width)


def describe_pickle(data: bytes, *, width: int = 300) -> CallPreview:
    """Preview a pickled ``(callable, args, kwargs)`` without unpickling it."""
    try:
        value = _read(data)
    except _TooLarge:
        return CallPreview(problem=f"a call of {len(data):,} bytes: too large to preview")
    except Exception as exc:  # pickletools raises ValueError and others on bad input
        return CallPreview(problem=f"not a readable pickle ({type(exc).__name__})")
    if not (isinstance(value, _Seq) and value.kind == "tuple" and len(value.items) == 3):
        return CallPreview(problem="not a deferred call")
    function, args, kwargs = value.items
    if not (isinstance(args, _Seq) and args.kind == "tuple" and isinstance(kwargs, _Dict)):
        return CallPreview(problem="not a deferred call")
    name = _render(function, width // 2)
    parts = [_Part(item) for item in args.items] + [
        _Part(v, k) for k, v in kwargs.items if isinstance(k, str)
    ]
    more = (args.total - len(args.items)) + (kwargs.total - len(kwargs.items))
    arguments = _render(_Arguments(parts, more), width)
    return CallPreview(name, arguments)


# --- reading a pickle into symbols -------------------------------------------------


class _TooLarge(Exception):
    pass


class _Global:
    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name


class _Call:
    """``func(*args)`` (a reduction, or ``cls.__new__`` for ``new``), then ``state`` set."""

    __slots__ = ("func", "args", "state", "new", "extra")

    def __init__(self, func: Any, args: Any, new: bool = False) -> None:
        self.func, self.args, self.new = func, args, new
        self.state: Any = None
        self.extra: Any = None  # items appended or set afterwards (list and dict subclasses)


class _Seq:
    __slots__ = ("kind", "items", "total")

    def __init__(self, kind: str, items: list[Any] | None = None) -> None:
        self.kind = kind
        self.items: list[Any] = []
        self.total = 0
        self.extend(items or [])

    def extend(self, items: list[Any]) -> None:
        room = MAX_ITEMS - len(self.items)
        if room > 0:
            self.items.extend(items[:room])
        self.total += len(items)


class _Dict:
    __slots__ = ("items", "total")

    def __init__(self) -> None:
        self.items: list[tuple[Any, Any]] = []
        self.total = 0

    def update(self, pairs: list[tuple[Any, Any]]) -> None:
        room = MAX_ITEMS - len(self.items)
        if room > 0:
            self.items.extend(pairs[:room])
        self.total += len(pairs)


class _Cut:
    """A string or bytes value kept in part: its head and full length."""

    __slots__ = ("head", "length")

    def __init__(self, value: str | bytes | bytearray) -> None:
        self.head = value[:MAX_TEXT]
        self.length = len(value)


class _Opaque:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


_MARK = object()
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}


def _scalar(value: Any) -> Any:
    if isinstance(value, (str, bytes, bytearray)):
        return _Cut(value) if len(value) > MAX_TEXT else value
    return value


def _read(data: bytes) -> Any:
    stack: list[Any] = []
    memo: dict[int, Any] = {}

    def pop_mark() -> list[Any]:
        for index in range(len(stack) - 1, -1, -1):
            if stack[index] is _MARK:
                items = stack[index + 1:]
                del stack[index:]
                return items
        raise ValueError("no mark")

    arg: Any
    for count, (op, arg, _) in enumerate(pickletools.genops(data)):
        if count >= MAX_OPS:
            raise _TooLarge
        name = op.name
        if name in ("PROTO", "FRAME"):
            continue
        if name == "STOP":
            break
        if name in _CONSTANTS:
            stack.append(_CONSTANTS[name])
        elif name == "MARK":
            stack.append(_MARK)
        elif name == "POP":
            stack.pop()
        elif name == "POP_MARK":
            pop_mark()
        elif name == "DUP":
            stack.append(stack[-1])
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[arg])
        elif name in ("GLOBAL", "INST"):
            module, _, attribute = arg.partition(" ")
            if name == "GLOBAL":
                stack.append(_Global(module, attribute))
            else:
                stack.append(_Call(_Global(module, attribute), _Seq("tuple", pop_mark())))
        elif name == "STACK_GLOBAL":
            attribute, module = stack.pop(), stack.pop()
            stack.append(_Global(str(module), str(attribute)))
        elif name == "REDUCE":
            args = stack.pop()
            stack.append(_Call(stack.pop(), args))
        elif name == "NEWOBJ":
            args = stack.pop()
            stack.append(_Call(stack.pop(), args, new=True))
        elif name == "NEWOBJ_EX":
            stack.pop()  # keyword arguments of __new__: rare, not shown
            args = stack.pop()
            stack.append(_Call(stack.pop(), args, new=True))
        elif name == "OBJ":
            items = pop_mark()
            stack.append(_Call(items[0], _Seq("tuple", items[1:]), new=True))
        elif name == "BUILD":
            state = stack.pop()
            target = stack[-1]
            if isinstance(target, _Call):
                target.state = state
        elif name in ("EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_SET"):
            stack.append(_Seq(name[6:].lower()))
        elif name == "EMPTY_DICT":
            stack.append(_Dict())
        elif name in ("LIST", "TUPLE", "FROZENSET"):
            stack.append(_Seq(name.lower(), pop_mark()))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            size = int(name[-1])
            items = stack[-size:]
            del stack[-size:]
            stack.append(_Seq("tuple", items))
        elif name == "APPEND":
            item = stack.pop()
            _add(stack[-1], [item])
        elif name in ("APPENDS", "ADDITEMS"):
            items = pop_mark()
            _add(stack[-1], items)
        elif name == "DICT":
            items = pop_mark()
            mapping = _Dict()
            mapping.update(list(zip(items[::2], items[1::2])))
            stack.append(mapping)
        elif name == "SETITEM":
            value, key = stack.pop(), stack.pop()
            _add(stack[-1], [(key, value)])
        elif name == "SETITEMS":
            items = pop_mark()
            _add(stack[-1], list(zip(items[::2], items[1::2])))
        elif name in ("PERSID", "BINPERSID"):
            if name == "BINPERSID":
                stack.pop()
            stack.append(_Opaque("<persistent id>"))
        elif name.startswith("EXT"):
            stack.append(_Opaque(f"<extension {arg}>"))
        elif name in ("NEXT_BUFFER", "READONLY_BUFFER"):
            if name == "NEXT_BUFFER":
                stack.append(_Opaque("<out-of-band buffer>"))
        else:  # a constant: ints, floats, strings, bytes
            stack.append(_scalar(arg))
    if len(stack) != 1:
        raise ValueError("unbalanced pickle")
    return stack[0]


def _add(target: Any, items: list[Any]) -> None:
    if isinstance(target, _Seq):
        target.extend(items)
    elif isinstance(target, _Dict):
        target.update(items)
    elif isinstance(target, _Call):  # a list or dict subclass built by reduction
        if target.extra is None:
            target.extra = _Dict() if items and isinstance(items[0], tuple) else _Seq("list")
        _add(target.extra, items)


# --- rendering ------------------------------------------------------------------------


class _Full(Exception):
    pass


class _Part:
    """One argument: ``value``, or ``key=value`` when named."""

    __slots__ = ("value", "key")

    def __init__(self, value: Any, key: str | None = None) -> None:
        self.value, self.key = value, key


class _Arguments:
    __slots__ = ("parts", "more")

    def __init__(self, parts: list[_Part], more: int) -> None:
        self.parts, self.more = parts, more


def _render(value: Any, width: int) -> str:
    out: list[str] = []
    size = [0]

    def emit(text: str) -> None:
        out.append(text)
        size[0] += len(text)
        if size[0] > width:
            raise _Full

    try:
        _write(value, emit, set())
    except _Full:
        text = "".join(out)
        return text[: max(0, width - 1)] + "…"
    return "".join(out)


def _write(value: Any, emit: Any, path: set[int]) -> None:
    if isinstance(value, (_Seq, _Dict, _Call)):
        if id(value) in path:
            emit("…")
            return
        path = path | {id(value)}
    if isinstance(value, _Arguments):
        for index, part in enumerate(value.parts):
            if index:
                emit(", ")
            if part.key is not None:
                emit(f"{part.key}=" if part.key.isidentifier() else f"**{{{part.key!r}: ")
            _write(part.value, emit, path)
            if part.key is not None and not part.key.isidentifier():
                emit("}")
        if value.more:
            emit(f"{', ' if value.parts else ''}… {value.more} more")
    elif isinstance(value, _Global):
        emit(f"{value.module}.{value.name}" if value.module != "builtins" else value.name)
    elif isinstance(value, _Call):
        _write_call(value, emit, path)
    elif isinstance(value, _Seq):
        _write_seq(value, emit, path)
    elif isinstance(value, _Dict):
        emit("{")
        for index, (key, item) in enumerate(value.items):
            if index:
                emit(", ")
            _write(key, emit, path)
            emit(": ")
            _write(item, emit, path)
        if value.total > len(value.items):
            emit(f", … {value.total - len(value.items)} more")
        emit("}")
    elif isinstance(value, _Cut):
        emit(f"{value.head!r}…({value.length:,} {'chars' if isinstance(value.head, str) else 'bytes'})")
    elif isinstance(value, _Opaque):
        emit(value.text)
    elif isinstance(value, bool) or value is None:
        emit(repr(value))
    elif isinstance(value, int):
        if value.bit_length() > MAX_INT_DIGITS * 3.3:
            emit(f"<int of {value.bit_length()} bits>")
        else:
            emit(repr(value))
    elif isinstance(value, (float, str, bytes, bytearray)):
        emit(repr(value))
    else:
        emit(f"<{type(value).__name__}>")


def _write_seq(value: _Seq, emit: Any, path: set[int]) -> None:
    if value.kind in ("set", "frozenset") and not value.total:
        emit(f"{value.kind}()")
        return
    opening, closing = {"list": ("[", "]"), "tuple": ("(", ")")}.get(value.kind, ("{", "}"))
    if value.kind == "frozenset":
        emit("frozenset(")
    emit(opening)
    for index, item in enumerate(value.items):
        if index:
            emit(", ")
        _write(item, emit, path)
    if value.total > len(value.items):
        emit(f", … {value.total - len(value.items)} more")
    elif value.kind == "tuple" and value.total == 1:
        emit(",")
    emit(closing)
    if value.kind == "frozenset":
        emit(")")


def _write_call(value: _Call, emit: Any, path: set[int]) -> None:
    func, args, state = value.func, value.args, value.state
    if isinstance(func, _Global):
        # getattr(obj, "name"): how methods pickle
        if func.module == "builtins" and func.name == "getattr" and _is_seq(args, 2):
            _write(args.items[0], emit, path)
            emit(f".{args.items[1]}" if isinstance(args.items[1], str) else ".?")
            return
        # functools.partial(fn) then its state (fn, args, kwargs, dict)
        if (func.module, func.name) == ("functools", "partial") and _is_seq(state, 4):
            inner, pargs, pkw = state.items[0], state.items[1], state.items[2]
            bound = [_Part(inner)]
            if isinstance(pargs, _Seq):
                bound += [_Part(item) for item in pargs.items]
            if isinstance(pkw, _Dict):
                bound += [_Part(v, k) for k, v in pkw.items if isinstance(k, str)]
            emit("functools.partial(")
            _write(_Arguments(bound, 0), emit, path)
            emit(")")
            return
        # copyreg.__newobj__(cls, *args) / copyreg._reconstructor(cls, base, state)
        if func.module == "copyreg" and isinstance(args, _Seq) and args.items:
            value = _Call(args.items[0], _Seq("tuple", args.items[1:] if func.name == "__newobj__" else []), True)
            value.state = state
            _write_call(value, emit, path)
            return
    _write(func, emit, path)
    emit("(")
    parts: list[_Part] = []
    if isinstance(args, _Seq) and not (value.new and not args.items):
        parts = [_Part(item) for item in args.items]
    if isinstance(state, _Dict):  # instance attributes, shown as keywords
        parts += [_Part(v, k) for k, v in state.items if isinstance(k, str)]
    elif _is_seq(state, 2) and isinstance(state.items[1], _Dict):  # (dict, slots)
        for mapping in state.items:
            if isinstance(mapping, _Dict):
                parts += [_Part(v, k) for k, v in mapping.items if isinstance(k, str)]
    elif state is not None:
        parts.append(_Part(state, "__state__"))
    if value.extra is not None:
        parts.insert(0, _Part(value.extra))
    _write(_Arguments(parts, 0), emit, path)
    emit(")")


def _is_seq(value: Any, size: int) -> bool:
    return isinstance(value, _Seq) and len(value.items) == size
