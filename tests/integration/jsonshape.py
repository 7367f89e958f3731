#!/usr/bin/env python3
"""Checks a command's --json document against its shape in docs/JSON.md.

usage: jsonshape.py JSON_MD COMMAND DOCUMENT_FILE
Reads the ```json shapes block of JSON_MD, validates the document against the shape of
COMMAND ("list", "verify", "error", ...), and checks that no key anywhere is snake_case.
Prints each problem with its path; exits 1 when there is any, 0 otherwise."""
import json
import re
import sys

TYPES = {
    "str": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "num": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "any": lambda v: True,
}
CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")


def load_shapes(md_path):
    text = open(md_path, encoding="utf-8").read()
    m = re.search(r"```json shapes\n(.*?)\n```", text, re.S)
    if not m:
        raise SystemExit("%s: no ```json shapes block" % md_path)
    return json.loads(m.group(1))


def check(shape, v, path, defs, problems):
    if isinstance(shape, str) and shape.startswith("$") and "|" not in shape:
        return check(defs[shape[1:]], v, path, defs, problems)
    if isinstance(shape, str):
        alts = shape.split("|")
        for a in alts:
            if a.startswith("$"):
                sub = []
                check(a, v, path, defs, sub)
                if not sub:
                    return
            elif TYPES[a](v):
                return
        problems.append("%s: %s is not %s" % (path, json.dumps(v)[:80], shape))
        return
    if isinstance(shape, list):
        if not isinstance(v, list):
            problems.append("%s: not a list" % path)
            return
        for i, x in enumerate(v):
            check(shape[0], x, "%s[%d]" % (path, i), defs, problems)
        return
    if not isinstance(v, dict):
        problems.append("%s: not an object" % path)
        return
    if "*" in shape:
        for k, x in v.items():
            check(shape["*"], x, "%s.%s" % (path, k), defs, problems)
        return
    known = {}
    for k, s in shape.items():
        opt = k.endswith("?")
        name = k[:-1] if opt else k
        known[name] = s
        if name not in v:
            if not opt:
                problems.append("%s: no key %s" % (path, name))
            continue
        check(s, v[name], "%s.%s" % (path, name), defs, problems)
    for k in v:
        if k not in known:
            problems.append("%s: key %s is not in docs/JSON.md" % (path, k))


def snake_keys(v, path, problems):
    if isinstance(v, dict):
        for k, x in v.items():
            if "_" in k or not CAMEL.match(k):
                problems.append("%s: key %r is not camelCase" % (path, k))
            snake_keys(x, "%s.%s" % (path, k), problems)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            snake_keys(x, "%s[%d]" % (path, i), problems)


def main():
    md, command, doc_file = sys.argv[1:4]
    shapes = load_shapes(md)
    if command not in shapes["commands"]:
        raise SystemExit("no shape for command %r in %s" % (command, md))
    try:
        doc = json.load(open(doc_file, encoding="utf-8"))
    except ValueError as ex:
        print("%s: not one JSON document: %s" % (command, ex))
        return 1
    problems = []
    check(shapes["commands"][command], doc, command, shapes["defs"], problems)
    snake_keys(doc, command, problems)
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
