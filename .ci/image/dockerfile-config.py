#!/usr/bin/env python3
"""Reads the image's configuration from the Dockerfile's final stage (USER,
EXPOSE, ENV, ENTRYPOINT, CMD, LABEL), so the daemonless build and a
`docker build` configure one image from one description.

    dockerfile-config.py Dockerfile --umoci [--arg NAME=VALUE]...

prints umoci config arguments, one per line. Only the forms this
Dockerfile uses are understood (JSON arrays for ENTRYPOINT and CMD,
KEY=VALUE pairs for ENV and LABEL, ${NAME} from ARG); anything else is an
error, not a guess.
"""
import argparse
import json
import re
import shlex
import sys


def logical_lines(text):
    """Dockerfile lines with continuations joined and comments dropped."""
    line = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not line and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            line += stripped[:-1] + " "
            continue
        yield line + stripped
        line = ""
    if line:
        yield line


def final_stage(text):
    stages = [[]]
    for line in logical_lines(text):
        if line.split(None, 1)[0].upper() == "FROM":
            stages.append([])
        stages[-1].append(line)
    return stages[-1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dockerfile")
    parser.add_argument("--umoci", action="store_true", required=True)
    parser.add_argument("--arg", action="append", default=[])
    args = parser.parse_args()
    values = dict(a.split("=", 1) for a in args.arg)

    def expand(text):
        def one(match):
            name = match.group(1) or match.group(2)
            if name not in values:
                sys.exit("the Dockerfile uses ${%s}; pass --arg %s=..." % (name, name))
            return values[name]
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, text)

    with open(args.dockerfile, encoding="utf-8") as f:
        stage = final_stage(f.read())
    out = []
    for line in stage:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword in ("FROM", "COPY", "ARG"):
            continue
        if keyword == "USER":
            out += ["--config.user", rest]
        elif keyword == "EXPOSE":
            for port in rest.split():
                out += ["--config.exposedports", port if "/" in port else port + "/tcp"]
        elif keyword in ("ENTRYPOINT", "CMD"):
            items = json.loads(rest)
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                sys.exit("%s must be a JSON array of strings: %s" % (keyword, rest))
            for item in items:
                out += ["--config.%s" % keyword.lower(), item]
        elif keyword in ("ENV", "LABEL"):
            for pair in shlex.split(rest):
                if "=" not in pair:
                    sys.exit("%s needs KEY=VALUE pairs: %s" % (keyword, rest))
                key, value = pair.split("=", 1)
                flag = "--config.env" if keyword == "ENV" else "--config.label"
                out += [flag, "%s=%s" % (key, expand(value))]
        else:
            sys.exit("the final stage's %s is not understood by the daemonless build" % keyword)
    print("\n".join(out))


if __name__ == "__main__":
    main()
