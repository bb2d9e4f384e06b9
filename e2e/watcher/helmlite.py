"""A small renderer of Helm charts for tests, where `helm` cannot be installed.

It implements the part of Go's text/template and of Helm's functions that charts/sluice uses:
actions with whitespace trimming ({{- -}}), comments, pipelines, parentheses, variables
($, $x := ..., range $k, $v := ...), if / else if / else, with / else, range / else, define
and include, and the functions listed in FUNCS. Anything else raises TemplateError, so a
template that uses more than this fails loudly instead of rendering wrongly.

    chart = Chart("charts/sluice")
    docs = chart.render(values_override={"controller": {"replicaCount": 3}})
    # -> {"deployment.yaml": "...rendered text...", ...}
"""
import copy
import hashlib
import re
from pathlib import Path

import yaml


class TemplateError(Exception):
    pass


# ---- lexing ----------------------------------------------------------------------------------

ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)


def lex(text, name):
    """[("text", s) | ("action", s)], with the trim markers applied to neighbouring text."""
    out = []
    pos = 0
    for m in ACTION.finditer(text):
        chunk = text[pos:m.start()]
        if m.group(1):
            chunk = chunk.rstrip(" \t\r\n")
        out.append(["text", chunk])
        out.append(["action", m.group(2).strip(), bool(m.group(3))])
        pos = m.end()
    out.append(["text", text[pos:]])
    # a right trim marker eats the whitespace at the start of the following text
    for i, t in enumerate(out):
        if t[0] == "action" and t[2] and i + 1 < len(out):
            out[i + 1][1] = out[i + 1][1].lstrip(" \t\r\n")
    return [(t[0], t[1]) for t in out]


TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<raw>`[^`]*`)|(?P<num>-?\d+)'
                   r'|(?P<var>\$[A-Za-z0-9_]*)|(?P<field>(?:\.[A-Za-z0-9_]+)+|\.)'
                   r'|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>:=|=|\||\(|\)|,))')


def tokens(s):
    out, pos = [], 0
    while pos < len(s):
        if s[pos:].strip() == "":
            break
        m = TOKEN.match(s, pos)
        if not m:
            raise TemplateError(f"cannot read {s[pos:]!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
        # a field right after a variable or ')' continues it: $x.a.b, (f x).a
        if kind in ("var",) and pos < len(s) and s[pos] == ".":
            f = re.match(r"(?:\.[A-Za-z0-9_]+)+", s[pos:])
            out[-1] = ("var", m.group(kind) + f.group(0))
            pos += f.end()
    return out


# ---- parsing ---------------------------------------------------------------------------------

class Node:
    def __init__(self, kind, **kw):
        self.kind = kind
        self.__dict__.update(kw)


def parse_pipeline(toks):
    """A pipeline: optional declaration, then commands separated by '|'."""
    decl = []
    if len(toks) >= 2 and toks[0][0] == "var":
        # $x := ...   or   $k, $v := ...
        if toks[1] == ("op", ":=") or toks[1] == ("op", "="):
            decl, toks = [toks[0][1]], toks[2:]
        elif len(toks) >= 4 and toks[1] == ("op", ",") and toks[2][0] == "var" \
                and toks[3] == ("op", ":="):
            decl, toks = [toks[0][1], toks[2][1]], toks[4:]
    cmds, cur, depth, sub = [], [], 0, []
    for t in toks:
        if t == ("op", "(") and depth == 0:
            depth, sub = 1, []
            continue
        if depth:
            if t == ("op", "("):
                depth += 1
            elif t == ("op", ")"):
                depth -= 1
                if depth == 0:
                    cur.append(("pipe", parse_pipeline(sub)))
                    continue
            sub.append(t)
            continue
        if t == ("op", "|"):
            cmds.append(cur)
            cur = []
        else:
            cur.append(t)
    if depth:
        raise TemplateError("unbalanced parentheses")
    cmds.append(cur)
    if any(not c for c in cmds):
        raise TemplateError("empty command in a pipeline")
    return Node("pipeline", decl=decl, cmds=cmds)


def parse(items, name):
    """Parses lexed items into a tree; returns (body, defines)."""
    defines = {}
    pos = 0

    def parse_if(cond):
        """An if whose else may be another if ("else if"): they share one end."""
        nonlocal pos
        node = Node("if", pipe=parse_pipeline(tokens(cond)), body=None, alt=None)
        node.body, end, erest = block(("else", "end"))
        pos += 1
        if end == "else":
            if erest.startswith("if "):
                node.alt = [parse_if(erest[3:])]
            else:
                node.alt, _, _ = block(("end",))
                pos += 1
        return node

    def block(stop):
        nonlocal pos
        body = []
        while pos < len(items):
            kind, val = items[pos]
            if kind == "text":
                if val:
                    body.append(Node("text", text=val))
                pos += 1
                continue
            if val.startswith("/*"):
                pos += 1
                continue
            word = val.split(None, 1)[0] if val else ""
            rest = val[len(word):].strip()
            if word in stop:
                return body, word, rest
            pos += 1
            if word == "if":
                body.append(parse_if(rest))
            elif word in ("with", "range"):
                node = Node(word, pipe=parse_pipeline(tokens(rest)), body=None, alt=None)
                node.body, end, _ = block(("else", "end"))
                pos += 1
                if end == "else":
                    node.alt, _, _ = block(("end",))
                    pos += 1
                body.append(node)
            elif word == "define":
                dname = yaml.safe_load(rest)
                dbody, _, _ = block(("end",))
                pos += 1
                defines[dname] = dbody
            elif word in ("end", "else"):
                raise TemplateError(f"{name}: unexpected {word}")
            elif word in ("template", "block", "break", "continue"):
                raise TemplateError(f"{name}: {word} is not supported by helmlite")
            else:
                body.append(Node("action", pipe=parse_pipeline(tokens(val))))
        if stop:
            raise TemplateError(f"{name}: missing {{{{ end }}}}")
        return body, None, None

    body, _, _ = block(())
    return body, defines


# ---- values ----------------------------------------------------------------------------------

def truthy(v):
    if v is None or v is False:
        return False
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v != 0
    if isinstance(v, (str, list, dict, tuple)):
        return len(v) > 0
    return True


def to_str(v):
    if v is None:
        return ""
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (dict, list)):
        raise TemplateError(f"printing a {type(v).__name__} without toYaml: {v!r}")
    return str(v)


def go_printf(fmt, *args):
    out, i, ai = [], 0, 0
    while i < len(fmt):
        c = fmt[i]
        if c == "%" and i + 1 < len(fmt):
            v = fmt[i + 1]
            if v == "%":
                out.append("%")
            elif v in "sdv":
                out.append(to_str(args[ai]))
                ai += 1
            elif v == "q":
                out.append('"' + to_str(args[ai]) + '"')
                ai += 1
            else:
                raise TemplateError(f"printf verb %{v} not supported")
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def to_yaml(v):
    if v is None:
        return "null"
    return yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n")


def indent(n, s):
    pad = " " * int(n)
    return "\n".join(pad + line if line else line for line in to_str(s).split("\n"))


def cmp_num(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a, b
    raise TemplateError(f"comparing {a!r} and {b!r}: Go templates need the same numeric type")


FUNCS = {
    "default": lambda d, v=None: v if truthy(v) else d,
    "quote": lambda *v: " ".join('"' + to_str(x).replace('"', '\\"') + '"' for x in v),
    "toYaml": to_yaml,
    "nindent": lambda n, s: "\n" + indent(n, s),
    "indent": indent,
    "trunc": lambda n, s: to_str(s)[:int(n)],
    "trimSuffix": lambda suf, s: to_str(s)[:-len(suf)] if suf and to_str(s).endswith(suf)
    else to_str(s),
    "contains": lambda sub, s: sub in to_str(s),
    "printf": go_printf,
    "print": lambda *a: "".join(to_str(x) for x in a),
    "toString": to_str,
    "int": lambda v: int(v or 0),
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: (lambda x, y: x > y)(*cmp_num(a, b)),
    "lt": lambda a, b: (lambda x, y: x < y)(*cmp_num(a, b)),
    "and": lambda *a: next((x for x in a if not truthy(x)), a[-1]),
    "or": lambda *a: next((x for x in a if truthy(x)), a[-1]),
    "not": lambda v: not truthy(v),
    "sha256sum": lambda s: hashlib.sha256(to_str(s).encode()).hexdigest(),
    "lower": lambda s: to_str(s).lower(),
}


class Renderer:
    def __init__(self, defines, root):
        self.defines = defines
        self.root = root

    def field(self, base, path):
        v = base
        for part in [p for p in path.split(".") if p]:
            if isinstance(v, dict):
                if part not in v:
                    return None
                v = v[part]
            elif v is None:
                raise TemplateError(f"nil pointer evaluating .{path}")
            else:
                raise TemplateError(f"cannot take .{part} of {type(v).__name__}")
        return v

    def operand(self, tok, dot, scope):
        kind, val = tok
        if kind == "pipe":
            return self.pipeline(val, dot, scope)
        if kind == "str":
            return yaml.safe_load(val) if "\\" not in val else val[1:-1].encode().decode(
                "unicode_escape")
        if kind == "raw":
            return val[1:-1]
        if kind == "num":
            return int(val)
        if kind == "field":
            return dot if val == "." else self.field(dot, val)
        if kind == "var":
            name, _, rest = val.partition(".")
            if name not in scope:
                raise TemplateError(f"undefined variable {name}")
            return self.field(scope[name], rest) if rest else scope[name]
        if kind == "ident":
            if val in ("true", "false"):
                return val == "true"
            if val == "nil":
                return None
            return self.call(val, [], dot, scope)
        raise TemplateError(f"unexpected {val!r}")

    def call(self, fn, args, dot, scope):
        if fn == "include":
            name, ctx = args
            if name not in self.defines:
                raise TemplateError(f"no template {name!r}")
            return self.render(self.defines[name], ctx, {"$": ctx})
        if fn not in FUNCS:
            raise TemplateError(f"function {fn!r} is not supported by helmlite")
        return FUNCS[fn](*args)

    def command(self, cmd, dot, scope, piped):
        first = cmd[0]
        if first[0] == "ident" and first[1] not in ("true", "false", "nil"):
            args = [self.operand(t, dot, scope) for t in cmd[1:]]
            if piped is not NOTHING:
                args.append(piped)
            return self.call(first[1], args, dot, scope)
        if len(cmd) > 1 or piped is not NOTHING:
            raise TemplateError(f"cannot call a non-function {first[1]!r}")
        return self.operand(first, dot, scope)

    def pipeline(self, p, dot, scope):
        v = NOTHING
        for cmd in p.cmds:
            v = self.command(cmd, dot, scope, v)
        return v

    def render(self, body, dot, scope):
        out = []
        scope = dict(scope)
        for n in body:
            if n.kind == "text":
                out.append(n.text)
            elif n.kind == "action":
                v = self.pipeline(n.pipe, dot, scope)
                if n.pipe.decl:
                    scope[n.pipe.decl[0]] = v
                else:
                    out.append(to_str(v))
            elif n.kind == "if":
                branch = n.body if truthy(self.pipeline(n.pipe, dot, scope)) else n.alt
                if branch:
                    out.append(self.render(branch, dot, scope))
            elif n.kind == "with":
                v = self.pipeline(n.pipe, dot, scope)
                if truthy(v):
                    out.append(self.render(n.body, v, scope))
                elif n.alt:
                    out.append(self.render(n.alt, dot, scope))
            elif n.kind == "range":
                v = self.pipeline(n.pipe, dot, scope)
                items = sorted(v.items()) if isinstance(v, dict) else list(enumerate(v or []))
                if not items and n.alt:
                    out.append(self.render(n.alt, dot, scope))
                for k, item in items:
                    inner = dict(scope)
                    if len(n.pipe.decl) == 2:
                        inner[n.pipe.decl[0]], inner[n.pipe.decl[1]] = k, item
                    elif n.pipe.decl:
                        inner[n.pipe.decl[0]] = item
                    out.append(self.render(n.body, item, inner))
        return "".join(out)


NOTHING = object()


def merge(base, over):
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class Chart:
    def __init__(self, path):
        self.path = Path(path)
        meta = yaml.safe_load((self.path / "Chart.yaml").read_text())
        self.chart = {"Name": meta["name"], "Version": meta["version"],
                      "AppVersion": meta.get("appVersion", "")}
        self.values = yaml.safe_load((self.path / "values.yaml").read_text())
        self.templates = {}
        self.defines = {}
        for f in sorted((self.path / "templates").iterdir()):
            body, defs = parse(lex(f.read_text(), f.name), f.name)
            self.defines.update(defs)
            self.templates[f.name] = body

    def render(self, values_override=None, release="sluice", namespace="ingress"):
        values = merge(self.values, values_override)
        root = {"Values": values, "Chart": self.chart,
                "Release": {"Name": release, "Namespace": namespace, "Service": "Helm",
                            "IsInstall": True},
                "Capabilities": {"KubeVersion": {"Version": "v1.30.0"}}}
        r = Renderer(self.defines, root)
        out = {}
        for name, body in self.templates.items():
            if name.startswith("_"):
                continue
            out[name] = r.render(body, root, {"$": root})
        return out

    def documents(self, values_override=None, **kw):
        """Every rendered Kubernetes object (YAML-parsed), NOTES.txt aside."""
        docs = []
        for name, text in self.render(values_override, **kw).items():
            if not name.endswith((".yaml", ".yml")):
                continue
            for d in yaml.safe_load_all(text):
                if d:
                    docs.append(d)
        return docs
