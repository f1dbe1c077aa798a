"""``--set section.field=value`` edits of a preset for benchmark runs (sections: model, first, later, classes).

Values are read as YAML (``3e-3``, ``[1, 4, 16]``, ``mean``); ``classes.*`` starts from ``later`` when
the preset has no class config; an edit of a field the preset's ``large`` recipe sets is applied there too
(``top.large_above=N`` moves its threshold, ``top.large=null`` drops it). Example: ``--set model.width=64 --set classes.head_l2=0.01``.
"""
from __future__ import annotations

import yaml

from conure_core.config import ConfigError, Preset, get_preset

SECTIONS = ("model", "first", "later", "classes")


def parse_value(raw: str):
    """A number when ``raw`` reads as one (YAML 1.1 leaves '1e-3' a string), else YAML."""
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return yaml.safe_load(raw)


def apply_sets(preset: Preset, sets: list[str] | None) -> Preset:
    """A copy of ``preset`` with every ``section.field=value`` applied (ConfigError names a bad one)."""
    data = preset.to_dict()
    for item in sets or []:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or section not in SECTIONS + ("top",):
            raise ConfigError(f"--set {item!r}: write SECTION.FIELD=VALUE with SECTION one of {SECTIONS} "
                              f"(or top.prune_ratios / top.threads).")
        value = parse_value(raw)
        if section == "top":
            data[name] = value
            continue
        if section == "classes" and data["classes"] is None:
            data["classes"] = dict(data["later"])
        if name not in data[section]:
            raise ConfigError(f"--set {item!r}: {section} has no field {name!r}; valid: {sorted(data[section])}.")
        data[section][name] = value
        if name in ((data.get("large") or {}).get(section) or {}):  # an explicit edit wins at every T1 size
            data["large"][section] = {**data["large"][section], name: value}
    return Preset.from_dict(data)


def load_preset(name: str, sets: list[str] | None, seed: int = 0) -> Preset:
    """Named preset (or a JSON file of ``Preset.to_dict()``) + ``--set`` edits, model seeded by ``seed``."""
    import json
    from pathlib import Path

    if name.endswith(".json") and Path(name).is_file():
        preset = Preset.from_dict(json.loads(Path(name).read_text()))
    else:
        preset = get_preset(name)
    preset = apply_sets(preset, sets)
    preset.model.seed = int(seed)
    return preset
