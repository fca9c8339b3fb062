"""The status page's Jinja2 environment: item lookup first for the plain dicts the page renders.

The page's data are JSON-ready dicts (certd.http.snapshot), and the templates
read them as `c.name`. Jinja2 resolves `obj.attr` by trying the attribute
first and the item second, so every such read on a dict raised and caught an
AttributeError: three quarters of the page's render time (8 ms of 11 with
50 certificates), spent in a worker thread that shares the GIL with the OCPP
loop. Reading the item first gives the same result: a dict instance has no
attributes but its class's methods, and those names still go the usual way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

_DICT_ATTRIBUTES = frozenset(dir(dict))


class PlainDataEnvironment(jinja2.Environment):
    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


def page_environment(templates: Path) -> jinja2.Environment:
    """The environment the HTTP server renders its templates with (autoescaped HTML)."""
    return PlainDataEnvironment(loader=jinja2.FileSystemLoader(str(templates)), autoescape=True,
                                trim_blocks=True, lstrip_blocks=True)
