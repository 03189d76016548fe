"""The manual pages render right: barev-gateway.conf(5) shows every key of
conf/barev-gateway.conf.example with the default the example gives it,
written as the example writes it, and neither mandoc nor groff warns about
either page.

Run: TEST_SRCDIR=$PWD /usr/bin/python3 tests/doc/test_man.py  (TAP output)
"""

import os
import re
import subprocess
import sys

SRC = os.environ.get("TEST_SRCDIR") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")
EXAMPLE = os.path.join(SRC, "conf", "barev-gateway.conf.example")
CONF5 = os.path.join(SRC, "conf", "barev-gateway.conf.5")
GATEWAY8 = os.path.join(SRC, "src", "barev-gateway.8")
PAGES = (CONF5, GATEWAY8)

# The example gives these a sample value, not a default: the page must
# call them required or optional and show no default.
NO_DEFAULT = {"component.jid", "component.secret", "component.secret_file"}

# groff's UTF-8 output may use typographic characters for ASCII ones.
TYPOGRAPHIC = {"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'",
               "\u2010": "-", "\u2212": "-", "\u00a0": " "}


def strip_comment(line):
    """line without a # comment (a # inside a string stays)."""
    out, in_string = [], False
    for ch in line:
        if ch == '"':
            in_string = not in_string
        elif ch == "#" and not in_string:
            break
        out.append(ch)
    return "".join(out)


def example_defaults():
    """{"group.key": value text as written} of every key set in the
    example (commented-out keys are not set)."""
    keys, groups = {}, []
    with open(EXAMPLE) as f:
        for n, raw in enumerate(f, 1):
            line = strip_comment(raw).strip()
            if not line:
                continue
            m = re.match(r"^(\w+)\s*=\s*\{$", line)
            if m:
                groups.append(m.group(1))
                continue
            if line == "};":
                groups.pop()
                continue
            m = re.match(r"^(\w+)\s*=\s*(.+?)\s*;$", line)
            if not m or not groups:
                raise AssertionError("%s:%d: cannot read %r" % (EXAMPLE, n,
                                                               raw))
            keys["%s.%s" % (".".join(groups), m.group(1))] = m.group(2)
    if groups:
        raise AssertionError("%s: group %s not closed" % (EXAMPLE, groups))
    return keys


def shown(value):
    """How the page must show a default the example writes as value: the
    same text, with libconfig's list spacing ("[ ]", "[ "a" ]")."""
    m = re.match(r"^\[\s*(.*?)\s*\]$", value)
    if m:
        return "[ %s ]" % m.group(1) if m.group(1) else "[ ]"
    return value


def render(page):
    p = subprocess.run(["groff", "-mandoc", "-Tutf8", "-P-cbou", "-rLL=250n",
                        page], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True)
    if p.returncode != 0 or p.stderr:
        raise AssertionError("groff on %s: status %d\n%s"
                             % (page, p.returncode, p.stderr))
    text = p.stdout
    for k, v in TYPOGRAPHIC.items():
        text = text.replace(k, v)
    return text


def entries(text):
    """{("group", "key"): the key's tag line} of the rendered page: a
    subsection title is indented by 3, a tag by 5."""
    out, group = {}, None
    for line in text.splitlines():
        m = re.match(r"^   (\w+)( \(.*\))?$", line)
        if m:
            group = m.group(1)
            continue
        m = re.match(r"^     (\w[\w, ]*?)( \((.*)\))?$", line)
        if m and group is not None:
            for key in re.split(r",\s*", m.group(1)):
                out[(group, key)] = line.strip()
    return out


def balanced(s):
    if s.count('"') % 2:
        return False
    depth = {"(": 0, "[": 0}
    close = {")": "(", "]": "["}
    in_string = False
    for ch in s:
        if ch == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif ch in depth:
            depth[ch] += 1
        elif ch in close:
            depth[close[ch]] -= 1
            if depth[close[ch]] < 0:
                return False
    return not in_string and all(v == 0 for v in depth.values())


# --- tests -------------------------------------------------------------

def every_key_has_an_entry():
    have = entries(render(CONF5))
    missing = [k for k in example_defaults()
               if tuple(k.split(".", 1)) not in have]
    assert not missing, "no entry in %s for %s" % (CONF5, ", ".join(missing))


def defaults_as_in_example():
    have = entries(render(CONF5))
    wrong = []
    for key, value in sorted(example_defaults().items()):
        head = have.get(tuple(key.split(".", 1)))
        if head is None:
            continue  # every_key_has_an_entry reports it
        if not balanced(head):
            wrong.append("%s: unbalanced quotes or brackets in %r"
                         % (key, head))
        if key in NO_DEFAULT:
            if "default" in head:
                wrong.append("%s has no default, yet: %r" % (key, head))
            continue
        want = "default %s" % shown(value)
        if not re.search(re.escape(want) + r"(,|\)| \()", head):
            wrong.append("%s: %r not in %r" % (key, want, head))
    assert not wrong, "\n".join(wrong)


def mandoc_lint(page):
    def t():
        p = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", page],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True)
        out = "\n".join(l for l in p.stdout.splitlines()
                        if "outdated mandoc.db" not in l)
        assert p.returncode == 0 and not out, \
            "mandoc -T lint %s: status %d\n%s" % (page, p.returncode, out)
    return t


def groff_warnings(page):
    def t():
        p = subprocess.run(["groff", "-mandoc", "-ww", "-z", page],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True)
        assert p.returncode == 0 and not p.stdout, \
            "groff -ww -z %s: status %d\n%s" % (page, p.returncode, p.stdout)
    return t


TESTS = [
    ("conf(5) has an entry for every key of the example",
     every_key_has_an_entry),
    ("conf(5) shows every default as the example writes it",
     defaults_as_in_example),
] + [("mandoc -T lint: no warnings in %s" % os.path.basename(p),
      mandoc_lint(p)) for p in PAGES] + [
    ("groff -ww -z: no warnings in %s" % os.path.basename(p),
     groff_warnings(p)) for p in PAGES]


def main():
    print("1..%d" % len(TESTS), flush=True)
    failed = 0
    for n, (name, fn) in enumerate(TESTS, 1):
        try:
            fn()
            print("ok %d - %s" % (n, name), flush=True)
        except Exception as e:  # a test that cannot run fails loudly
            failed += 1
            print("not ok %d - %s" % (n, name))
            for line in ("%s: %s" % (type(e).__name__, e)).splitlines():
                print("# " + line)
            sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
