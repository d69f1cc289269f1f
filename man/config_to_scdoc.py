#!/usr/bin/env python3
"""mqgate.toml(5) from docs/configuration.md, so the man page says what the reference says:
config_to_scdoc.py docs/configuration.md > mqgate.toml.5.scd (then scdoc). Headings become
sections, each table row a key with its type and default and an indented meaning, links
their text; the list of links under the title is left out."""
import re
import sys


def inline(text):
    # Links: their text, and the page they point to when it is another one.
    def link(m):
        text, target = m.group(1), m.group(2).split("#")[0]
        page = target.rsplit("/", 1)[-1]
        return text if not page or page in text else f"{text} ({page})"
    text = re.sub(r"\[([^\]]+)\]\(([^)]*)\)", link, text)
    text = text.replace("\\", "\\\\").replace("*", "\\*").replace("_", "\\_")
    return text.replace("`", "")


def blocks(lines):
    """(kind, lines) for headings, tables, code blocks, list items and paragraphs."""
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("#"):
            yield "heading", [line]
            i += 1
        elif line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            yield "code", lines[i + 1:j]
            i = j + 1
        elif line.startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            yield "table", lines[i:j]
            i = j
        elif line.startswith("- "):
            j = i + 1
            while j < len(lines) and lines[j].startswith("  ") and lines[j].strip():
                j += 1
            yield "item", [" ".join(x.strip() for x in lines[i:j])[2:]]
            i = j
        else:
            j = i + 1
            while (j < len(lines) and lines[j].strip()
                   and not lines[j].startswith(("#", "|", "- ", "```"))):
                j += 1
            yield "para", [" ".join(x.strip() for x in lines[i:j])]
            i = j


def cells(row):
    # A `|` inside backticks belongs to the cell (none today, but keep the split honest).
    return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]


def convert(markdown):
    out = ["mqgate.toml(5)", "", "# NAME", "",
           "mqgate.toml - configuration file of the mqgate MQTT broker", "",
           "# SYNOPSIS", "", "/etc/mqgate/mqgate.toml", "", "# DESCRIPTION", ""]
    seen_heading = False
    for kind, lines in blocks(markdown.splitlines()):
        if kind == "heading":
            level = len(lines[0]) - len(lines[0].lstrip("#"))
            title = inline(lines[0].lstrip("#").strip())
            if level == 1:
                continue
            seen_heading = True
            out += ["# " + title.upper() if level == 2 else "## " + title, ""]
        elif kind == "item":
            if not seen_heading and re.fullmatch(r"\[.*\]\(#[^)]*\).*", lines[0]):
                continue  # the table of contents
            out += ["- " + inline(lines[0]), ""]
        elif kind == "para":
            out += [inline(lines[0]), ""]
        elif kind == "code":
            out += ["```"] + lines + ["```", ""]
        elif kind == "table":
            rows = [cells(r) for r in lines]
            header = [c.lower() for c in rows[0]]
            for row in rows[2:]:
                d = dict(zip(header, row))
                facts = [inline(d[k]) for k in ("type",) if d.get(k)]
                if d.get("default"):
                    facts.append("default: " + inline(d["default"]))
                out += ["*" + inline(d["key"]) + "*" + (" (" + "; ".join(facts) + ")"
                                                        if facts else ""),
                        "\t" + inline(d.get("meaning", "")), ""]
    out += ["# SEE ALSO", "",
            "*mqgate*(8), *mqgate_passwd*(1), *ca_creds*(1), *server_creds*(1), "
            "*device_creds*(1), *revoke_creds*(1)", "",
            "Generated from docs/configuration.md of the mqgate sources.", ""]
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        sys.stdout.write(convert(f.read()))
