"""A model state written as rule files (``cedarkey policy pull``)."""

from __future__ import annotations

from cedarkey.engine import ADMIN, AWS_IAM, RuleType
from cedarkey.engine.auth_method import DEFAULT_JWT_TTL, DEFAULT_STS_URL

from .state import ModelState
from .toml_lines import BARE


def _toml_string(value: str) -> str:
    out = ['"']
    for ch in value:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_key(name: str) -> str:
    short = name[1:] if name.startswith("/") and "/" not in name[1:] else name
    return short if BARE.fullmatch(short) else _toml_string(name)


def _toml_value(value: object) -> str:
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key_plain(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def _toml_key_plain(key: str) -> str:
    return key if BARE.fullmatch(key) else _toml_string(key)


def state_to_toml(state: ModelState, header: str = "") -> str:
    """Rule-file TOML for the managed part of ``state`` (the Cedar files are not TOML: write them beside)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    used_am = {am_name for name, rs in state.roles.items() if name != ADMIN for am_name, _ in rs.associations}
    for name in sorted(state.auth_methods):
        am = state.auth_methods[name]
        if am.type != AWS_IAM and name not in used_am:
            continue
        lines += ["", f"[auth_method.{toml_key(name)}]"]
        if am.type != AWS_IAM:
            lines.append(f"type = {_toml_string(am.type)}")
            continue
        for binding, values in am.bindings():
            lines.append(f"{binding.field} = {_toml_value(list(values))}")
        if am.bound_ips:
            lines.append(f"bound_ips = {_toml_value(list(am.bound_ips))}")
        if am.access_expires:
            lines.append(f"access_expires = {am.access_expires}")
        if am.jwt_ttl != DEFAULT_JWT_TTL:
            lines.append(f"jwt_ttl = {am.jwt_ttl}")
        if am.max_ttl:
            lines.append(f"max_ttl = {am.max_ttl}")
        if am.sts_url and am.sts_url != DEFAULT_STS_URL:
            lines.append(f"sts_url = {_toml_string(am.sts_url)}")
    for name in sorted(state.roles):
        if name == ADMIN:
            continue
        rs = state.roles[name]
        key = toml_key(name)
        lines += ["", f"[role.{key}]"]
        if rs.description:
            lines.append(f"description = {_toml_string(rs.description)}")
        for am_name, sub_claims in rs.associations:
            lines += ["", f"[[role.{key}.association]]", f"auth_method = {_toml_string(am_name)}"]
            if sub_claims:
                claims = {k: list(v) if len(v) > 1 else v[0] for k, v in sub_claims}
                lines.append(f"sub_claims = {_toml_value(claims)}")
        for rule in sorted(rs.rules.values(), key=lambda r: (r.rule_type, r.path)):
            d = rule.to_dict()
            lines += ["", f"[[role.{key}.rule]]", f"path = {_toml_string(rule.path)}"]
            lines.append(f"capabilities = {_toml_value(d['capabilities'])}")
            if rule.rule_type is not RuleType.ITEM:
                lines.append(f"rule_type = {_toml_string(str(rule.rule_type))}")
    return "\n".join(lines).lstrip("\n") + "\n"
