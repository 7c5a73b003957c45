"""Safe YAML reading that keeps line numbers and refuses what PyYAML lets through.

Only the safe loader's constructors are used: a tag such as ``!!python/object`` is refused
before anything is built. Duplicate keys in a mapping (which PyYAML silently resolves by
keeping the last) and merge keys are errors. The result is plain data plus a map from each
field path to the line where it starts, so that schema errors can name a line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

MAX_BYTES = 256 * 1024
MAX_NODES = 50_000

_PLAIN_TAGS = {
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
}

Path = tuple[str | int, ...]
# libyaml's parser when PyYAML was built with it (several times faster); both only build plain data
_LOADER = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader


class YamlProblem(Exception):
    """A problem reading a YAML document, with the 1-based line it was found on."""

    def __init__(self, line: int | None, message: str, field: str = "") -> None:
        super().__init__(message)
        self.line = line
        self.message = message
        self.field = field


@dataclass
class Document:
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int:
        """Line of the deepest known prefix of ``path`` (1 when nothing matches)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return 1


def decode(raw: bytes) -> str:
    if len(raw) > MAX_BYTES:
        raise YamlProblem(None, f"file is {len(raw)} bytes; the limit is {MAX_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlProblem(line, f"not valid UTF-8 (byte {exc.start}: {exc.reason})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


def read_yaml(raw: bytes) -> Document:
    """Parse one YAML document from bytes into plain data with line numbers."""
    text = decode(raw)
    loader = _LOADER(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else None
            problem = exc.problem or str(exc)
            raise YamlProblem(line, f"YAML syntax error: {problem}") from None
        except yaml.YAMLError as exc:
            raise YamlProblem(None, f"YAML error: {exc}") from None
        if node is None:
            raise YamlProblem(1, "file is empty")
        doc = Document(data=None)
        counter = [0]
        doc.data = _build(loader, node, (), doc, counter)
        return doc
    finally:
        loader.dispose()


def _build(loader: yaml.SafeLoader | yaml.CSafeLoader, node: yaml.Node, path: Path, doc: Document, counter: list[int]) -> Any:
    counter[0] += 1
    if counter[0] > MAX_NODES:
        raise YamlProblem(node.start_mark.line + 1, f"more than {MAX_NODES} YAML nodes (alias bomb?)")
    line = node.start_mark.line + 1
    doc.lines.setdefault(path, line)
    if node.tag not in _PLAIN_TAGS:
        raise YamlProblem(line, f"tag {node.tag!r} is not allowed (only plain YAML data is read)", _dotted(path))
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise YamlProblem(key_line, "merge keys ('<<') are not allowed", _dotted(path))
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                raise YamlProblem(key_line, "mapping keys must be plain strings", _dotted(path))
            key = key_node.value
            if key in out:
                first = doc.lines.get(path + (key,), "?")
                raise YamlProblem(key_line, f"duplicate key {key!r} (first on line {first})", _dotted(path + (key,)))
            doc.lines[path + (key,)] = key_line
            out[key] = _build(loader, value_node, path + (key,), doc, counter)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, path + (i,), doc, counter) for i, item in enumerate(node.value)]
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise YamlProblem(line, f"cannot read value: {getattr(exc, 'problem', exc)}", _dotted(path)) from None


def _dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


dotted = _dotted
