"""The regex -> byte DFA compiler agrees with Python's `re.fullmatch` (ASCII mode) on random strings
for every supported construct, and names every unsupported construct in its error."""

from __future__ import annotations

import re

import numpy as np
import pytest

from rocket.decode.tools.regex_dfa import compile_regex

SUPPORTED = [
    r"abc",  # literals
    r"a.c",  # dot (no newline)
    r"[a-c_]+",  # class, range
    r"[^ab\n]*",  # negated class with an escape
    r"\d{2,3}",  # class escape, bounded repeat
    r"\w+\s?\W",  # word / space / non-word
    r"\D\S*",  # negated class escapes
    r"(ab|c)*d",  # group, alternation, star
    r"(?:a|bc)+",  # non-capturing group
    r"a{3}",  # exact repeat
    r"a{2,}b?",  # open repeat, optional
    r"x*?y+?z??",  # lazy quantifiers (same full matches)
    r"\.\*\[\]\(\)\\",  # escaped metacharacters
    r"\t\n\x41[\x30-\x32]",  # character escapes, \xhh, in a class too
    r"[a-z_]\w*",  # identifiers (the README's example)
    r"(a(b|)c){1,2}|-",  # nested group, empty branch
    r"[-a]|[a-]|[]a]",  # '-' and ']' as literals in classes
]
UNSUPPORTED = {
    r"^abc": "anchor ^",
    r"abc$": "anchor $",
    r"\bword": "word boundary",
    r"a\B": "non-boundary",
    r"\Aabc": "anchor \\A",
    r"abc\Z": "anchor \\Z",
    r"a(?=b)": "look-ahead",
    r"a(?!b)": "negative look-ahead",
    r"(?<=a)b": "look-behind",
    r"(a)\1": "backreference \\1",
    r"(?P<x>a)": "named group",
    r"(?i)abc": "group (?i",
    r"[[:alpha:]]": "POSIX class",
    r"a*+": "possessive quantifier",
    r"\p{L}": "escape \\p",
}
ALPHABET = list("abcdxyz_-019 .*[]()\\\n\tA0]")


def _accepts(dfa, data: bytes) -> bool:
    state = 0
    for b in data:
        state = dfa.next_sb[state, b]
    return bool(dfa.accepting[state])


def _walk(dfa, rng: np.random.Generator, max_len: int = 12) -> bytes:
    """A random string the DFA accepts: a random walk through live states, stopping at acceptance."""
    state, out = 0, []
    for _ in range(max_len):
        if dfa.accepting[state] and rng.random() < 0.3:
            break
        live = np.flatnonzero(dfa.next_sb[state] != dfa.dead)
        if live.size == 0:
            break
        b = int(rng.choice(live[live < 128])) if (live < 128).any() else int(rng.choice(live))
        out.append(b)
        state = dfa.next_sb[state, b]
    return bytes(out) if dfa.accepting[state] else b""


@pytest.mark.parametrize("pattern", SUPPORTED)
def test_full_match_agrees_with_python_re(pattern):
    dfa, rx = compile_regex(pattern), re.compile(pattern, re.ASCII)
    rng = np.random.default_rng(0)
    strings = ["".join(rng.choice(ALPHABET, int(rng.integers(0, 9)))) for _ in range(400)]
    for s in strings:  # mostly non-matches: both must reject
        assert _accepts(dfa, s.encode()) == (rx.fullmatch(s) is not None), (pattern, s)
    walks = [_walk(dfa, rng) for _ in range(200)]
    positives = [w for w in walks if _accepts(dfa, w)]
    assert len(positives) > 20
    for w in positives:  # matches of ours are matches of re
        assert rx.fullmatch(w.decode("latin-1")) is not None, (pattern, w)


@pytest.mark.parametrize("pattern, construct", UNSUPPORTED.items())
def test_unsupported_constructs_are_errors_naming_them(pattern, construct):
    with pytest.raises(ValueError, match="not supported") as e:
        compile_regex(pattern)
    assert construct in str(e.value) and repr(pattern) in str(e.value)
