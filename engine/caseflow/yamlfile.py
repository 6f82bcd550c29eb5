"""YAML that a person writes (the configuration, a case's case.yaml), read strictly.

PyYAML lets the second of two equal keys silently win (`kind: ssh` ... `kind: local`
later in the same mapping is `local`); here a key given twice is refused, with the
key's path and both lines, before anything is built from the file.
"""

from __future__ import annotations

from typing import Any

import yaml

_MERGE = "tag:yaml.org,2002:merge"  # `<<: *anchor` may repeat what it merges: not a clash


class DuplicateKey(yaml.YAMLError):
    def __init__(self, path: list[str], first_line: int, second_line: int):
        self.path = path
        self.key = ".".join(path)
        self.first_line = first_line
        self.second_line = second_line
        super().__init__(
            f"{self.key}: given twice (lines {first_line} and {second_line}); remove one of them"
        )


def _check(node: yaml.Node, path: list[str], seen_nodes: set[int]) -> None:
    if id(node) in seen_nodes:  # an alias of a node already checked
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.tag == _MERGE:
                    continue
                line = key.start_mark.line + 1
                if (key.tag, key.value) in seen:
                    raise DuplicateKey(path + [key.value], seen[(key.tag, key.value)], line)
                seen[(key.tag, key.value)] = line
                _check(value, path + [key.value], seen_nodes)
            else:
                _check(value, path + ["?"], seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check(item, path[:-1] + [f"{path[-1]}[{i}]"] if path else [f"[{i}]"], seen_nodes)


def load(text: str, name: str = "<unicode string>") -> Any:
    """Like `yaml.safe_load`, but a mapping with a key given twice raises `DuplicateKey`
    (a `yaml.YAMLError`), as a syntax error raises PyYAML's own. `name` is the file's name
    in PyYAML's messages (`in "case.yaml", line 2, column 9`)."""
    loader = yaml.SafeLoader(text)
    loader.name = name  # PyYAML names a string "<unicode string>"
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check(node, [], set())
        return loader.construct_document(node)
    finally:
        loader.dispose()
