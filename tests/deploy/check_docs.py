#!/usr/bin/env python3
"""check_docs.py SOURCE_DIR BUILD_DIR — the documentation says what the
executables do.

  - the man pages format without a groff warning and have a NAME line
    whatis can read;
  - fedkd.1 names every command and subcommand `fedkd --help` lists, and
    for each command it documents in OPTIONS, exactly the options of that
    command's --help; fedkd-client.1 lists exactly `fedkd-client --help`'s
    options and every setting its --help names;
  - every `fedkd ...` / `fedkd-client ...` command line in the docs
    (docs/*.md, README.md, code blocks) names a real command and only
    options that command's --help has;
  - docs/configuration.md names every key of the coordinator's key table
    and every setting of fedkd-client, and gives as each coordinator key's
    default what `fedkd serve --print-config` prints."""
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys

errors = []


def fail(msg):
    errors.append(msg)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


class Cli:
    """--help of the built executables, cached per command path."""

    def __init__(self, build):
        self.build = build
        self.cache = {}

    def help(self, path):
        if path not in self.cache:
            exe = os.path.join(self.build, path[0])
            r = subprocess.run([exe, *path[1:], "--help"], capture_output=True, text=True,
                               timeout=30)
            self.cache[path] = (r.returncode, r.stdout)
        return self.cache[path]

    def subcommands(self, path):
        code, out = self.help(path)
        if "Commands:" not in out:
            return []
        return re.findall(r"^  ([a-z][a-z0-9-]*)\s{2,}", out.split("Commands:", 1)[1], re.M)

    def options(self, path):
        code, out = self.help(path)
        return set(re.findall(r"^  (--[a-z0-9-]+)", out, re.M))

    def resolve(self, words):
        """The command path named by words (['fedkd', 'bench', 'train', ...])."""
        path = (words[0],)
        for w in words[1:]:
            if w in self.subcommands(path):
                path += (w,)
            else:
                break
        return path


def man_text(page):
    """Plain text of a roff page: escapes for '-' undone, fonts dropped."""
    text = read(page).replace("\\-", "-").replace("\\e", "\\")
    return re.sub(r"\\f[BIRP]", "", text)


def check_man_format(src):
    for page in glob.glob(os.path.join(src, "deploy", "man", "*.1")):
        name = os.path.basename(page)
        if shutil.which("groff"):
            r = subprocess.run(["groff", "-man", "-ww", "-z", page], capture_output=True, text=True)
            if r.returncode != 0 or r.stderr.strip():
                fail(f"{name}: groff warnings:\n{r.stderr.strip()}")
        else:
            print("note: groff not found (Debian groff-base): man pages not formatted")
        if shutil.which("lexgrog"):
            r = subprocess.run(["lexgrog", page], capture_output=True, text=True)
            if r.returncode != 0:
                fail(f"{name}: whatis cannot read its NAME section: {r.stdout}{r.stderr}")


def man_sections(text):
    """{subsection title: body} of the OPTIONS section."""
    opts = text.split(".SH OPTIONS", 1)[1].split("\n.SH ", 1)[0] if ".SH OPTIONS" in text else ""
    out = {}
    for part in re.split(r'^\.SS "', opts, flags=re.M)[1:]:
        title, body = part.split('"', 1)
        out[title] = body
    return out


def check_fedkd_man(src, cli):
    text = man_text(os.path.join(src, "deploy", "man", "fedkd.1"))
    commands = text.split(".SH COMMANDS", 1)[1].split("\n.SH ", 1)[0]
    for cmd in cli.subcommands(("fedkd",)):
        subs = cli.subcommands(("fedkd", cmd))
        names = [f"{cmd} {s}" for s in subs] or [cmd]
        for n in names:
            if not re.search(rf"(^|[\s\"]){re.escape(n)}([\s\",]|$)", commands):
                fail(f"fedkd.1: COMMANDS does not name '{n}' (from fedkd --help)")
    for title, body in man_sections(text).items():
        if "|" in title:          # a group summarised, options left to --help
            continue
        path = cli.resolve(["fedkd", *title.split()])
        if path != ("fedkd", *title.split()):
            fail(f"fedkd.1: OPTIONS documents '{title}', which fedkd does not have")
            continue
        documented = set(re.findall(r"^(--[a-z0-9-]+)", body, re.M)) - {"--help"}
        actual = cli.options(path) - {"--help"}
        for o in sorted(actual - documented):
            fail(f"fedkd.1: '{title}' does not document {o}")
        for o in sorted(documented - actual):
            fail(f"fedkd.1: '{title}' documents {o}, which its --help does not have")


def check_client_man(src, cli):
    text = man_text(os.path.join(src, "deploy", "man", "fedkd-client.1"))
    opts = text.split(".SH OPTIONS", 1)[1].split("\n.SH ", 1)[0]
    documented = set(re.findall(r"^(--[a-z0-9-]+)", opts, re.M))
    actual = cli.options(("fedkd-client",))
    for o in sorted(actual ^ documented):
        fail(f"fedkd-client.1: option {o} is {'undocumented' if o in actual else 'not in --help'}")
    settings_text = text.split(".SH SETTINGS", 1)[1].split("\n.SH ", 1)[0]
    for key in client_settings(cli):
        if not re.search(rf"\b{re.escape(key)}\b", settings_text):
            fail(f"fedkd-client.1: SETTINGS does not describe '{key}'")


def client_settings(cli):
    code, out = cli.help(("fedkd-client",))
    m = re.search(r"Settings:(.*?)\(", out, re.S)
    return m.group(1).split() if m else []


def doc_command_lines(text):
    """Command lines inside ``` blocks, continuation lines joined."""
    lines = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            lines.append(line)
    return lines


def check_doc_commands(src, cli):
    docs = sorted(glob.glob(os.path.join(src, "docs", "*.md"))) + [os.path.join(src, "README.md")]
    n = 0
    for doc in docs:
        if not os.path.exists(doc):
            continue
        name = os.path.relpath(doc, src)
        for line in doc_command_lines(read(doc)):
            for segment in re.split(r"&&|\|\||;|\||\$\(", line.split(" #", 1)[0]):
                try:
                    words = shlex.split(segment)
                except ValueError:
                    words = segment.split()
                while words and (re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]) or words[0] in
                                 ("$", "sudo", "exec", "time", "nohup", "do", "then", "else")):
                    words = words[1:]
                if not words:
                    continue
                exe = os.path.basename(words[0])
                if exe not in ("fedkd", "fedkd-client") or "/" in words[0] and \
                        not re.search(r"(^|/)(build[^/]*|bin)/fedkd", words[0]):
                    continue
                n += 1
                path = cli.resolve([exe, *words[1:]])
                rest = words[len(path):]
                if exe == "fedkd" and len(path) == 1 and rest and not rest[0].startswith("-"):
                    fail(f"{name}: '{segment.strip()}': fedkd has no command '{rest[0]}'")
                    continue
                if len(path) > 1 and cli.subcommands(path) and rest and \
                        not rest[0].startswith("-"):
                    fail(f"{name}: '{segment.strip()}': {' '.join(path)} has no '{rest[0]}'")
                    continue
                known = cli.options(path) | {"--help", "--version"}
                for w in rest:
                    if w.startswith("--"):
                        opt = w.split("=", 1)[0]
                        if opt not in known:
                            fail(f"{name}: '{segment.strip()}': {' '.join(path)} has no {opt}")
    return n


def check_configuration_doc(src, cli):
    path = os.path.join(src, "docs", "configuration.md")
    if not os.path.exists(path):
        fail("docs/configuration.md is missing")
        return
    text = read(path)
    table = read(os.path.join(src, "coordinator", "config.c"))
    for key in re.findall(r'\{"([a-z_.0-9]+)", K_', table):
        if f"`{key}`" not in text:
            fail(f"docs/configuration.md: coordinator key `{key}` is not described")
    for key in client_settings(cli):
        if f"`{key}`" not in text:
            fail(f"docs/configuration.md: client setting `{key}` is not described")


def normal(value):
    value = value.strip().strip('"')
    if value.startswith("empty"):
        return ""
    try:
        return float(value)
    except ValueError:
        return value


def check_coordinator_defaults(src, cli):
    """The defaults docs/configuration.md gives are what `fedkd serve
    --print-config` prints with no file."""
    r = subprocess.run([os.path.join(cli.build, "fedkd"), "serve", "--print-config"],
                       capture_output=True, text=True, timeout=30)
    actual = dict(re.findall(r"^([a-z_.0-9]+) = (.*)$", r.stdout, re.M))
    text = read(os.path.join(src, "docs", "configuration.md"))
    coordinator = text.split("## Client", 1)[0]
    n = 0
    for key, default in re.findall(r"^\| `([a-z_.0-9]+)` \| (empty[^|]*|`[^`]*`) \|",
                                   coordinator, re.M):
        if key not in actual:
            continue
        n += 1
        if normal(default.strip("`")) != normal(actual[key]):
            fail(f"docs/configuration.md: `{key}` default is {default.strip()}, but "
                 f"fedkd serve --print-config says {actual[key]}")
    if n < len(actual):
        fail(f"docs/configuration.md: defaults given for {n} of {len(actual)} coordinator keys")


def main():
    src, build = sys.argv[1], sys.argv[2]
    cli = Cli(build)
    for exe in ("fedkd", "fedkd-client"):
        if not os.access(os.path.join(build, exe), os.X_OK):
            fail(f"{exe} is not built in {build}")
    if errors:
        print("FAIL:\n" + "\n".join(errors))
        return 1
    check_man_format(src)
    check_fedkd_man(src, cli)
    check_client_man(src, cli)
    n = check_doc_commands(src, cli)
    check_configuration_doc(src, cli)
    check_coordinator_defaults(src, cli)
    if errors:
        print("FAIL:\n" + "\n".join(errors))
        return 1
    print(f"docs ok: man pages agree with --help; {n} command lines in the docs checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
