"""Region plate grammars: they rank the recognizer's own candidates and never invent a read.

A read that already fits one of the region's formats is kept as it is (OpenALPR's California pattern
once turned a correct `1291164` into `1Z91164`). Only when the best read fits no format of a region
with a closed list of national formats (br, eu) may a lower-ranked candidate that fits replace it
(ranked then as the prior makes it, `_posterior`), or, when none fits, the candidate that reads a 0
between two letters as the letter O. The US list is open (vanity plates: any 2-8 letters and
digits); there a candidate in one of the states' serial formats replaces a best read in none, when
it is nearly as probable (`US_SERIAL`, `SERIAL_RATIO`) or differs from it only by O for 0 or I for 1
(`LOOKALIKE_RATIO`). With no region set (auto, the default), a candidate in any issued format, a US
state's serial or a closed region's national format, does the same, and a plate boxed long (European
and Brazilian plates are 3-5 times as wide as high, US ones twice), or read from a long row, is
ranked as a closed region's (`by_shape`); its read in none of their formats or the US serials does
not count as read well (`in_shape`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..types import Candidate

L, N = "[A-Z]", "[0-9]"


def _fmt(shape: str) -> str:
    """'LLNNNLL' -> a regex; digits in braces repeat the previous class ('L{1,3}')."""
    return shape.replace("L", L).replace("N", N)


@dataclass(frozen=True)
class Grammar:
    region: str
    patterns: tuple[re.Pattern[str], ...]
    closed: bool
    """True when the formats list is the complete law of the region (a read fitting none is wrong)."""

    def fits(self, text: str) -> bool:
        return lettered(text) not in NOT_PLATES and any(p.fullmatch(text) for p in self.patterns)


# Words printed on plates around the number (state names, slogans): the line finder sees them as
# text rows too, and some fit the permissive US format.
NOT_PLATES = frozenset(
    """ALABAMA ALASKA ARIZONA ARKANSAS COLORADO DELAWARE FLORIDA GEORGIA HAWAII IDAHO ILLINOIS INDIANA
    IOWA KANSAS KENTUCKY LOUISANA MAINE MARYLAND MICHIGAN MONTANA NEBRASKA NEVADA NEWYORK OHIO OKLAHOMA
    OREGON TEXAS UTAH VERMONT VIRGINIA WYOMING CALIF USA DMV DEALER EXPIRES COUNTY STATE
    MISSOURI TENNESSE WISCONSN""".split()
)

_US = (r"[A-Z0-9]{2,8}",)
_BR = ("LLLNNNN", "LLLNLNN")  # old national format and Mercosur
_EU = (
    "LLNNNLL",  # FR (SIV), IT, HR-like
    "NNNNLLL",  # ES
    "LLNNLLL",  # GB
    "NLNNNNN", "NLLNNNN", "NLLLNNN",  # CZ, BE
    "LLNNNNN", "LLLNNNN", "LLLNNLL", "LLNLNLL", "LLNNNNL",  # PL, SK, DK/NO, RO, ...
    "LNNLLL", "LLNNLL", "NNLLNN", "NNNNLL", "LLNNNL", "NNLLLN", "LNNNLL", "LLLNNL", "NLLLNN",
    "LLLNN{1,4}", "LL{0,2}LL{0,1}NN{0,3}",  # DE, AT, CH-like: letters then digits
    "LLLNNN", "LLLNLL", "LLNNNN",
)

US_SERIAL = tuple(re.compile(_fmt(p)) for p in (
    "NLLLNNN", "NNNNNLN", "NLNNNNN",  # California: passenger, commercial
    "LLLNNNN",  # NY, PA, TX, OH, MI, NC, GA, VA, AZ, WA and most large states
    "LLLNNN", "NNNLLL",  # the 6-character series of many states (KY, MN, OR, CO, TN, ...)
    "LNNLLL", "LLLNNL",  # New Jersey
    "LLLLNN",  # Florida
    "LLNNNNN",  # Illinois
    "NLLNNN", "NLLLNN",  # Massachusetts
    "NLLNNNN",  # Maryland
    "LLNLNL",  # Missouri
    "NNNNN", "NNNNNN", "NNNNNNN",  # all-digit series (Delaware, Rhode Island, trailers, fleets)
))
"""Serial formats that US states issue to passenger and commercial vehicles (their DMVs'
published series), without separators. Nine in ten plates on US roads carry one (the rest are
vanity and special plates); 100 of the 108 labelled plates of the us folder do."""

SERIAL_RATIO = 0.25
"""A recognizer candidate in a US serial format replaces a best read in none when it is at least
this probable relative to it: at nine serial plates to one vanity plate, a serial reading a
quarter as probable is still the likelier plate; a far-fetched one is not evidence."""

LOOKALIKE_RATIO = 0.05
"""The bar instead, where the candidate differs from the best read only by O for 0 or I for 1
(California's 3UOA792 read 3U0A792, Slovakia's LM298AI read LM298A1). Many plates print those
pairs in one glyph, and the recognizer learned from US labels that write 0 and 1 for it: its split
between the two says little, the format in that position much. It is the closed regions' bar
(`MIN_ALTERNATIVE_RATIO`). Left-out pairs, as a user who sets no region: eu 99 -> 101 of 108 (the
class found there), `us-ucsd` 89 -> 91 of 96 (there with `--region us` too); us-crops, whose labels
write 0 for every round glyph, 353 -> 352; the rest the same (BENCHMARKS.md)."""

SERIAL_PRIOR = 9.0
"""Odds of an issued format against none, for a plate on the road (the nine to one above)."""


def _posterior(issued: float, other: float) -> float:
    """The probability of a candidate in an issued format chosen over a more probable read in
    none: the two readings' probability together, shared between them by SERIAL_PRIOR. Its own
    probability would rank the chosen read below a sticker or a sign read in the same frame,
    though the prior just made it the likelier of the two (a plate whose O the recognizer split
    with 0 would lose to a dealer frame's lettering read whole).
    The closed regions use the same prior: their list of formats is the law, but personalised
    plates in them exist."""
    k = SERIAL_PRIOR * issued
    if k + other <= 0:
        return 0.0  # both read at no probability at all (a blank, enlarged row): no evidence
    return (issued + other) * k / (k + other)


GRAMMARS: dict[str, Grammar] = {
    "us": Grammar("us", tuple(re.compile(p) for p in _US), closed=False),
    "br": Grammar("br", tuple(re.compile(_fmt(p)) for p in _BR), closed=True),
    "eu": Grammar("eu", tuple(re.compile(_fmt(p)) for p in _EU), closed=True),
}
GRAMMARS["auto"] = Grammar(
    "auto", GRAMMARS["us"].patterns, closed=False
)
GRAMMARS["long"] = Grammar(
    "long", GRAMMARS["eu"].patterns + GRAMMARS["br"].patterns, closed=True
)
"""A plate boxed long with no region set (`by_shape`): the closed regions' formats, together."""

LONG_ASPECT = 3.2
"""With no region set, a plate whose box is at least this many times as wide as high is ranked as
a plate of a closed region (eu or br: `GRAMMARS["long"]`), not as a US plate. US plates are 2:1
(12 x 6 in), Brazilian ones 3.1:1 and European ones 4.7:1 (520 x 110 mm). The photo reader's boxes
of the plates it reads right (`bench/box_aspects.py`) are this long for none of the us and
`us-ucsd` plates, 3 of the 371 us-crops (the whole frame boxed, read the same either way) and 101
of the 107 eu plates; the US sources' 99th percentiles are 2.6-2.8. A camera looking down makes a
plate longer only by its foreshortening (1.15 times at 30 degrees)."""


LONG_ROW = 4.6
"""With no region set, a plate read from a character row (as cut for the recognizer) at least this
many times as wide as high is ranked as a long plate too: where the box says nothing of the plate's
shape (a tight crop read whole, its box the frame's with the margins above and below). The rows of
the plates the reader reads right (`bench/box_aspects.py`) are this long for 87 of the 107 eu
plates and 75 of the 113 br plates, and for 4 of the 567 plates of the us, `us-ucsd` and us-crops
(their 99th percentile is 4.4; a US serial is 2.75 in high and 10 in long, a European one 79 mm
and about 440 mm)."""


def by_shape(region: str, aspect: float, row: float = 0.0) -> str:
    """The grammar a plate boxed `aspect` (width over height), read from a row `row` times as wide
    as high, is ranked by: its region, or with no region set, the closed regions' formats for a
    long plate (`LONG_ASPECT`, `LONG_ROW`), where a read that fits none of them gives way to a
    candidate that fits, as in those regions."""
    return "long" if region == "auto" and (aspect >= LONG_ASPECT or row >= LONG_ROW) else region


NO_DIGIT_FACTOR = 0.5
"""Nearly every plate carries a digit (one of the 330 labelled photos' plates in the US and BR
folders lacks one); truck and sign lettering (PENSKE, FEDEX) and dealer frames nearly never do.
A read without a digit therefore ranks lower against other rows and other detections; it is
still reported when nothing better is found."""


ALL_DIGIT_FACTOR = 0.5
"""Likewise, none of the 330 labelled plates is digits only, while fleet numbers painted on trucks
(205014) and cameras' burned-in date stamps (2014-04-28 read as 201404) are. All-digit plates
exist (some US states, commercial series), so such a read only ranks lower; alone it is reported."""


SHORT_LEN = 4
SHORT_FACTOR = 0.5
"""A read of this many characters or fewer ranks lower: 21 of the 389 labelled us-crops plates
are that short (vanity plates), but 85 of the 91 reads that short on the eu/br train halves and
the ro-detect training frames were not plates (badges such as S300, sticker and sign fragments),
and they outranked the plate of the same frame. Alone, a short read is still reported."""


def lettered(text: str) -> str:
    """`text` with 0 and 1 read as O and I: lettering (state names, slogans, dealer names) as a
    recognizer that learned the US labels' 0 for every round glyph reads it (AR1Z0NA, EXPL0RE)."""
    return text.replace("0", "O").replace("1", "I")


def likeness(text: str) -> float:
    """How much a read that fits (or not) the grammar looks like a plate rather than lettering.

    Digits count only when they are more than a look-alike of O or I: lettering reads with 0s and
    1s, while a serial draws its digits from all ten (all of a plate's 3-4 digits among 0 and 1
    happens to one plate in 125 to 600)."""
    factor = 1.0
    if not any(c.isdigit() for c in lettered(text)):
        factor *= NO_DIGIT_FACTOR
    elif text.isdigit():
        factor *= ALL_DIGIT_FACTOR
    if len(text) <= SHORT_LEN:
        factor *= SHORT_FACTOR
    return factor


MIN_ALTERNATIVE_RATIO = 0.05
"""A fitting candidate replaces a non-fitting best read only if it is at least this probable
relative to it: a far-fetched candidate is not evidence."""


def rank(candidates: Sequence[Candidate], region: str) -> tuple[Candidate, bool]:
    """Choose among the recognizer's candidates (best first); return (choice, fits the grammar).

    With region auto, the formats of every region rank the candidates as a US state's serials
    rank them for the us (`_issued`): a user who sets no region reads plates of some region all
    the same, and a misread of a serial fits no format more often than the serial does."""
    grammar = GRAMMARS.get(region, GRAMMARS["auto"])
    if not candidates:
        return Candidate("", 0.0), False
    best = candidates[0]
    if region in ("us", "auto") and grammar.fits(best.text) and not _issued(best.text, region):
        for cand in candidates[1:]:
            if _issued(cand.text, region) and cand.confidence >= _bar(cand.text, best.text) * best.confidence:
                return Candidate(cand.text, _posterior(cand.confidence, best.confidence)), True
    if grammar.fits(best.text):
        return best, True
    if grammar.closed:
        for cand in candidates[1:]:
            if grammar.fits(cand.text) and cand.confidence >= MIN_ALTERNATIVE_RATIO * best.confidence:
                return Candidate(cand.text, _posterior(cand.confidence, best.confidence)), True
        # No probability floor here: the decoder offers an O only where it saw one at 2% or more,
        # and a 0 between letters is, by the labels below, nearly never right. The read keeps the
        # best read's confidence: the glyphs are the same, only the prior differs.
        lettered = letter_o_amid_letters(best.text)
        if lettered != best.text and any(cand.text == lettered for cand in candidates[1:]):
            return Candidate(lettered, best.confidence), False
    return best, False


def rank_shaped(candidates: Sequence[Candidate], region: str, aspect: float, row: float = 0.0
                ) -> tuple[Candidate, bool]:
    """`rank` for a row `row` times as wide as high, of a plate boxed `aspect` (width over height),
    by `by_shape`'s grammar.
    Whether the choice fits stays the region's own grammar's word: the row competes with other
    rows and detections, and each of them is judged by one grammar."""
    shaped = by_shape(region, aspect, row)
    choice, fits = rank(candidates, shaped)
    return choice, fits if shaped == region else GRAMMARS[region].fits(choice.text)


def in_shape(text: str, region: str, aspect: float, row: float = 0.0) -> bool:
    """Whether a read of a plate boxed `aspect`, from a row `row` times as wide as high, counts as
    read in a format (`Read.grammar_ok`), so that the reader looks no further: with no region set,
    a long plate's read only in an issued format (`_issued`), as `--region eu` counts only its own
    formats; every other read as its region's grammar judges it (`rank_shaped`). A long read in
    none is a European plate misread (a bolt or the band read as a character, a look-alike) more
    often than a vanity plate: the accurate detector's look is then taken, as in the closed
    regions. Its rank stays: a vanity plate still outranks a badge or a sign."""
    return by_shape(region, aspect, row) == region or _issued(text, region)


VEHICLE_MIN_CHARS = 4
"""A pass shorter than this that fits no plate format is not counted as a vehicle (issue 21)."""


def vehicle_like(text: str, region: str = "auto", read_once: bool = False) -> bool:
    """Whether a pass can be a vehicle: its text fits a plate format of the region (for the us,
    whose list is open to vanity plates, a state serial format; for auto, a format of any region),
    or it is at least VEHICLE_MIN_CHARS long and not `read_once`: read in one frame of a stream only.

    The rest is counted as noise, not as passing cars: short reads (IH, L7, 21: badges, sign and
    sticker fragments), and texts in no plate format that one frame of a video read once (a road
    marking or a sign that a later look found in one frame: MTTM700, L700G in the demo's street).
    A car in view is read in frame after frame; a photo is read once by nature, so `read_once` is
    for streams only."""
    return issued_in(text, region) or (len(text) >= VEHICLE_MIN_CHARS and not read_once)


def _serial(text: str) -> bool:
    return any(p.fullmatch(text) for p in US_SERIAL)


def _bar(issued: str, best: str) -> float:
    """How probable, relative to the best read, an issued candidate must be to replace it."""
    return LOOKALIKE_RATIO if lettered(issued) == lettered(best) else SERIAL_RATIO


def _issued(text: str, region: str) -> bool:
    """Whether `text` is in a format that authorities issue: for the us, a state's serial format;
    for auto, that or a national format of a closed region (eu, br). A vanity plate fits none,
    and neither do most misreads of an issued plate (a look-alike in a letter's or a digit's
    place, a frame edge or a bolt read as a character)."""
    if _serial(text):
        return True
    return region == "auto" and GRAMMARS["long"].fits(text)  # the closed regions' formats together


def issued_in(text: str, region: str) -> bool:
    """Whether `text` is in a format the region issues: a closed region's own formats, or for the
    us and auto `_issued`."""
    grammar = GRAMMARS.get(region)
    return grammar.fits(text) if grammar is not None and grammar.closed else _issued(text, region)


def joins(top: str, bottom: str, region: str) -> bool:
    """Whether two stacked rows of one plate read as one plate number, top row first: joined they
    fit an issued format of the region (a closed region's own, or for us and auto `_issued`), and
    not each alone. Two-row plates (motorcycles; square plates of cars in Europe and Brazil:
    `1A2` over `3456`, `AB12` over `CDE`, `ABC` over `1D23`) print one number over two rows, and
    one of their rows may fit a shorter format by itself (`AB12` a German one, `12345` a US
    all-digit series): the rows' geometry (`tworow.stacked`) and the score against the best row
    alone decide those. Two rows that are each a number are two plates, and a state name or a
    slogan over a serial joins into no format."""
    return issued_in(top + bottom, region) and not (issued_in(top, region) and issued_in(bottom, region))


def letter_o_amid_letters(text: str) -> str:
    """`text` with each 0 that stands between two letters written as the letter O.

    Plates that fit no national format (vanity and custom plates: WOB-VWMK4, KM-BORAK) are still
    written in letter and digit groups. In the labels of the eu and br photo folders and the 1,144
    br-crops, a 0 between two letters occurs in none of 1,366 plates and an O between two letters
    in 15; the recognizer, fine-tuned also on US labels that write 0 for every round glyph, leans
    the other way (WOB-VWMK4 read W0BVWMK4 with the O at 2.5-7.6% of its probability, by the
    photo's scale). US plates do carry 0 between letters (HK0E7C), so only the closed regions apply
    this, and only to a read that fits none of their formats.
    """
    chars = list(text)
    for i in range(1, len(chars) - 1):
        if chars[i] == "0" and text[i - 1].isalpha() and text[i + 1].isalpha():
            chars[i] = "O"
    return "".join(chars)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def reorder(candidates: Sequence[Candidate], chosen: Candidate) -> tuple[Candidate, ...]:
    """Candidates with the chosen one first, the rest in their order."""
    return (chosen, *[c for c in candidates if c.text != chosen.text])
