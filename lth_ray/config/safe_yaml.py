"""YAML that cannot crash, hang or surprise the loader: bounded size, depth and alias expansion.

PyYAML's safe loader still follows anchors and aliases wherever they lead: an alias to its own
parent makes a structure that contains itself (every later walk recurses forever), a few nested
aliases stand for billions of values ("billion laughs"), and very deep nesting overflows the stack.
`parse` composes the document once, checks its graph (each node visited once), and only then builds
the Python values. Floats are read as YAML 1.2 and Python read them: `1e-3` is the number 0.001
(YAML 1.1 wants a decimal point and would make it a string).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from lth_ray.config.errors import ConfigError

MAX_BYTES = 1 << 20  # an ablation is a few KB
MAX_DEPTH = 32  # levels of nesting; an ablation uses four or five
MAX_VALUES = 100_000  # values after every alias is expanded


class Loader(yaml.SafeLoader):
    """The safe loader with YAML 1.2's float syntax (`1e-3`, `1E5`, `.5`, `+2.`)."""


Loader.yaml_implicit_resolvers = {
    k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _check_graph(root: yaml.Node, file: str | None) -> None:
    """Refuse recursion, deep nesting, alias bombs and repeated keys; each node is visited once."""
    sizes: dict[int, int] = {}  # id(node) -> values it stands for, aliases expanded
    open_nodes: set[int] = set()

    def walk(node: yaml.Node, path: str, depth: int) -> int:
        where = path or "<file>"
        if id(node) in open_nodes:
            raise ConfigError(file, where, "an alias refers to a node that contains it (recursive)")
        if id(node) in sizes:
            return sizes[id(node)]
        if depth > MAX_DEPTH:
            raise ConfigError(file, where, f"nested deeper than {MAX_DEPTH} levels")
        open_nodes.add(id(node))
        size = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise ConfigError(file, where, "a mapping key must be a plain value")
                key = str(key_node.value)
                here = f"{path}.{key}" if path else key
                if key in seen:
                    raise ConfigError(
                        file,
                        here,
                        f"written twice in one mapping (lines {seen[key] + 1} and"
                        f" {key_node.start_mark.line + 1}); the second would silently replace the"
                        " first",
                    )
                seen[key] = key_node.start_mark.line
                size += 1 + walk(value, here, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                size += walk(item, f"{path}[{i}]", depth + 1)
        open_nodes.discard(id(node))
        if size > MAX_VALUES:
            raise ConfigError(
                file,
                where,
                f"stands for more than {MAX_VALUES:,} values once its aliases are expanded"
                " (an alias bomb?)",
            )
        sizes[id(node)] = size
        return size

    walk(root, "", 0)


def parse(text: str, file: str | None, where: str = "<file>") -> Any:
    """The Python value of one YAML document, checked as above; errors name `where`."""
    if len(text) > MAX_BYTES:
        raise ConfigError(file, where, f"{len(text):,} characters: expected at most {MAX_BYTES:,}")
    loader = None
    try:
        loader = Loader(text)
        root = loader.get_single_node()
        if root is None:
            return None
        _check_graph(root, file)
        return loader.construct_document(root)
    except ConfigError as e:
        if where == "<file>":
            raise
        raise ConfigError(file, where, f"{e.message} (at '{e.field}' of the value)") from None
    except RecursionError:
        raise ConfigError(file, where, f"nested deeper than {MAX_DEPTH} levels") from None
    except (yaml.YAMLError, ValueError) as e:  # ValueError: an integer of thousands of digits
        raise ConfigError(file, where, f"not valid YAML: {e}") from None
    finally:
        if loader is not None:
            loader.dispose()
