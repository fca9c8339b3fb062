"""The status page's environment reads dict items first: same page, same semantics, cheaper."""

from __future__ import annotations

from pathlib import Path

import jinja2

from certd.config import load_config
from certd.http import snapshot, timeline
from certd.http.charger_list import charger_page
from certd.http.live import ConnectedCounts, LiveSources, take_live_view
from certd.http.service import TEMPLATES
from certd.http.templating import PlainDataEnvironment, page_environment
from certd.http.views import short_time
from certd.sandbox.status_fleet import fleet_config_toml, populate
from certd.store.db import make_engine, upgrade
from certd.store.types import utcnow


def render(env: jinja2.Environment, source: str, **context: object) -> str:
    return env.from_string(source).render(**context)


def test_dict_items_and_dict_methods_resolve_as_jinja_does() -> None:
    plain, ours = jinja2.Environment(), PlainDataEnvironment()
    data = {"name": "web", "items": "a key named like a method", "nested": {"count": 3}}
    for source in ("{{ d.name }}", "{{ d.nested.count }}", "{{ d.missing }}|{{ d.missing is defined }}",
                   "{% for k, v in d.nested.items() %}{{ k }}={{ v }}{% endfor %}",
                   "{{ d['items'] }}", "{{ d.items is callable }}", "{{ 'x'.upper() }}"):
        assert render(ours, source, d=data) == render(plain, source, d=data), source
    assert render(ours, "{{ d.name }}", d=data) == "web"
    assert render(ours, "{{ d.items is callable }}", d=data) == "True"  # the method, as in Jinja2
    strict = PlainDataEnvironment(undefined=jinja2.StrictUndefined)
    try:
        render(strict, "{{ d.missing }}", d=data)
    except jinja2.UndefinedError as exc:
        assert "missing" in str(exc)
    else:
        raise AssertionError("a missing key must stay undefined")


def test_the_status_page_renders_byte_for_byte_as_with_jinja2s_own_environment(tmp_path: Path) -> None:
    roots = tmp_path / "roots.pem"
    roots.write_text("")
    config_path = tmp_path / "certd.toml"
    config_path.write_text(fleet_config_toml(tmp_path / "state", roots, certificates=6))
    config = load_config(config_path)
    upgrade(config.db_url)
    engine = make_engine(config.db_url)
    now = utcnow()
    populate(engine, config, chargers=60, now=now)
    live = take_live_view(LiveSources(), ConnectedCounts())
    data = snapshot.overview(config, engine, live, now, snapshot.rollover(config, engine, live, now))
    chargers = charger_page(engine, "", 1, config.http.page_size)
    context = {"data": data, "chargers": chargers, "timeline": timeline.build(data["certificates"],
               data["bundles"], now), "now": now, "refresh": 30, "live": live}
    pages = []
    for env in (page_environment(TEMPLATES), jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True, trim_blocks=True, lstrip_blocks=True)):
        env.filters["short"] = short_time
        pages.append(env.get_template("status.html").render(**context))
    engine.dispose()
    assert pages[0] == pages[1]
    assert all(c["name"] in pages[0] for c in data["certificates"]) and len(data["certificates"]) == 6
    assert chargers["rows"] and chargers["rows"][0]["charger_id"] in pages[0]
