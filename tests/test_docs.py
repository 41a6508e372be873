"""The documentation stays true: its Python examples run and the repository paths it names exist.

For `docs/architecture.md`, `docs/extending.md` and `README.md`, every ```python block runs, in
file order, in one fresh namespace per file (cwd = the repository root), as a reader pasting them
top to bottom would; a failure names the file and the line of the block. Blocks that are not meant
to run use other fences (```bash, ```text). For `docs/*.md`, every relative link and every
backticked repository path must exist, and every backticked dotted name under `rocket`,
`pallas_kernels` or `experiments` must resolve (module or attribute).

Names the examples register (attention and projection kinds, training transforms, decoding
methods) are removed again afterwards, so the examples do not leak into other tests of the session.
"""

from __future__ import annotations

import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
EXECUTED = ["docs/architecture.md", "docs/extending.md", "README.md"]

_FENCE = re.compile(r"^(\s*)```(.*)$")


def code_blocks(text: str, language: str = "python") -> list[tuple[int, str]]:
    """(1-based line of the block's first code line, source) of every ```<language> block."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, info = m.group(1), m.group(2).strip()
        body, j = [], i + 1
        while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
            line = lines[j]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            j += 1
        if j == len(lines):
            raise ValueError(f"the code fence opened at line {i + 1} is never closed")
        if info.split()[:1] == [language]:
            blocks.append((i + 2, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def test_code_blocks_are_found_with_their_line_numbers():
    text = "intro\n```python\na = 1\n```\n\n```bash\nls\n```\n- item\n  ```python\n  b = a\n  ```\n"
    assert code_blocks(text) == [(3, "a = 1\n"), (11, "b = a\n")]
    assert code_blocks(text, "bash") == [(7, "ls\n")]
    with pytest.raises(ValueError, match="line 2"):
        code_blocks("x\n```python\nopen")


@pytest.fixture
def registries():
    """Restores rocket's extension registries after a document registered its examples."""
    import rocket.models  # noqa: F401  (attaches the built-in kinds before they are saved)
    from rocket.config import ATTENTION_KINDS, PROJECTION_KINDS, USER_TRANSFORMS
    from rocket.decode import METHODS

    regs = (ATTENTION_KINDS, PROJECTION_KINDS, USER_TRANSFORMS)
    saved = [dict(r._impls) for r in regs], dict(METHODS)
    yield
    for r, impls in zip(regs, saved[0]):
        r._impls.clear()
        r._impls.update(impls)
    METHODS.clear()
    METHODS.update(saved[1])


@pytest.mark.parametrize("doc", EXECUTED)
def test_python_blocks_run(doc, registries, monkeypatch):
    path = ROOT / doc
    assert path.exists(), f"{doc} is missing"
    blocks = code_blocks(path.read_text())
    assert blocks, f"{doc} has no python blocks"
    monkeypatch.chdir(ROOT)
    namespace: dict = {"__name__": "__docs__"}
    for line, source in blocks:
        # padded so that tracebacks and warnings give the line numbers of the markdown file
        code = compile("\n" * (line - 1) + source, str(path), "exec", dont_inherit=True)
        try:
            exec(code, namespace)
        except Exception as e:
            raise AssertionError(
                f"{doc}: the python block at line {line} failed: {type(e).__name__}: {e}"
            ) from e


# --- links and names --------------------------------------------------------------------------
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_CODE = re.compile(r"`([^`\n]+)`")
_PATH = re.compile(r"^(rocket|pallas_kernels|experiments|tests|docs|results)(/[\w.\-]+)*/?$")
_DOTTED = re.compile(r"^(rocket|pallas_kernels|experiments)(\.\w+)+$")


def prose(text: str) -> str:
    """`text` without its fenced code blocks (what links and inline code are read from)."""
    out, inside = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            inside = not inside
            continue
        out.append("" if inside else line)
    return "\n".join(out)


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors of a markdown file's headings."""
    anchors = set()
    for line in prose(text).splitlines():
        if m := re.match(r"^#{1,6}\s+(.*)$", line):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def resolves(dotted: str) -> bool:
    """`rocket.a.b.c` names a module of the repository or an attribute of one (only modules whose
    attributes are asked for are imported: entry points such as `rocket.generate` define flags)."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:n])
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            break
    else:
        return False
    if n == len(parts):
        return True
    obj = importlib.import_module(".".join(parts[:n]))
    for attr in parts[n:]:
        if not hasattr(obj, attr):
            return False
        obj = getattr(obj, attr)
    return True


def test_docs_exist():
    assert {p.name for p in DOCS} >= {"architecture.md", "extending.md"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_exist(doc):
    text = doc.read_text()
    broken = []
    for target in _LINK.findall(prose(text)):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists() or ROOT not in (dest, *dest.parents):
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in heading_anchors(dest.read_text()):
            broken.append(target)
    assert broken == [], f"{doc.name}: broken links {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_named_paths_and_modules_exist(doc):
    names = set(_CODE.findall(prose(doc.read_text())))
    missing = sorted(n for n in names if _PATH.match(n) and not (ROOT / n).exists())
    assert missing == [], f"{doc.name} names paths that do not exist: {missing}"
    unresolved = sorted(n for n in names if _DOTTED.match(n) and not resolves(n))
    assert unresolved == [], f"{doc.name} names modules or attributes that do not exist: {unresolved}"


# --- tables that restate the code -------------------------------------------------------------
def test_the_layers_table_is_the_layering_test_levels():
    from tests.test_layering import LEVELS

    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| (\d+) \| `([\w.]+)` \|", text, flags=re.M)
    assert {name: int(level) for level, name in rows} == LEVELS
    assert [name for _, name in rows] == list(LEVELS)  # bottom-up, in the test's order


def test_the_renamed_fields_table_is_model_renames():
    from rocket.config.legacy import MODEL_RENAMES

    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("### Renamed fields", 1)[1].split("\n## ", 1)[0]
    pairs = re.findall(r"`model\.(\w+)` \| `model\.([\w.]+)`", section)
    assert dict(pairs) == MODEL_RENAMES and len(pairs) == len(MODEL_RENAMES)
