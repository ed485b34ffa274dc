"""Synthetic plates for the recognizer: US, EU and Brazilian layouts drawn with Debian's fonts.

Real labelled plates are few (about 1,700 photos and crops) and come from a handful of cameras, so
a model fine-tuned on them alone learns those cameras. The renderer draws the variety the real
folders lack, by class of plate, never by photo:

- layouts: US (2:1, state name above and slogan below, 30 state-like serial formats and vanity
  strings, coloured and picture backgrounds), EU (blue band with a country code, 25 national
  formats, hyphens, spaces and round seals between groups), Brazil (Mercosul with the blue BRASIL
  band, and the old grey plates with a city line);
- what covers or crowds the characters: registration stickers in the corners and beside the row,
  bolts, plate holders (dealer frames) over the edges, embossing;
- how a camera sees it: perspective, blur, noise, dim night plates (grey levels 30-60), over-exposure,
  JPEG, and plates 40-400 px wide (the small ones that fail today);
- how the reader frames it: a detector-like box (jittered as `prepare_rec_data.jitter_box`) padded
  as the reader pads it, or the whole plate filling the crop (tight crops, zoomed pole cameras).

`render(rng)` returns the crop the reader would cut around a detection, and the plate text.
`prepare_rec_data.py --synthetic N` runs the production line finder on those crops, exactly as on
the real ones. Fonts come from Debian packages (`FONT_PACKAGES`); the Hershey fonts are left out
on purpose: `alprd selftest` draws its own plate with them, and must stay a test of the models.

    python training/synth_plates.py --show 24 --out synth.png    # look at a sheet of samples
"""

from __future__ import annotations

import argparse
import glob
import math
import random
import string
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_PACKAGES = ("fonts-dejavu-core fonts-dejavu-extra fonts-liberation2 fonts-bebas-neue "
                 "fonts-league-spartan fonts-opendin fonts-routed-gothic fonts-roboto-unhinted "
                 "fonts-urw-base35 fonts-open-sans "
                 "fonts-b612 fonts-play fonts-freefont-ttf")

# Plate-like faces: condensed and DIN-like sans (US serials, FE-Schrift, Mandatory), bold grotesques.
PLATE_FONTS = (
    "*/DejaVuSansCondensed-Bold.ttf", "*/DejaVuSansCondensed.ttf", "*/DejaVuSans-Bold.ttf",
    "*/LiberationSansNarrow-Bold.ttf", "*/LiberationSans-Bold.ttf", "*/BebasNeue-Regular.otf",
    "*/BebasNeue-Bold.otf", "*/LeagueSpartan-Bold.otf", "*/LeagueSpartan-SemiBold.otf", "*/OSP-DIN.ttf",
    "*/routed-gothic.ttf", "*/routed-gothic-narrow.ttf", "*/RobotoCondensed-Bold.ttf",
    "*/RobotoCondensed-Regular.ttf", "*/RobotoCondensed-Medium.ttf", "*/NimbusSansNarrow-Bold.otf",
    "*/NimbusSans-Bold.otf", "*/OpenSans-CondBold.ttf", "*/OpenSans-Bold.ttf", "*/B612-Bold.otf",
    "*/B612Mono-Bold.otf", "*/Play-Bold.ttf", "*/FreeSansBold.ttf",
)
# State names and slogans: any legible face, script-like ones included.
LABEL_FONTS = (*PLATE_FONTS, "*/DejaVuSerif-Bold.ttf", "*/DejaVuSerifCondensed-Bold.ttf",
               "*/NimbusRoman-Bold.otf", "*/Play-Regular.ttf", "*/LeagueSpartan-Light.otf")

L, N = string.ascii_uppercase, string.digits

# US: state-like serial formats (L letter, N digit; '-' and ' ' are printed gaps, not characters).
# These are shapes seen across states, chosen so that every letter/digit mix of 5-8 characters the
# real plates use is drawn; they are not a list of any state's rules.
US_FORMATS = (
    "NLLLNNN", "NLLL NNN", "LLL NNNN", "LLL-NNNN", "LLLNNNN", "LNN LLL", "LLL NNL", "LLL-NNL",
    "LLNN LLL", "LLL NNN", "NNN LLL", "NNN-LLL", "LLLL NN", "NNN NLL", "LL NNNNN", "LL-NNNNN",
    "NLL NNNN", "NLLNNNN", "NNNNNLN", "NLNNNNN", "LLN LNL", "LL NNN L", "NNN NNNN", "NNNNNN",
    "LLL NLNN", "N LLL NN", "NLLNNN", "NNLNNNN", "LLLL NNN", "LNNNNNN",
)
US_STATES = (
    "CALIFORNIA", "California", "NEW YORK", "New York", "NEW JERSEY", "Garden State", "PENNSYLVANIA",
    "TEXAS", "Texas", "FLORIDA", "Florida", "ILLINOIS", "OHIO", "Ohio", "MICHIGAN", "GEORGIA",
    "NORTH CAROLINA", "VIRGINIA", "Virginia", "WASHINGTON", "ARIZONA", "Arizona", "MASSACHUSETTS",
    "MARYLAND", "COLORADO", "Colorado", "MINNESOTA", "WISCONSIN", "INDIANA", "TENNESSEE", "MISSOURI",
    "KENTUCKY", "OREGON", "NEVADA", "Nevada", "CONNECTICUT", "UTAH", "Utah", "IOWA", "KANSAS",
    "NEW MEXICO", "IDAHO", "MAINE", "Vermont", "ALABAMA", "LOUISIANA", "DELAWARE", "HAWAII",
)
US_SLOGANS = (
    "Sunshine State", "Garden State", "visitPA.com", "Empire State", "Land of Lincoln", "dmv.ca.gov",
    "Great Lakes Splendor", "The Lone Star State", "First in Flight", "Live Free or Die",
    "Grand Canyon State", "Peach State", "Evergreen State", "Pure Michigan", "Birthplace of Aviation",
    "10,000 Lakes", "Volunteer State", "The Silver State", "Famous Potatoes", "Show Me State",
    "Virginia is for Lovers", "Constitution State", "In God We Trust", "Spirit of America",
    "Land of Enchantment", "Explore Minnesota", "America's Dairyland", "Wild Wonderful",
)
DEALERS = ("AUTO MALL", "HONDA OF", "TOYOTA", "FORD", "CHEVROLET", "MOTORS INC", "CAR SALES", "NISSAN",
           "SUBARU", "DRIVE SAFE", "KIA", "MAZDA", "BMW OF", "AUTO GROUP", "USED CARS")

# EU: (country code, formats). Groups are separated by ' ', '-' or ':' (a round seal: German
# district and registration stickers sit between the letter groups).
EU_FORMATS = (
    ("D", ("L:LL NNNN", "LL:LL NNN", "LLL:L NN", "L:L NNNN", "LL:L NNNN", "LLL:LL NNN")),
    ("F", ("LL-NNN-LL",)), ("I", ("LL NNN LL",)), ("E", ("NNNN LLL",)),
    ("NL", ("NN-LLL-N", "LL-NNN-L", "N-LLL-NN", "LL-NN-LL", "NN-LL-LL")),
    ("PL", ("LL NNNNN", "LLL NNNN", "LL NNNLL", "LLL NNLL")), ("CZ", ("NLN NNNN", "NLL NNNN")),
    ("SK", ("LL NNN LL", "LL-NNNLL")), ("GB", ("LLNN LLL",)), ("B", ("N-LLL-NNN",)),
    ("A", ("L NNNN L", "LL NNN LL")), ("RO", ("L NN LLL", "LL NN LLL")), ("H", ("LLL-NNN", "LLLL-NNN")),
    ("DK", ("LL NN NNN",)), ("S", ("LLL NNL", "LLL NNN")), ("P", ("NN-LL-NN", "LL-NN-LL")),
    ("LT", ("LLL NNN",)), ("SLO", ("LL LL-NNN",)), ("HR", ("LL NNN-LL",)), ("BG", ("LL NNNN LL",)),
    ("FIN", ("LLL-NNN",)), ("N", ("LL NNNNN",)), ("IRL", ("NNN-L-NNNN", "NN-LL-NNNN")),
    ("CH", ("LL NNNNNN", "LL NNNNN")), ("UA", ("LL NNNN LL",)),
)
BR_CITIES = ("SAO PAULO - SP", "RIO DE JANEIRO - RJ", "CURITIBA - PR", "BELO HORIZONTE - MG",
             "PORTO ALEGRE - RS", "SALVADOR - BA", "RECIFE - PE", "CAMPINAS - SP", "BRASILIA - DF")


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # BGR uint8: the crop the reader would read
    label: str
    kind: str  # us, eu, br


# --- fonts -----------------------------------------------------------------------------------


@cache
def fonts(patterns: tuple[str, ...]) -> tuple[str, ...]:
    found = []
    for pat in patterns:
        hits = sorted(glob.glob(f"/usr/share/fonts/**/{pat.split('/')[-1]}", recursive=True))
        if hits:
            found.append(hits[0])
    if len(found) < 8:
        raise SystemExit(f"only {len(found)} plate fonts found; install them: "
                         f"apt-get install {FONT_PACKAGES}")
    return tuple(found)


@lru_cache(maxsize=512)
def font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


# --- text ------------------------------------------------------------------------------------


def fill(fmt: str, rng: random.Random) -> str:
    """A format with its L and N replaced by random letters and digits; gaps kept."""
    return "".join(rng.choice(L) if c == "L" else rng.choice(N) if c == "N" else c for c in fmt)


def us_text(rng: random.Random) -> str:
    if rng.random() < 0.12:  # vanity plates: any 2-7 letters and digits, sometimes a gap
        n = rng.randint(2, 7)
        text = "".join(rng.choice(L if rng.random() < 0.75 else N) for _ in range(n))
        if n >= 4 and rng.random() < 0.3:
            k = rng.randint(1, n - 1)
            text = text[:k] + " " + text[k:]
        return text
    return fill(rng.choice(US_FORMATS), rng)


def plain(text: str) -> str:
    return "".join(c for c in text if c.isalnum())


# --- drawing ---------------------------------------------------------------------------------


def rgb(rng: random.Random, lo: int, hi: int) -> tuple[int, int, int]:
    return (rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(lo, hi))


def ink(rng: random.Random) -> tuple[int, int, int]:
    """Character colours of real plates: black, navy, dark blue, maroon, dark green, red."""
    return rng.choice([
        (15, 15, 20), (25, 25, 30), (20, 30, 90), (30, 40, 120), (10, 20, 70), (110, 20, 30),
        (20, 80, 40), (160, 25, 25), (40, 40, 40),
    ])


def text_width(draw: ImageDraw.ImageDraw, text: str, f: ImageFont.FreeTypeFont) -> float:
    return float(draw.textlength(text, font=f))


def draw_row(img: Image.Image, text: str, box: tuple[float, float, float, float],
             color: tuple[int, int, int], font_path: str, rng: random.Random, emboss: bool,
             seal: tuple[int, int, int] | None = None) -> tuple[float, float]:
    """Draw the plate's characters to fill `box` (x, y, w, h): cap height = h, squeezed to fit w.
    Returns the drawn row's left and right ends.

    Characters go one by one with a random tracking; ' ' and '-' are gaps (a dash is drawn), ':' a
    round seal (German plates). The row is drawn on its own layer and squeezed horizontally when
    too wide, the way condensed plate fonts look.
    """
    x, y, w, h = box
    size = max(8, int(h * 1.38))
    f = font(font_path, size)
    probe = ImageDraw.Draw(img)
    # scale the font so that a capital's ink is h high
    top, bottom = probe.textbbox((0, 0), "H", font=f)[1::2]
    size = max(8, int(size * h / max(1, bottom - top)))
    f = font(font_path, size)
    top = probe.textbbox((0, 0), "H", font=f)[1]
    tracking = rng.uniform(-0.02, 0.14) * h
    gap = rng.uniform(0.25, 0.6) * h
    items: list[tuple[str, float]] = []
    for c in text:
        if c in " -":
            items.append((c, gap))
        elif c == ":":
            items.append((c, h * 0.75))
        else:
            items.append((c, text_width(probe, c, f) + tracking))
    total = sum(a for _, a in items) - tracking
    layer_w = int(total + 4 * h)
    layer = Image.new("L", (layer_w, int(h * 2.2)), 0)
    seals = Image.new("RGB", layer.size, (0, 0, 0))
    seal_mask = Image.new("L", layer.size, 0)
    d = ImageDraw.Draw(layer)
    ds, dm = ImageDraw.Draw(seals), ImageDraw.Draw(seal_mask)
    cx = 2 * h
    base = h * 0.6 - top
    stroke = rng.choice([0, 0, 0, 1, 2]) * max(1, int(h / 60))
    for c, adv in items:
        if c == "-":
            d.rectangle([cx + adv * 0.2, h * 0.6 + h * 0.45, cx + adv * 0.8, h * 0.6 + h * 0.58], fill=255)
        elif c == ":" and seal is not None:
            r = adv * 0.42
            mx, my = cx + adv / 2, h * 0.6 + h * rng.uniform(0.35, 0.65)
            ds.ellipse([mx - r, my - r, mx + r, my + r], fill=seal)
            ds.ellipse([mx - r * 0.6, my - r * 0.6, mx + r * 0.6, my + r * 0.6], fill=rgb(rng, 60, 220))
            dm.ellipse([mx - r, my - r, mx + r, my + r], fill=255)
        elif c not in " :":
            d.text((cx, base), c, font=f, fill=255, stroke_width=stroke, stroke_fill=255)
        cx += adv
    scale_x = min(1.0, w / max(1.0, total)) * rng.uniform(0.88, 1.0)
    if rng.random() < 0.3:
        scale_x *= rng.uniform(0.8, 1.0)  # condensed
    new_w = max(4, int(layer_w * scale_x))
    layer = layer.resize((new_w, layer.size[1]), Image.BILINEAR)
    seals = seals.resize((new_w, layer.size[1]), Image.BILINEAR)
    seal_mask = seal_mask.resize((new_w, layer.size[1]), Image.BILINEAR)
    ox = int(x + (w - total * scale_x) / 2 - 2 * h * scale_x + rng.uniform(-0.04, 0.04) * w)
    oy = int(y - h * 0.6)
    if emboss:  # raised characters: a light rim above-left, a shadow below-right
        off = max(1, int(h * 0.04))
        img.paste((235, 235, 235), (ox - off, oy - off), layer.point(lambda v: v * 0.6))
        img.paste((60, 60, 60), (ox + off, oy + off), layer.point(lambda v: v * 0.5))
    img.paste(color, (ox, oy), layer)
    img.paste(seals, (ox, oy), seal_mask)
    left = ox + 2 * h * scale_x
    return left, left + total * scale_x


def draw_label(img: Image.Image, text: str, cx: float, cy: float, max_w: float, h: float,
               color: tuple[int, int, int], rng: random.Random) -> None:
    """Small text (state name, slogan, city) centred at (cx, cy), at most max_w wide."""
    path = rng.choice(fonts(LABEL_FONTS))
    f = font(path, max(6, int(h)))
    d = ImageDraw.Draw(img)
    tw = text_width(d, text, f)
    if tw > max_w:
        f = font(path, max(6, int(h * max_w / tw)))
        tw = text_width(d, text, f)
    bb = d.textbbox((0, 0), text, font=f)
    d.text((cx - tw / 2, cy - (bb[1] + bb[3]) / 2), text, font=f, fill=color)


def sticker(img: Image.Image, x: float, y: float, h: float, rng: random.Random) -> None:
    """A registration sticker: a coloured rectangle with a month or year on it."""
    w = h * rng.uniform(1.0, 1.8)
    d = ImageDraw.Draw(img)
    bg = rgb(rng, 40, 255)
    d.rectangle([x, y, x + w, y + h], fill=bg)
    fg = (0, 0, 0) if sum(bg) > 380 else (255, 255, 255)
    months = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    text = rng.choice([f"{rng.randint(0, 99):02d}", rng.choice(months), str(rng.randint(1, 12))])
    draw_label(img, text, x + w / 2, y + h / 2, w * 0.85, h * 0.7, fg, rng)


def bolts(img: Image.Image, W: int, H: int, rng: random.Random) -> None:
    d = ImageDraw.Draw(img)
    r = H * rng.uniform(0.03, 0.06)
    ys = [H * rng.uniform(0.08, 0.2)] + ([H * rng.uniform(0.8, 0.92)] if rng.random() < 0.4 else [])
    for yy in ys:
        for xx in (W * rng.uniform(0.15, 0.28), W * rng.uniform(0.72, 0.85)):
            c = rgb(rng, 60, 200)
            d.ellipse([xx - r, yy - r, xx + r, yy + r], fill=c, outline=(30, 30, 30))


def background(W: int, H: int, rng: random.Random, base: tuple[int, int, int]) -> Image.Image:
    """Plate ground: a flat colour, a gradient, or a pale picture of soft shapes (US plates)."""
    arr = np.empty((H, W, 3), np.float32)
    arr[:] = base
    if rng.random() < 0.5:
        g = np.linspace(rng.uniform(-40, 10), rng.uniform(-10, 40), H)[:, None, None]
        arr += g
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.35:
        over = Image.new("RGB", (W, H), base)
        d = ImageDraw.Draw(over)
        for _ in range(rng.randint(1, 4)):
            c = rgb(rng, 120, 255)
            if rng.random() < 0.5:  # hills / waves along the bottom
                xs = np.linspace(0, W, rng.randint(3, 7))
                pts = [(0, H), *[(x, H * rng.uniform(0.5, 0.95)) for x in xs], (W, H)]
                d.polygon(pts, fill=c)
            else:  # a sun, an orange, a badge
                r = H * rng.uniform(0.1, 0.4)
                cx, cy = W * rng.uniform(0, 1), H * rng.uniform(0, 1)
                d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=c)
        img = Image.blend(img, over, rng.uniform(0.15, 0.45))
    return img


def us_plate(rng: random.Random, stacked_share: float = 0.0) -> tuple[Image.Image, str]:
    W, H = 600, 300
    dark = rng.random() < 0.08
    base = rgb(rng, 20, 70) if dark else rng.choice([rgb(rng, 215, 255), rgb(rng, 215, 255),
                                                   (rng.randint(150, 200), rng.randint(215, 240), 250),
                                                   (rng.randint(220, 250), rng.randint(220, 245), 200)])
    img = background(W, H, rng, base)
    text = us_text(rng)
    color = rgb(rng, 225, 255) if dark else ink(rng)
    fp = rng.choice(fonts(PLATE_FONTS))
    ch = H * rng.uniform(0.36, 0.52)
    cy = H * rng.uniform(0.5, 0.58)
    margin = W * rng.uniform(0.05, 0.14)
    row_w = W - 2 * margin
    stacked = stacked_share > 0 and rng.random() < stacked_share  # no draw at 0: the older sets' stream
    if stacked or rng.random() < 0.25:  # a picture, an emblem or stacked letters take room
        row_w *= rng.uniform(0.75, 0.9)
    ends = draw_row(img, text, (W / 2 - row_w / 2, cy - ch / 2, row_w, ch), color, fp, rng,
                    emboss=rng.random() < 0.3)
    if stacked:
        stack(img, ends, cy, ch, color, fp, rng)
    label_color = rng.choice([color, ink(rng), (200, 30, 30), (20, 40, 140)])
    if rng.random() < 0.9:
        draw_label(img, rng.choice(US_STATES), W / 2, H * rng.uniform(0.1, 0.17), W * rng.uniform(0.4, 0.8),
                   H * rng.uniform(0.09, 0.16), label_color, rng)
    if rng.random() < 0.7:
        draw_label(img, rng.choice(US_SLOGANS), W / 2, H * rng.uniform(0.86, 0.92),
                   W * rng.uniform(0.4, 0.75), H * rng.uniform(0.06, 0.1), label_color, rng)
    for _ in range(rng.choice([0, 1, 1, 2])):
        sh = H * rng.uniform(0.1, 0.2)
        corner = rng.random()
        sx = rng.choice([W * 0.03, W * 0.97 - sh * 1.6])
        if corner < 0.7:
            sy = rng.choice([H * 0.03, H * 0.97 - sh])
        else:  # beside the row, as the NJ year sticker
            sy = cy - sh / 2 + rng.uniform(-0.2, 0.2) * ch
        sticker(img, sx, sy, sh, rng)
    if rng.random() < 0.6:
        bolts(img, W, H, rng)
    return img, plain(text)


STACKED = 0.0
"""Share of rendered US plates with a stack of one to three small characters beside the serial:
the class, county or organisation letters of special plates (Delaware's PC, Idaho's county codes,
New Jersey, Massachusetts, North Carolina and Maryland organisation plates) are printed one above
the other, each under half the serial's height, and are not part of the number the labels (and
the DMV) give. Without such plates to learn from, a fine-tuned model reads one of them as a first
or last character (`E197659`): stacks are about a fifth of the us-crops misses of models that never
trained on us-crops (2026-12-06). 0 here, so that the main synthetic set renders as it always has;
`prepare_rec_data.py --kind us --stacked 1.0` renders the supplement of stacked plates."""


def stack(img: Image.Image, ends: tuple[float, float], cy: float, ch: float,
          color: tuple[int, int, int], font_path: str, rng: random.Random) -> None:
    """Small characters one above the other, beside the serial row that spans `ends`, centred on
    its middle `cy` (the row's cap height is `ch`); on the left two times in three."""
    k = rng.choice((1, 2, 2, 2, 3))
    gh = ch * rng.uniform(0.3, 0.45) if k < 3 else ch * rng.uniform(0.26, 0.32)
    lead = gh * rng.uniform(0.15, 0.35)
    gw = gh * rng.uniform(0.6, 0.9)
    gap = ch * rng.uniform(0.08, 0.3)
    x = ends[0] - gap - gw if rng.random() < 2 / 3 else ends[1] + gap
    top = cy - (k * gh + (k - 1) * lead) / 2
    own = rng.random() < 0.7  # the serial's font and colour, or a label's
    for i in range(k):
        glyph = rng.choice(L) if rng.random() < 0.8 else rng.choice(N)
        draw_row(img, glyph, (x, top + i * (gh + lead), gw, gh), color if own else ink(rng),
                 font_path if own else rng.choice(fonts(LABEL_FONTS)), rng, emboss=False)


def eu_plate(rng: random.Random) -> tuple[Image.Image, str]:
    code, formats = rng.choice(EU_FORMATS)
    fmt = rng.choice(formats)
    text = fill(fmt, rng)
    W, H = rng.randint(980, 1060), rng.randint(210, 235)
    yellow = code in ("GB", "NL") and rng.random() < 0.4
    if yellow:
        base = (rng.randint(225, 255), rng.randint(190, 220), rng.randint(0, 60))
    else:
        base = rgb(rng, 220, 255)
    img = background(W, H, rng, base)
    d = ImageDraw.Draw(img)
    band = int(W * rng.uniform(0.075, 0.095))
    has_band = rng.random() < 0.9
    if has_band:
        d.rectangle([0, 0, band, H], fill=(rng.randint(0, 40), rng.randint(40, 80), rng.randint(140, 200)))
        for k in range(12):  # the ring of stars
            a = 2 * math.pi * k / 12
            sx, sy = band / 2 + band * 0.28 * math.cos(a), H * 0.32 + band * 0.28 * math.sin(a)
            d.ellipse([sx - 3, sy - 3, sx + 3, sy + 3], fill=(250, 220, 0))
        draw_label(img, code, band / 2, H * 0.75, band * 0.85, H * 0.25, (255, 255, 255), rng)
    d.rectangle([2, 2, W - 3, H - 3], outline=(20, 20, 20), width=rng.randint(2, 6))
    x0 = band if has_band else 0
    ch = H * rng.uniform(0.62, 0.75)
    mx = W * rng.uniform(0.02, 0.05)
    seal = rgb(rng, 80, 220) if ":" in fmt else None
    draw_row(img, text, (x0 + mx, H / 2 - ch / 2, W - x0 - 2 * mx, ch), (15, 15, 15),
             rng.choice(fonts(PLATE_FONTS)), rng, emboss=rng.random() < 0.4, seal=seal)
    if rng.random() < 0.3:
        bolts(img, W, H, rng)
    return img, plain(text)


def br_plate(rng: random.Random) -> tuple[Image.Image, str]:
    mercosul = rng.random() < 0.55
    W, H = 800, 260
    if mercosul:
        text = fill(rng.choice(("LLLNLNN", "LLLNLNN", "LLL NLNN")), rng)
        img = background(W, H, rng, rgb(rng, 225, 255))
        d = ImageDraw.Draw(img)
        band = int(H * rng.uniform(0.18, 0.24))
        d.rectangle([0, 0, W, band], fill=(rng.randint(0, 40), rng.randint(50, 90), rng.randint(150, 210)))
        draw_label(img, "BRASIL", W / 2, band / 2, W * 0.3, band * 0.7, (255, 255, 255), rng)
        d.rectangle([2, 2, W - 3, H - 3], outline=(20, 20, 20), width=rng.randint(2, 6))
        ch = H * rng.uniform(0.5, 0.6)
        cy = band + (H - band) / 2
        color = (15, 15, 15)
    else:
        text = fill(rng.choice(("LLL-NNNN", "LLL NNNN", "LLL-NNNN")), rng)
        img = background(W, H, rng, rgb(rng, 150, 210))
        d = ImageDraw.Draw(img)
        d.rectangle([2, 2, W - 3, H - 3], outline=(20, 20, 20), width=rng.randint(3, 8))
        draw_label(img, rng.choice(BR_CITIES), W / 2, H * 0.16, W * 0.6, H * 0.14, (20, 20, 20), rng)
        ch = H * rng.uniform(0.5, 0.6)
        cy = H * 0.6
        color = (15, 15, 15)
    mx = W * rng.uniform(0.03, 0.07)
    draw_row(img, text, (mx, cy - ch / 2, W - 2 * mx, ch), color, rng.choice(fonts(PLATE_FONTS)), rng,
             emboss=not mercosul and rng.random() < 0.5)
    if rng.random() < 0.4:
        bolts(img, W, H, rng)
    return img, plain(text)


def halves(fmt: str) -> tuple[str, str]:
    """A one-row format cut at the printed gap nearest its middle: the two rows of the same number
    on a square plate (`NLN NNNN` -> `NLN` over `NNNN`, `LL-NNN-LL` -> `LL-NNN` over `LL`)."""
    gaps = [i for i, c in enumerate(fmt) if c in " -:"]
    if not gaps:
        cut = (len(fmt) + 1) // 2
        return fmt[:cut], fmt[cut:]
    cut = min(gaps, key=lambda i: abs(i - len(fmt) / 2))
    return fmt[:cut], fmt[cut + 1 :]


def two_row_plate(rng: random.Random, kind: str) -> tuple[Image.Image, str]:
    """A square plate printing one number over two rows of one size: the rear plates of many
    European cars (`1A2` over `3456`, `AB12` over `CDE`), Brazilian motorcycles (`ABC` over `1D23`
    under the BRASIL band, or `ABC` over `1234` under a city line) and US motorcycles (a state name
    over the rows). Each row alone fits no national format; joined top first, they do."""
    W = rng.randint(480, 560)
    H = int(W * rng.uniform(0.7, 0.85))
    img = background(W, H, rng, rgb(rng, 220, 255))
    d = ImageDraw.Draw(img)
    x0, top_y = 0.0, 0.0
    color: tuple[int, int, int] = (15, 15, 15)
    if kind == "eu":
        _, formats = rng.choice(EU_FORMATS)
        fmt = rng.choice(formats)
        if rng.random() < 0.85:  # the blue band down the left edge, full height
            band = int(W * rng.uniform(0.1, 0.13))
            blue = (rng.randint(0, 40), rng.randint(40, 80), rng.randint(140, 200))
            d.rectangle([0, 0, band, H], fill=blue)
            x0 = float(band)
    elif kind == "br":
        mercosul = rng.random() < 0.6
        fmt = "LLL NLNN" if mercosul else "LLL NNNN"
        top_y = H * rng.uniform(0.16, 0.22)
        if mercosul:
            blue = (rng.randint(0, 40), rng.randint(50, 90), rng.randint(150, 210))
            d.rectangle([0, 0, W, top_y], fill=blue)
            draw_label(img, "BRASIL", W / 2, top_y / 2, W * 0.4, top_y * 0.7, (255, 255, 255), rng)
        else:
            draw_label(img, rng.choice(BR_CITIES), W / 2, top_y / 2, W * 0.8, top_y * 0.6, (20, 20, 20), rng)
    else:
        fmt = rng.choice([f for f in US_FORMATS if " " in f or "-" in f])
        top_y = H * rng.uniform(0.14, 0.2)
        color = ink(rng)
        draw_label(img, rng.choice(US_STATES), W / 2, top_y / 2, W * 0.8, top_y * 0.6, color, rng)
    first, second = (fill(part, rng) for part in halves(fmt))
    d.rectangle([2, 2, W - 3, H - 3], outline=(20, 20, 20), width=rng.randint(2, 6))
    ch = (H - top_y) * rng.uniform(0.3, 0.36)
    lead = (H - top_y - 2 * ch) * rng.uniform(0.25, 0.4)
    y = top_y + (H - top_y - 2 * ch - lead) / 2
    mx = (W - x0) * rng.uniform(0.06, 0.12)
    fp = rng.choice(fonts(PLATE_FONTS))
    emboss = rng.random() < 0.3
    for row in (first, second):
        draw_row(img, row, (x0 + mx, y, W - x0 - 2 * mx, ch), color, fp, rng, emboss)
        y += ch + lead
    if rng.random() < 0.4:
        bolts(img, W, H, rng)
    return img, plain(first + second)


# --- the camera ------------------------------------------------------------------------------


def holder(plate: np.ndarray, rng: random.Random) -> np.ndarray:
    """A plate holder (dealer frame) around the plate: a dark or chrome rim, text on its bottom bar.
    Its inner edge may cover the characters' tops or bottoms a little."""
    H, W = plate.shape[:2]
    t = int(H * rng.uniform(0.04, 0.1))
    bottom = int(H * rng.uniform(0.1, 0.2))
    color = rng.choice([rgb(rng, 10, 50), rgb(rng, 150, 220)])
    out = cv2.copyMakeBorder(plate, t, bottom, t, t, cv2.BORDER_CONSTANT, value=color)
    inner = int(H * rng.uniform(0.0, 0.06))
    if inner:
        out[t : t + inner // 2, :] = color
        out[-bottom - inner : -bottom, :] = color
    if rng.random() < 0.7:
        pil = Image.fromarray(out)
        txt = (255, 255, 255) if sum(color) < 300 else (20, 20, 20)
        draw_label(pil, rng.choice(DEALERS), out.shape[1] / 2, out.shape[0] - bottom / 2,
                   W * 0.6, bottom * 0.7, txt, rng)
        out = np.asarray(pil)
    return out


def scene(plate: np.ndarray, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """The plate on a car's body, seen in perspective. Returns the image and the plate's corners."""
    H, W = plate.shape[:2]
    mx, my = int(W * 0.6), int(H * 1.0)
    car = np.empty((H + 2 * my, W + 2 * mx, 3), np.float32)
    car[:] = rgb(rng, 10, 240)
    noise = np.random.default_rng(rng.getrandbits(32)).standard_normal(car.shape, dtype=np.float32)
    car += noise * rng.uniform(2, 10)
    for _ in range(rng.randint(0, 4)):  # bumper and boot lines
        y = rng.randint(0, car.shape[0] - 1)
        cv2.line(car, (0, y), (car.shape[1], y + rng.randint(-20, 20)), rgb(rng, 0, 255), rng.randint(2, 12))
    car = np.clip(car, 0, 255).astype(np.uint8)
    corners = np.float32([[mx, my], [mx + W, my], [mx + W, my + H], [mx, my + H]])
    car[my : my + H, mx : mx + W] = plate
    # perspective: yaw and pitch squeeze one side, roll turns the whole
    yaw, pitch = rng.uniform(-0.28, 0.28), rng.uniform(-0.15, 0.15)
    roll = math.radians(rng.gauss(0, 3))
    dst = corners.copy()
    dst[[0, 3], 1] += np.float32([yaw, -yaw]) * H * 0.5 if yaw > 0 else 0
    dst[[1, 2], 1] += np.float32([-yaw, yaw]) * H * 0.5 if yaw < 0 else 0
    dst[[0, 1], 0] += np.float32([pitch, -pitch]) * W * 0.3
    c = dst.mean(axis=0)
    rot = np.float32([[math.cos(roll), -math.sin(roll)], [math.sin(roll), math.cos(roll)]])
    dst = (dst - c) @ rot.T + c
    m = cv2.getPerspectiveTransform(corners, dst.astype(np.float32))
    out = cv2.warpPerspective(car, m, (car.shape[1], car.shape[0]), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
    return out, dst


def frame_crop(img: np.ndarray, corners: np.ndarray, rng: random.Random) -> np.ndarray:
    """Cut the crop the reader would read: a detector-like box padded as the reader pads it, or
    (a third of the time) the plate alone filling the frame."""
    x0, y0 = corners.min(axis=0)
    x1, y1 = corners.max(axis=0)
    w, h = x1 - x0, y1 - y0
    if rng.random() < 0.33:  # a tight crop: the plate fills the frame
        px, py = w * rng.uniform(-0.02, 0.06), h * rng.uniform(-0.02, 0.1)
    else:  # prepare_rec_data.jitter_box, then Box.pad(0.15, 0.3)
        cx = (x0 + x1) / 2 + rng.uniform(-0.08, 0.08) * w
        cy = (y0 + y1) / 2 + rng.uniform(-0.12, 0.12) * h
        w, h = w * rng.uniform(0.9, 1.4), h * rng.uniform(0.8, 1.5)
        x0, y0 = cx - w / 2, cy - h / 2
        px, py = 0.15 * w, 0.3 * h
    H, W = img.shape[:2]
    a, b = max(0, int(x0 - px)), max(0, int(y0 - py))
    c, d = min(W, int(x0 + w + px)), min(H, int(y0 + h + py))
    return img[b:d, a:c]


def camera(crop: np.ndarray, plate_px: float, rng: random.Random) -> np.ndarray:
    """Resample to the plate's size in the frame, then the sensor: light, blur, noise, JPEG."""
    h, w = crop.shape[:2]
    f = min(1.0, plate_px / w)
    if f < 1.0:
        crop = cv2.resize(crop, (max(8, round(w * f)), max(4, round(h * f))), interpolation=cv2.INTER_AREA)
    x = crop.astype(np.float32)
    light = rng.random()
    if light < 0.18:  # night: a dim plate, grey levels ~30-60, often noisy
        x = x * rng.uniform(0.1, 0.3) + rng.uniform(0, 20)
    elif light < 0.28:  # over-exposed: washed-out characters
        x = 255 - (255 - x) * rng.uniform(0.25, 0.55)
    elif light < 0.7:
        x = (x - 128) * rng.uniform(0.6, 1.3) + 128 + rng.uniform(-40, 40)
    if rng.random() < 0.3:  # uneven light: a headlight or a shadow across the plate
        ramp = np.linspace(rng.uniform(0.5, 1.2), rng.uniform(0.5, 1.2), x.shape[1])[None, :, None]
        x = x * ramp
    x = np.clip(x, 0, 255)
    if rng.random() < 0.3:
        k = rng.choice([3, 3, 5])
        x = cv2.GaussianBlur(x, (k, k), 0)
    elif rng.random() < 0.15:
        k = rng.choice([3, 5, 7])
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0 / k
        x = cv2.filter2D(x, -1, kernel)
    if rng.random() < 0.5:
        x = x + np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(2, 14), x.shape)
    img = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(20, 90)])
        if ok:
            img = cv2.imdecode(enc, cv2.IMREAD_COLOR)
    return img


SHARES = {"us": 0.5, "eu": 0.3, "br": 0.2}


def render(rng: random.Random, kind: str | None = None, stacked: float = STACKED,
           two_row: float = 0.0) -> Sample:
    """`stacked`: the share of US plates drawn with stacked letters (`STACKED`); `two_row`: the
    share of plates printed over two rows (`two_row_plate`), no draw at 0."""
    kind = kind or rng.choices(list(SHARES), list(SHARES.values()))[0]
    if two_row > 0 and rng.random() < two_row:
        pil, label = two_row_plate(rng, kind)
    else:
        pil, label = us_plate(rng, stacked) if kind == "us" else {"eu": eu_plate, "br": br_plate}[kind](rng)
    plate = cv2.cvtColor(np.asarray(pil), cv2.COLOR_RGB2BGR)
    if rng.random() < (0.3 if kind == "us" else 0.1):
        plate = holder(plate, rng)
    # plate width in the camera's frame: log-uniform 40-400 px, a third of them 46-112 px
    px = math.exp(rng.uniform(math.log(46), math.log(112))) if rng.random() < 0.35 else \
        math.exp(rng.uniform(math.log(40), math.log(400)))
    # the scene is drawn at twice the camera's size at most: as sharp, a fraction of the time
    work = min(1.0, max(2 * px, 160) / plate.shape[1])
    if work < 1.0:
        plate = cv2.resize(plate, None, fx=work, fy=work, interpolation=cv2.INTER_AREA)
    img, corners = scene(plate, rng)
    crop = frame_crop(img, corners, rng)
    plate_w = float(corners[:, 0].max() - corners[:, 0].min())
    return Sample(camera(crop, px * crop.shape[1] / max(1.0, plate_w), rng), label, kind)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--show", type=int, default=24, help="samples on the contact sheet")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--two-row", type=float, default=0.0, metavar="SHARE",
                    help="share of plates printed over two rows")
    ap.add_argument("--out", type=Path, required=True, help="PNG contact sheet to write")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tiles = []
    for _ in range(args.show):
        s = render(rng, two_row=args.two_row)
        tile = cv2.resize(s.image, (320, 120), interpolation=cv2.INTER_LINEAR)
        cv2.putText(tile, s.label, (4, 114), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    while len(tiles) % 4:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i : i + 4]) for i in range(0, len(tiles), 4)]
    cv2.imwrite(str(args.out), np.vstack(rows))


if __name__ == "__main__":
    main()
