from __future__ import annotations

import pytest

from alprd.read.grammar import GRAMMARS, rank
from alprd.types import Candidate


def test_us_never_rewrites_a_read_that_fits() -> None:
    # OpenALPR's California pattern turned the correct 1291164 into 1Z91164.
    cands = [Candidate("1291164", 0.6), Candidate("1Z91164", 0.3)]
    choice, fits = rank(cands, "us")
    assert choice.text == "1291164" and fits


def test_brazil_prefers_a_fitting_candidate_of_the_recognizers_own() -> None:
    cands = [Candidate("AY09034", 0.5), Candidate("AYO9034", 0.4)]
    choice, fits = rank(cands, "br")
    assert choice.text == "AYO9034" and fits


def test_brazil_keeps_a_fitting_best_read() -> None:
    cands = [Candidate("ABC1D23", 0.7), Candidate("ABC1023", 0.2)]
    assert rank(cands, "br")[0].text == "ABC1D23"


def test_far_fetched_candidate_does_not_replace_best_read() -> None:
    cands = [Candidate("AY09034", 0.9), Candidate("AYO9034", 0.001)]
    choice, fits = rank(cands, "br")
    assert choice.text == "AY09034" and not fits


def test_eu_formats() -> None:
    eu = GRAMMARS["eu"]
    for plate in ("AB123CD", "1234BCD", "AB12CDE", "WA56660", "8B53412"):
        assert eu.fits(plate), plate
    assert not eu.fits("A8123CD")


def test_a_custom_eu_plate_reads_a_zero_between_letters_as_the_letter_o() -> None:
    # WOB-VWMK4 fits no national format; the recognizer offered the O as a runner-up.
    cands = [Candidate("W0BVWMK4", 0.75), Candidate("W0BVWKK4", 0.17), Candidate("WOBVWMK4", 0.057)]
    choice, fits = rank(cands, "eu")
    assert choice == Candidate("WOBVWMK4", 0.75) and not fits


def test_the_letter_o_rule_needs_the_recognizers_own_candidate_and_a_closed_region() -> None:
    assert rank([Candidate("W0BVWMK4", 0.75)], "eu")[0].text == "W0BVWMK4"  # never invented
    # US plates carry 0 between letters (HK0E7C): the US grammar is open and keeps the read.
    assert rank([Candidate("HK0E7C", 0.8), Candidate("HKOE7C", 0.2)], "us")[0].text == "HK0E7C"
    # A read that fits a format keeps its digits.
    assert rank([Candidate("AB012CD", 0.8), Candidate("ABO12CD", 0.2)], "eu")[0].text == "AB012CD"


def test_no_candidates() -> None:
    assert rank([], "us") == (Candidate("", 0.0), False)


def test_state_names_are_not_plates() -> None:
    assert not GRAMMARS["us"].fits("ARIZONA")
    assert rank([Candidate("TEXAS", 0.9)], "us") == (Candidate("TEXAS", 0.9), False)


def test_lettering_without_a_digit_ranks_below_a_plate_but_is_not_dropped() -> None:
    from alprd.read.grammar import likeness

    # truck and sign lettering fits the permissive US format: only its look tells it apart
    assert GRAMMARS["us"].fits("PENSKE") and GRAMMARS["us"].fits("7ABC123")
    assert likeness("PENSKE") < likeness("7ABC123") == 1.0
    assert likeness("NEILDMND") > 0  # a vanity plate without digits still reads


def test_digits_only_ranks_below_a_plate_but_is_not_dropped() -> None:
    from alprd.read.grammar import likeness

    # a truck's fleet number or a camera's date stamp against a real plate in the same frame
    assert likeness("205014") < likeness("91A4ZA") == 1.0
    assert likeness("1291164") > 0


def test_a_short_read_ranks_below_a_full_length_plate_but_is_not_dropped() -> None:
    from alprd.read.grammar import SHORT_LEN, likeness

    # a car badge (S300) or a sticker fragment against the plate of the same frame
    assert likeness("S300") < likeness("DK2Z5S") == 1.0
    # (7s: 0s and 1s alone are lettering's look-alikes, see the next test)
    assert likeness("A" + "7" * SHORT_LEN) == 1.0 and likeness("A" + "7" * (SHORT_LEN - 1)) < 1.0
    assert likeness("ABC") < likeness("AB12") and likeness("ABC") > 0  # the factors stack


def test_lettering_read_with_zeros_and_ones_ranks_as_lettering() -> None:
    from alprd.read.grammar import NO_DIGIT_FACTOR, likeness

    # A state name or slogan read as a recognizer trained on US labels reads it (O as 0, I as 1)
    assert likeness("EXPL0RE") == likeness("EXPLORE") == NO_DIGIT_FACTOR
    assert not GRAMMARS["us"].fits("AR1Z0NA")  # ARIZONA
    assert likeness("P0W9999") == 1.0  # a 9 is no look-alike


def test_us_serial_formats_choose_among_the_recognizers_candidates() -> None:
    from alprd.read.grammar import SERIAL_RATIO

    # a frame edge read as a leading character: the recognizer offered the read without it
    cands = [Candidate("FANH453", 0.5), Candidate("ANH453", 0.3)]
    chosen, fits = rank(cands, "us")
    assert chosen.text == "ANH453" and fits
    # ... with the two readings' probability shared by the prior: the likelier one now, it must
    # not rank below a sticker read at 0.4 in the same frame
    assert chosen.confidence == pytest.approx(0.8 * 2.7 / 3.2) and 0.5 < chosen.confidence < 0.8
    # a serial read is never rewritten, and a vanity plate stays when no serial is near
    assert rank([Candidate("7ABC123", 0.5), Candidate("7A8C123", 0.4)], "us")[0].text == "7ABC123"
    far = [Candidate("NEILDMND", 0.5), Candidate("NEI1DMND", 0.5 * SERIAL_RATIO * 0.9)]
    assert rank(far, "us")[0].text == "NEILDMND"
    assert rank([Candidate("GOLFING", 0.9)], "us") == (Candidate("GOLFING", 0.9), True)
    # with no region set, a US serial ranks the same way, and so does a national format of eu or
    # br (a Slovak LLNNNLL read with a 1 in a letter's place); for the us only its states' serials
    bolt = [Candidate("ANH4537T", 0.5), Candidate("ANH4537", 0.3)]
    assert rank(bolt, "auto")[0].text == "ANH4537"
    assert rank(cands, "auto")[0].text == "FANH453"  # in auto, a German letters-and-digits plate
    slovak = [Candidate("LM298A1", 0.6), Candidate("LM298AI", 0.3)]
    assert rank(slovak, "auto")[0].text == "LM298AI"
    assert rank(slovak, "us")[0].text == "LM298A1"
    assert rank([Candidate("GOLFING", 0.9), Candidate("G0LF1NG", 0.8)], "auto")[0].text == "GOLFING"


def test_candidates_read_at_no_probability_rank_without_failing() -> None:
    # an enlarged, blurred row once read every candidate at 0.0, and the prior divided by zero
    for region in ("us", "auto", "eu", "br"):
        chosen, _ = rank([Candidate("FANH453", 0.0), Candidate("ANH453", 0.0)], region)
        assert chosen.confidence == 0.0


def test_an_o_or_an_i_in_a_serials_letter_place_needs_only_the_lower_bar() -> None:
    from alprd.read.grammar import LOOKALIKE_RATIO, SERIAL_RATIO

    # California's NLLLNNN read with a 0 in a letter's place: the O the recognizer offered, an
    # eighth as probable, fits the state's serial
    cands = [Candidate("3U0A792", 0.83), Candidate("3UOA792", 0.11), Candidate("3UDA792", 0.03)]
    for region in ("us", "auto"):
        assert rank(cands, region)[0].text == "3UOA792"
    # a look-alike other than O/0 or I/1 still needs SERIAL_RATIO
    other = [Candidate("3U8A792", 0.83), Candidate("3UBA792", 0.83 * SERIAL_RATIO * 0.9)]
    assert rank(other, "us")[0].text == "3U8A792"
    # ... and an O/0 one below the lower bar is far-fetched
    far = [Candidate("3U0A792", 0.9), Candidate("3UOA792", 0.9 * LOOKALIKE_RATIO * 0.9)]
    assert rank(far, "us")[0].text == "3U0A792"
    # with no region set, a Slovak LLNNNLL read with a 1 in its last letter's place
    assert rank([Candidate("LM298A1", 0.81), Candidate("LM298AI", 0.17)], "auto")[0].text == "LM298AI"


def test_a_closed_regions_candidate_chosen_over_a_read_in_no_format_ranks_with_the_prior() -> None:
    from alprd.read.grammar import SERIAL_PRIOR

    # the recognizer split one glyph between two look-alikes; the format says which. The choice ranks,
    # against a sign or a dealer frame read in the same photo, with the two readings' probability
    # shared by the prior, not with the look-alike's own share of it
    for region, best, issued in (("eu", "AB123C0", "AB123CO"), ("br", "A8C1234", "ABC1234")):
        choice, fits = rank([Candidate(best, 0.85), Candidate(issued, 0.14)], region)
        k = SERIAL_PRIOR * 0.14
        assert choice.text == issued and fits
        assert choice.confidence == pytest.approx(0.99 * k / (k + 0.85)) and choice.confidence > 0.5


def test_a_long_plate_read_with_no_region_set_is_ranked_by_the_closed_regions_formats() -> None:
    from alprd.read.grammar import LONG_ASPECT, LONG_ROW, by_shape, rank_shaped

    # US plates are 2:1, European ones 4.7:1: only a box with no region set changes grammar
    assert by_shape("auto", 4.7) == "long" and by_shape("auto", LONG_ASPECT) == "long"
    assert by_shape("auto", 2.0) == "auto" and by_shape("auto", 2.9) == "auto"
    assert by_shape("us", 4.7) == "us" and by_shape("eu", 2.0) == "eu"
    # a box that says nothing of the plate (a tight crop's frame): its character row's shape does
    assert by_shape("auto", 2.5, LONG_ROW) == "long" and by_shape("auto", 2.5, 3.5) == "auto"
    assert by_shape("us", 2.5, 5.3) == "us"
    long_row = rank_shaped([Candidate("AB123CDE", 0.8), Candidate("AB123CD", 0.08)], "auto", 2.5, 5.3)
    assert long_row[0].text == "AB123CD"
    # a read in no format gives way to a candidate in a European one at the closed regions' bar,
    # where a US-shaped plate (vanity plates in any shape) keeps it
    cands = [Candidate("AB123CDE", 0.8), Candidate("AB123CD", 0.08)]
    assert rank(cands, "long")[0].text == "AB123CD" and rank(cands, "long")[1]
    assert rank(cands, "auto")[0].text == "AB123CDE"
    # a 0 between letters of a plate in no format reads as O on a long plate only
    vanity = [Candidate("KM0BRAK", 0.9), Candidate("KMOBRAK", 0.03)]
    assert rank(vanity, "long")[0].text == "KMOBRAK" and rank(vanity, "auto")[0].text == "KM0BRAK"
    # a Brazilian Mercosur plate (3.1:1, boxed long) keeps its letter among the digits
    mercosur = [Candidate("ABC1D23", 0.8), Candidate("ABC1023", 0.3)]
    assert rank(mercosur, "long")[0].text == "ABC1D23"
    # against other rows and detections, a long plate's read fits as auto judges every read: a
    # vanity plate in no national format is not ranked down for its shape
    assert rank_shaped([Candidate("GWAGEN", 0.9)], "auto", 4.7) == (Candidate("GWAGEN", 0.9), True)
    assert rank_shaped(cands, "auto", 4.7) == rank(cands, "long")
    assert rank_shaped(cands, "auto", 2.0)[0].text == "AB123CDE"


def test_a_long_plates_read_counts_as_read_in_a_format_only_in_an_issued_one_with_no_region_set() -> None:
    from alprd.read.grammar import in_shape

    assert not in_shape("GWAGEN", "auto", 4.7)  # a vanity plate, or a misread: look again
    assert in_shape("BA302ZZ", "auto", 4.7) and in_shape("ABC1D23", "auto", 3.3)  # SK, Mercosur
    assert in_shape("8951283", "auto", 3.4)  # a US all-digit serial boxed by its characters
    assert in_shape("GWAGEN", "auto", 2.0)  # a US-shaped box: vanity plates are the us's own
    assert in_shape("GWAGEN", "eu", 4.7) and in_shape("GWAGEN", "us", 4.7)  # a set region judges
    assert not in_shape("GWAGEN", "auto", 2.5, 5.3)  # a long row in a box that says nothing


def test_two_stacked_rows_join_only_into_an_issued_format_not_both_rows_fit_alone() -> None:
    from alprd.read.grammar import joins

    assert joins("1A2", "3456", "eu")  # a Czech motorcycle plate, NLNNNNN
    assert joins("ABC", "1D23", "br") and joins("ABC", "1D23", "auto")  # Mercosur, two rows
    assert joins("7ABC", "123", "us")  # a California serial over two rows
    # one row fits a shorter format alone: a British square plate's first row is German-like
    # (LLNN), an Illinois serial's second row a US all-digit series
    assert joins("AB12", "CDE", "eu") and joins("AB", "12345", "us")
    assert not joins("7ABC123", "DMV", "us")  # the top row is a plate alone, the join no format
    assert not joins("CALIF", "7ABC123", "auto")
    assert not joins("SAO", "PAULO", "br") and not joins("GOLF", "ING", "us")  # no format


def test_two_rows_join_the_most_probable_pair_of_their_reads_that_is_a_number() -> None:
    """A row of a two-row plate is too short for its look-alikes to be told apart alone: the
    format of the joined number chooses among each row's reads, never beyond them."""
    from alprd.read.lines import TextLine
    from alprd.read.recognize import Recognition
    from alprd.read.tworow import two_rows

    def row(cy: float, *reads: tuple[str, float]) -> tuple[TextLine, Recognition, Candidate]:
        cands = tuple(Candidate(t, p) for t, p in reads)
        chars = tuple(0.9 for _ in cands[0].text)
        rec = Recognition(cands[0].text, cands[0].confidence, chars, cands)
        return TextLine(60, cy, 90, 30, 0.0, 0.9), rec, cands[0]

    top, bottom = row(20, ("0ET", 0.6), ("OET", 0.3), ("QET", 0.05)), row(55, ("7316", 0.9), ("7S16", 0.05))
    joined = two_rows([bottom, top], "br")
    assert joined is not None and joined[1].text == "OET7316"
    assert joined[1].confidence == pytest.approx(0.3 * 0.9)
    # no pair of reads joins into a Brazilian number: no two-row read
    assert two_rows([row(20, ("0E", 0.6)), bottom], "br") is None
    # rows apart like a serial and a caption are not one plate, whatever they read
    assert two_rows([row(20, ("OET", 0.9)), row(110, ("7316", 0.9))], "br") is None
