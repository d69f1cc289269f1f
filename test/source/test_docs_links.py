"""Every relative link in the README and the Markdown under docs/ and bench/ points at a
file that exists and, when it names a heading (`#anchor`), at a heading that exists
there (anchors as GitHub makes them). The docs are split over several pages that point
into each other; a renamed heading or a moved file must fail here, not in a reader's
browser."""
import pathlib
import re
import tempfile
import unittest

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# An inline link or image: [text](target) or [text](target "title"). The text may hold
# brackets (`[limits]`), so only the "](" and the target are matched.
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.I)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:...


def markdown_files(root=ROOT):
    files = [root / "README.md"] if (root / "README.md").exists() else []
    for folder in ("docs", "bench"):
        if (root / folder).is_dir():
            files += sorted((root / folder).rglob("*.md"))
    return files


def prose_lines(text):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading):
    """The anchor GitHub gives a heading: its text without Markdown, lower case, without
    punctuation but '-' and '_', spaces made '-'."""
    parts = CODE_SPAN.split(heading)  # text, fence, code, fence, code, ..., text
    text = ""
    for i in range(0, len(parts), 3):
        prose = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", parts[i])  # a link: its text
        text += re.sub(r"<[^>]+>", "", prose)  # inline HTML tags (not in code: "<name>")
        if i + 2 < len(parts):
            text += parts[i + 2]
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    found = set()
    seen = {}
    for _, line in prose_lines(path.read_text()):
        found.update(HTML_ANCHOR.findall(line))
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(root=ROOT):
    problems = []
    cache = {}
    for path in markdown_files(root):
        for number, line in prose_lines(path.read_text()):
            # Code spans hold examples, not links; their text may still be a link's text.
            line = CODE_SPAN.sub(lambda m: "x" * len(m.group(0)), line)
            for target in LINK.findall(line):
                if EXTERNAL.match(target):
                    continue
                where = f"{path.relative_to(root)}:{number}: {target}"
                file_part, _, anchor = target.partition("#")
                if file_part:
                    base = root if file_part.startswith("/") else path.parent
                    dest = (base / file_part.lstrip("/")).resolve()
                    if not dest.exists():
                        problems.append(f"{where}: no such file")
                        continue
                else:
                    dest = path
                if not anchor:
                    continue
                if dest.suffix != ".md" or dest.is_dir():
                    problems.append(f"{where}: an anchor into a file that is not Markdown")
                    continue
                if dest not in cache:
                    cache[dest] = anchors(dest)
                if anchor not in cache[dest]:
                    problems.append(f"{where}: no heading with that anchor")
    return problems


class DocsLinksTest(unittest.TestCase):
    def test_every_relative_link_resolves(self):
        self.assertEqual(broken_links(), [])

    def test_slugs_are_githubs(self):
        self.assertEqual(slug("`[listeners.<name>]`"), "listenersname")
        self.assertEqual(slug("Transports: TCP, TLS, WebSocket"), "transports-tcp-tls-websocket")
        self.assertEqual(slug("MQTT 5.0"), "mqtt-50")
        self.assertEqual(slug("`bench/attack`"), "benchattack")
        self.assertEqual(slug("How the plugins' decisions combine"),
                         "how-the-plugins-decisions-combine")

    def test_the_check_sees_broken_files_and_anchors(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = pathlib.Path(tmp)
            (root / "docs").mkdir()
            (root / "README.md").write_text(
                "# Top\n\nSee [a](docs/a.md#second-part), [gone](docs/gone.md),\n"
                "[bad](docs/a.md#nowhere), [self](#top), [web](https://example.com/x#y)\n"
                "and `[code](not/checked.md)`.\n\n```\n[fenced](not/checked.md)\n```\n")
            (root / "docs" / "a.md").write_text(
                "# A\n\n## Second part\n\n[up](../README.md#top) [up-bad](../README.md#t)\n"
                "[`[limits]`](#second-part)\n")
            self.assertEqual(broken_links(root), [
                "README.md:3: docs/gone.md: no such file",
                "README.md:4: docs/a.md#nowhere: no heading with that anchor",
                "docs/a.md:5: ../README.md#t: no heading with that anchor",
            ])


if __name__ == "__main__":
    unittest.main()
