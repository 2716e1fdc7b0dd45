"""Canonical keys for field values, by type: two answers that mean the same thing get the same key.

A field's type comes from its JSON Schema (``x-llmbus-match``, then ``format``, ``enum``, ``type``),
else from its name and values (``infer_kind``). ``key(kind, value)`` is the canonical key (a str)
or None for an empty value; a value that does not parse as its type keys as ``exact`` text, so it
can only agree with the same text. Keys are compared exactly; only ``person`` and ``organization``
are also compared fuzzily (``similar``), and then only token by token, never across a token that
one name has and the other has not (``Acme`` ≠ ``Acme Capital``, ``Daniel`` ≠ ``Danielle``).

    person        honorifics, suffixes, "Last, First", initials (kept as a letter + "."), hyphens,
                  case, diacritics; Hangul romanised (Revised Romanisation) and Korean surnames
                  folded to one spelling (Kim/Gim, Lee/Yi/Rhee, Park/Bak, Jung/Jeong, Choi/Choe…);
                  tokens sorted, so word order does not matter
    organization  legal forms in many languages removed (Inc., GmbH, S.A., Co., Ltd., 주식회사, (주)…),
                  "&" → "and", punctuation, spacing; Hangul romanised
    money         "<CUR> <amount>" with the currency from a symbol, code or word ("?" when absent,
                  which never matches a present one); k/M/bn, 천/만/억/조; 1.200,00 and 1,200.00
    date          ISO yyyy-mm-dd from ISO, month names (en/de/fr/es), ordinals, weekdays, dotted,
                  slashed, 2026년 11월 3일 / 2026年11月3日; a/b/yyyy day-first only when unambiguous
                  (``day_first`` decides otherwise); date-time keeps hh:mm
    email         the address only (mailto:, <>, display names), lower case
    title         abbreviations expanded (VP, SVP, Sr., Mgr, Dir…), C-suite titles folded to their
                  acronym, a few Korean titles, word order ignored (a sorted set of words)
    number        the value (``number_key``); label: case-folded; text and exact: NFKC, case, spaces
"""

from __future__ import annotations

import math
import re
import unicodedata
from functools import lru_cache
from typing import Any

from rapidfuzz.distance import JaroWinkler

KINDS = ("person", "organization", "title", "money", "date", "email", "number", "label", "text", "exact")

# --- the kind of a field -----------------------------------------------------------------------------


def kind_of(schema: dict[str, Any] | None) -> str:
    """A property's kind from its JSON Schema."""
    if not schema:
        return "exact"
    named = schema.get("x-llmbus-match")
    if named in KINDS:
        return named
    fmt = schema.get("format")
    if fmt in ("date", "date-time"):
        return "date"
    if fmt in ("email", "idn-email"):
        return "email"
    if fmt in ("uri", "iri", "uri-reference"):
        return "exact"
    if "enum" in schema or "const" in schema:
        return "label"
    t = schema.get("type")
    types = t if isinstance(t, list) else [t]
    if "number" in types or "integer" in types:
        return "number"
    if "boolean" in types:
        return "label"
    return "exact"


def kinds_of(schema: dict[str, Any] | None) -> dict[str, str]:
    """Each top-level property's kind (an empty dict for a schema without properties)."""
    props = (schema or {}).get("properties") or {}
    return {name: kind_of(sub if isinstance(sub, dict) else None) for name, sub in props.items()}


# words of a field's name -> its kind (a word matches a hint it equals or starts with)
_NAME_HINTS: dict[str, tuple[str, ...]] = {
    "email": ("email", "mail", "e-mail"),
    "exact": ("phone", "tel", "telephone", "mobile", "fax", "id", "number", "no", "num", "ref", "reference", "code",
              "iban", "sku", "url", "website", "link", "zip", "postal", "postcode", "po", "invoice_no"),
    "date": ("date", "deadline", "due", "day", "when", "time", "timestamp", "expiry", "expiration", "expires",
             "birthday", "dob", "start", "end", "on", "at", "delivery_date"),
    "money": ("amount", "price", "cost", "total", "budget", "fee", "revenue", "salary", "payment", "sum", "money",
              "spend", "quote", "value", "balance", "charge", "subtotal", "tax", "discount", "deposit"),
    "organization": ("company", "organization", "organisation", "org", "vendor", "supplier", "customer", "client",
                     "employer", "firm", "business", "bank", "partner", "brand", "agency", "institution", "corp",
                     "corporation", "buyer", "seller", "merchant", "manufacturer", "provider", "carrier", "issuer"),
    "title": ("title", "role", "position", "job", "designation", "occupation"),
    "person": ("name", "person", "contact", "sender", "recipient", "signer", "signatory", "author", "manager",
               "owner", "assignee", "attendee", "representative", "rep", "from", "cc", "to", "who", "requester",
               "approver", "participant", "speaker", "lead", "employee", "individual"),
    "number": ("count", "quantity", "qty", "percent", "percentage", "rate", "units", "headcount", "score", "age",
               "size", "weight", "volume", "duration"),
    "label": ("status", "type", "category", "priority", "currency", "language", "lang", "country", "sentiment",
              "intent", "flag", "is", "has", "stage", "urgency", "tone", "kind", "level", "tier"),
    "text": ("summary", "description", "notes", "note", "comment", "body", "subject", "message", "reason",
             "address", "location", "venue", "details", "request", "action", "topic", "purpose", "agenda"),
}
_HINT_OF = {h: kind for kind, hints in _NAME_HINTS.items() for h in hints}
_EMAIL_RE = re.compile(r"[\w.%+'-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)


def _name_words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w]


def kind_from_name(name: str) -> str | None:
    """The kind a field's name says: the last word with a hint decides ("payment_date" is a date,
    "due_amount" money), except that "name" gives way to an organization word before it."""
    words = _name_words(name)
    found: list[str | None] = []
    for w in words:
        kind = _HINT_OF.get(w)
        if kind is None and len(w) > 3:
            kind = next((k for h, k in _HINT_OF.items() if len(h) > 3 and w.startswith(h)), None)
        found.append(kind)
    for i in range(len(words) - 1, -1, -1):
        kind = found[i]
        if kind is None:
            continue
        if kind == "person" and words[i] == "name" and any(k in ("organization", "title") for k in found[:i]):
            return next(k for k in reversed(found[:i]) if k in ("organization", "title"))
        return kind
    return None


def infer_kind(name: str, values: list[str]) -> str:
    """A field's kind from its name and the values seen for it (no schema)."""
    by_values = _kind_from_values(values)
    if by_values == "email":
        return "email"
    by_name = kind_from_name(name)
    if by_name is None:
        return by_values or "exact"
    if by_name in ("exact", "number", "label") and by_values in ("money", "date"):
        return by_values
    if by_name == "text" and by_values in ("money", "date"):
        return by_values
    return by_name


def _kind_from_values(values: list[str]) -> str | None:
    vals = [v for v in values if isinstance(v, str) and v.strip()]
    if not vals:
        return None
    def share(pred) -> float:
        return sum(1 for v in vals if pred(v)) / len(vals)
    if share(lambda v: _EMAIL_RE.search(v) is not None) >= 0.6:
        return "email"
    if share(lambda v: _CUR_RE.search(v) is not None and _NUM_RE.search(v) is not None) >= 0.6:
        return "money"
    if share(lambda v: parse_date(v) is not None) >= 0.6:
        return "date"
    if share(lambda v: _number(v) is not None) >= 0.8:
        return "number"
    if sum(len(v.split()) for v in vals) / len(vals) > 8:
        return "text"
    return None


# --- shared text normalisation -----------------------------------------------------------------------


def fold(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    out = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFKC", out.replace("ß", "ss").replace("ø", "o").replace("æ", "ae")
                                 .replace("đ", "d").replace("ł", "l"))


# Hangul syllables, Revised Romanisation (without the sound changes between syllables)
_L = ["g", "kk", "n", "d", "tt", "r", "m", "b", "pp", "s", "ss", "", "j", "jj", "ch", "k", "t", "p", "h"]
_V = ["a", "ae", "ya", "yae", "eo", "e", "yeo", "ye", "o", "wa", "wae", "oe", "yo", "u", "wo", "we", "wi", "yu",
      "eu", "ui", "i"]
_T = ["", "k", "k", "k", "n", "n", "n", "t", "l", "k", "m", "l", "l", "l", "p", "l", "m", "p", "p", "t", "t", "ng",
      "t", "t", "k", "t", "p", "t"]


def romanise_hangul(text: str) -> str:
    out = []
    for c in text:
        code = ord(c) - 0xAC00
        if 0 <= code < 11172:
            lead, rest = divmod(code, 588)
            vowel, tail = divmod(rest, 28)
            out.append(_L[lead] + _V[vowel] + _T[tail])
        else:
            out.append(c)
    return "".join(out)


def has_hangul(text: str) -> bool:
    return any(0xAC00 <= ord(c) < 0xAC00 + 11172 for c in text)


# --- person ------------------------------------------------------------------------------------------

_HONORIFICS = {
    "mr", "mrs", "ms", "miss", "mx", "dr", "prof", "professor", "sir", "dame", "madam", "madame", "mme", "mlle",
    "m", "herr", "frau", "sr", "sra", "srta", "don", "dona", "rev", "hon", "lord", "lady", "capt", "col", "gen",
    "eng", "ing", "mag", "mister", "doctor",
}
_SUFFIXES = {"jr", "jnr", "sr", "snr", "ii", "iii", "iv", "phd", "md", "esq", "mba", "cpa", "pe", "dds", "jd"}
_KO_TWO_SYLLABLE = {"남궁", "황보", "제갈", "선우", "독고", "서문", "사공", "동방"}

# Korean surnames: every common romanisation -> one spelling
_SURNAMES: dict[str, str] = {}
for _canon, _variants in {
    "kim": "gim kym kimm", "lee": "yi i rhee ri rhie lie ye", "park": "bak pak bahk pack", "jung": "jeong chung "
    "cheong joung jeung", "choi": "choe chey choy chwe", "kang": "gang kahng", "cho": "jo joe", "yoon": "yun yune "
    "youn", "jang": "chang", "lim": "im rim yim", "han": "hahn", "oh": "o", "seo": "suh so", "shin": "sin shinn",
    "kwon": "gwon kweon", "hwang": "whang", "ahn": "an", "song": "", "ryu": "yoo yu ryoo you", "hong": "",
    "jeon": "jun chun jeun chon", "ko": "go koh", "moon": "mun", "yang": "ryang", "son": "sohn", "bae": "pae bai",
    "baek": "paek paik baik back", "heo": "hur huh her", "nam": "", "noh": "roh no ro", "ha": "", "kwak": "gwak",
    "sung": "seong", "cha": "", "joo": "ju chu", "woo": "u wu", "koo": "gu ku goo", "min": "", "jin": "chin",
    "na": "ra", "yeo": "yuh", "ji": "chi", "eom": "um uhm", "chae": "", "won": "", "cheon": "", "bang": "",
    "gong": "kong", "hyun": "hyeon", "byun": "byeon pyun", "yeom": "", "seok": "suk", "sun": "seon", "sim": "shim",
    "no": "",
}.items():
    for _v in [_canon, *_variants.split()]:
        _SURNAMES.setdefault(_v, _canon)
_SURNAMES["no"] = "noh"

_PUNCT_RE = re.compile(r"[^\w\s.'-]", re.UNICODE)


def _korean_given(token: str) -> str:
    """Fold the romanisation variants of a Korean given name (Jihoon/Jihun, Seo-yeon/Seoyeon…)."""
    t = re.sub(r"(?<=[aeiou])h(?![aeiou])", "", token.replace("-", "").replace("'", ""))
    for a, b in (("oo", "u"), ("eo", "u"), ("ee", "i"), ("ou", "u"), ("wo", "u"), ("ae", "e"), ("ch", "j"),
                 ("k", "g"), ("t", "d"), ("p", "b"), ("r", "l"), ("sh", "s"), ("y", "")):
        t = t.replace(a, b)
    return t


_KO_SYLLABLES = re.compile(r"^(?:(?:kk|tt|pp|ss|jj|ch|sh|[bcdghjklmnprstwy])?(?:yae|wae|yeo|ae|ya|eo|ye|wa|oe|yo|wo|we|wi|"
                           r"yu|eu|ui|oo|ee|ou|uh|a|e|i|o|u)(?:ng|n|m|l|k|p|t|r|b|g|d|h)?)+$")
_KO_TITLE_SUFFIXES = ("대표이사", "대표", "사장", "부사장", "회장", "전무", "상무", "이사", "본부장", "부장", "차장",
                      "과장", "대리", "주임", "사원", "팀장", "실장", "매니저", "교수", "박사", "선생", "고객")
_SURNAME_RANK = {name: i for i, name in enumerate(dict.fromkeys(_SURNAMES.values()))}


def _strip_korean_suffixes(text: str) -> str:
    changed = True
    while changed:
        changed = False
        for h in sorted(("님", "씨", "군", "양", *_KO_TITLE_SUFFIXES), key=len, reverse=True):
            if text.endswith(h) and len(text) > len(h):
                text, changed = text[: -len(h)].rstrip(), True
    return text


def _korean_name(text: str) -> tuple[str, ...]:
    parts = text.split()
    if len(parts) == 1:
        word = parts[0]
        cut = 2 if word[:2] in _KO_TWO_SYLLABLE and len(word) >= 3 else 1
        parts = [word[:cut], word[cut:]]
    else:
        parts = [parts[0], "".join(parts[1:])]
    surname = romanise_hangul(parts[0])
    given = romanise_hangul(parts[1])
    tokens = [_SURNAMES.get(surname, surname)] + ([_korean_given(given)] if given else [])
    return tuple(sorted(tokens))


@lru_cache(maxsize=65536)
def person_tokens(value: str) -> tuple[str, ...]:
    """A person's name as sorted tokens ("j." for an initial)."""
    text = unicodedata.normalize("NFKC", value).strip()
    text = re.sub(r"<[^>]*>|\([^)]*@[^)]*\)|\S+@\S+", " ", text).strip()  # an address next to the name
    if has_hangul(text):
        text = _strip_korean_suffixes(text)
        if has_hangul(text):
            return _korean_name(text)
    text = strip_accents(text).casefold()
    if "," in text:  # "Last, First" (but not "First Last, Jr.")
        last, _, first = text.partition(",")
        if first.strip() and first.strip().strip(".") not in _SUFFIXES:
            text = f"{first} {last}"
        else:
            text = last
    text = _PUNCT_RE.sub(" ", text)
    raw = [t for t in text.split() if t.strip(".'-")]
    tokens: list[str] = []
    for i, t in enumerate(raw):
        bare = t.strip(".'-")
        if bare in _HONORIFICS and i < len(raw) - 1 and all(r.strip(".'-") in _HONORIFICS for r in raw[:i]):
            continue
        if bare in _SUFFIXES and i > 0:
            continue
        if len(bare) == 1 or (t.endswith(".") and len(bare) <= 2 and bare.isalpha()):
            tokens.append(bare[0] + ".")
            continue
        if "-" in bare and all(len(p) <= 5 for p in bare.split("-")):  # Seo-yeon; Jean-Luc, Smith-Jones stay
            bare = bare.replace("-", "")
        tokens.append(bare.replace("'", ""))
    full = [t for t in tokens if not t.endswith(".")]
    ends = [i for i in (0, len(tokens) - 1) if tokens[i] in _SURNAMES]
    if len(tokens) >= 2 and ends and len(full) == len(tokens):
        s = min(ends, key=lambda i: _SURNAME_RANK[_SURNAMES[tokens[i]]])
    if len(tokens) >= 2 and ends and len(full) == len(tokens) and all(
            _KO_SYLLABLES.match(t) for i, t in enumerate(tokens) if i != s):  # a romanised Korean name
        given = "".join(t for i, t in enumerate(tokens) if i != s)
        tokens = [_SURNAMES[tokens[s]], _korean_given(given)]
    return tuple(sorted(tokens))


def person_key(value: str) -> str | None:
    tokens = person_tokens(value)
    return " ".join(tokens) if tokens else None


# --- organization ------------------------------------------------------------------------------------

_LEGAL_FORMS = [
    "incorporated", "inc", "corporation", "corp", "company", "co", "limited", "ltd", "llc", "l l c", "llp", "lp",
    "plc", "gmbh", "mbh", "ag", "kg", "kgaa", "ug", "se", "sa", "s a", "sas", "s a s", "sarl", "s a r l", "srl",
    "s r l", "spa", "s p a", "sl", "s l", "bv", "b v", "nv", "n v", "oy", "oyj", "ab", "as", "a s", "asa", "aps",
    "kk", "k k", "pte", "pty", "pvt", "private", "holdings", "group", "sdn bhd", "bhd", "tbk", "lda", "ltda",
    "sc", "cv", "s de rl", "de cv", "sa de cv", "ohg", "e v", "ev",
]
_LEGAL_RE = re.compile(r"(?:\b(?:" + "|".join(sorted((re.escape(f) for f in _LEGAL_FORMS), key=len, reverse=True))
                       + r")\b\s*)+$")
_KO_LEGAL = ("주식회사", "(주)", "㈜", "유한회사", "(유)", "유한책임회사", "합자회사", "재단법인", "사단법인",
             "株式会社", "有限会社", "有限公司", "股份有限公司", "(株)", "㈱")


@lru_cache(maxsize=65536)
def organization_tokens(value: str) -> tuple[str, ...]:
    text = unicodedata.normalize("NFKC", value).strip()
    for form in _KO_LEGAL:
        text = text.replace(unicodedata.normalize("NFKC", form), " ")
    text = romanise_hangul(text) if has_hangul(text) else text
    text = strip_accents(text).casefold().replace("&", " and ").replace("+", " and ")
    text = re.sub(r"^the\s+", "", text)
    text = re.sub(r"[.,'’`]", "", text)  # "S.A." -> "sa", "Acme, Inc." -> "acme inc"
    text = re.sub(r"[^\w\s]", " ", text)
    text = " ".join(text.split())
    stripped = _LEGAL_RE.sub("", text).strip()
    text = stripped or text
    return tuple(text.split())


def organization_key(value: str) -> str | None:
    tokens = organization_tokens(value)
    return "".join(tokens) if tokens else None  # spacing does not matter: "Data Soft" = "DataSoft"


# --- similarity of names (the only fuzzy comparison) -------------------------------------------------

NAME_THRESHOLD = 0.96


def _token_close(a: str, b: str, threshold: float) -> bool:
    """Two name tokens that are the same word: equal, an initial of the other, or a same-length
    misspelling (a transposition or one substituted letter in a long word). A token that is longer
    or shorter than the other is another name (Johnson/Johnston, Daniel/Danielle)."""
    if a == b:
        return True
    if a.endswith(".") or b.endswith("."):
        return a[0] == b[0] and (a.endswith(".") or len(a) > 2) and (b.endswith(".") or len(b) > 2)
    if len(a) != len(b) or len(a) < 5:
        return False
    diff = sum(1 for x, y in zip(a, b) if x != y)
    if diff == 2 and sorted(a) == sorted(b):  # a transposition
        return JaroWinkler.similarity(a, b) >= threshold - 0.01
    return diff == 1 and len(a) >= 8 and JaroWinkler.similarity(a, b) >= threshold


def similar(kind: str, a: str, b: str, threshold: float = NAME_THRESHOLD) -> bool:
    """Whether two values of a person or organization field name the same one (complete linkage
    calls this for every pair of two clusters)."""
    if kind == "person":
        ta, tb = person_tokens(a), person_tokens(b)
    elif kind == "organization":
        ta, tb = organization_tokens(a), organization_tokens(b)
    else:
        return False
    if not ta or not tb or len(ta) != len(tb):
        return False
    full_a = [t for t in ta if not t.endswith(".")]
    full_b = [t for t in tb if not t.endswith(".")]
    if not full_a or not full_b:
        return False
    # align tokens: each of a's to a distinct close token of b (names are short: greedy is enough)
    rest = list(tb)
    for t in sorted(ta, key=lambda x: x.endswith(".")):
        match = next((u for u in rest if u == t), None) or next((u for u in rest if _token_close(t, u, threshold)), None)
        if match is None:
            return False
        rest.remove(match)
    return True


# --- money -------------------------------------------------------------------------------------------

_CURRENCY_WORDS = {
    "us$": "USD", "usd": "USD", "u.s. dollars": "USD", "us dollars": "USD", "dollars": "USD", "dollar": "USD",
    "달러": "USD", "불": "USD", "$": "USD", "€": "EUR", "eur": "EUR", "euro": "EUR", "euros": "EUR", "유로": "EUR",
    "£": "GBP", "gbp": "GBP", "pounds": "GBP", "pound": "GBP", "sterling": "GBP", "파운드": "GBP",
    "¥": "JPY", "jpy": "JPY", "yen": "JPY", "円": "JPY", "엔": "JPY", "cny": "CNY", "rmb": "CNY", "yuan": "CNY",
    "元": "CNY", "위안": "CNY", "₩": "KRW", "krw": "KRW", "won": "KRW", "원": "KRW", "₹": "INR", "inr": "INR",
    "rupees": "INR", "chf": "CHF", "cad": "CAD", "c$": "CAD", "ca$": "CAD", "aud": "AUD", "a$": "AUD", "au$": "AUD",
    "sgd": "SGD", "s$": "SGD", "hkd": "HKD", "hk$": "HKD", "nzd": "NZD", "sek": "SEK", "nok": "NOK", "dkk": "DKK",
    "pln": "PLN", "zł": "PLN", "brl": "BRL", "r$": "BRL", "mxn": "MXN", "zar": "ZAR", "twd": "TWD", "nt$": "TWD",
    "thb": "THB", "฿": "THB", "vnd": "VND", "₫": "VND", "rub": "RUB", "₽": "RUB", "try": "TRY", "₺": "TRY",
    "aed": "AED", "sar": "SAR", "ils": "ILS", "₪": "ILS", "php": "PHP", "₱": "PHP", "idr": "IDR", "myr": "MYR",
    "czk": "CZK", "huf": "HUF", "francs": "CHF", "fr.": "CHF",
}
_CUR_RE = re.compile(
    "|".join(sorted((r"(?<![a-z])" + re.escape(w) + r"(?![a-z])" if w[0].isalpha() and w.isascii()
                     else re.escape(w) for w in _CURRENCY_WORDS), key=len, reverse=True)), re.IGNORECASE)
_NUM_RE = re.compile(r"\d[\d.,'\s\u202f\u00a0]*\d|\d")
_SCALES = {
    "k": 1e3, "thousand": 1e3, "m": 1e6, "mm": 1e6, "mn": 1e6, "mio": 1e6, "mil": 1e6, "million": 1e6,
    "millions": 1e6, "b": 1e9, "bn": 1e9, "billion": 1e9, "billions": 1e9, "mrd": 1e9, "milliard": 1e9,
    "milliarden": 1e9, "tn": 1e12, "trillion": 1e12, "lakh": 1e5, "lakhs": 1e5, "crore": 1e7, "crores": 1e7,
}
_KO_UNITS = {"조": 1e12, "억": 1e8, "만": 1e4, "천": 1e3, "백": 1e2, "십": 10, "千": 1e3, "万": 1e4, "億": 1e8,
             "兆": 1e12}


def parse_amount(text: str, decimal_comma: bool | None = None) -> float | None:
    """A number as written in text: 1,200.50 / 1.200,50 / 1 200 / 1'200 / 12.5 (no scale words)."""
    s = re.sub(r"[\s\u202f\u00a0']", "", text)
    if not s or not s[0].isdigit():
        return None
    dots, commas = s.count("."), s.count(",")
    if dots and commas:
        dec = "," if s.rfind(",") > s.rfind(".") else "."
    elif dots + commas == 0:
        dec = None
    else:
        sep = "." if dots else ","
        n = dots or commas
        tail = s.rsplit(sep, 1)[1]
        if n > 1:
            dec = None  # 1.200.000: thousands
        elif len(tail) == 3 and s.split(sep)[0] != "0":
            dec = None if decimal_comma is None or (decimal_comma and sep == ".") or (not decimal_comma and sep == ",") else sep
        else:
            dec = sep
    if dec is None:
        s = s.replace(".", "").replace(",", "")
    else:
        thou = "," if dec == "." else "."
        s = s.replace(thou, "").replace(dec, ".")
    try:
        return float(s)
    except ValueError:
        return None


def _korean_amount(text: str) -> float | None:
    """1억 2천만 / 3,500만 / 12억5000만 (the number before each unit; units of 만 and above group)."""
    if not any(u in text for u in _KO_UNITS):
        return None
    total, group = 0.0, 0.0
    found = False
    for num, unit in re.findall(r"(\d[\d,.]*)?\s*([조억만천백십千万億兆])", text):
        value = parse_amount(num) if num else 1.0
        if value is None:
            return None
        scale = _KO_UNITS[unit]
        found = True
        if scale >= 1e4:
            total += (group + value if num else (group or 1.0)) * scale
            group = 0.0
        else:
            group += value * scale
    rest = re.sub(r".*[조억만천백십千万億兆]", "", text)
    tail = parse_amount(re.sub(r"[^\d.,]", "", rest)) if re.search(r"\d", rest) else None
    total += group + (tail or 0.0)
    return total if found else None


@lru_cache(maxsize=65536)
def money_parts(value: str) -> tuple[str | None, float] | None:
    text = unicodedata.normalize("NFKC", value).strip()
    low = text.lower()
    currency = None
    m = _CUR_RE.search(low)
    if m:
        currency = _CURRENCY_WORDS.get(m.group(0).lower())
    negative = bool(re.search(r"^\s*[-−(]|[-−]\s*\d", text)) and not re.search(r"\d\s*[-−]\s*\d", text)
    amount = _korean_amount(low) if has_hangul(text) or any(u in text for u in "千万億兆") else None
    if amount is None:
        nm = _NUM_RE.search(text)
        if nm is None:
            return None
        number = nm.group(0).strip()
        decimal_comma = True if currency == "EUR" and re.search(r",\d{2}$", number) else None
        amount = parse_amount(number, decimal_comma)
        if amount is None:
            return None
        after = low[nm.end():].strip().lstrip(".")
        word = re.match(r"([a-z]+)\b", after)
        if word and word.group(1) in _SCALES:
            amount *= _SCALES[word.group(1)]
    if negative:
        amount = -amount
    return currency, amount


def money_key(value: str) -> str | None:
    parts = money_parts(value)
    if parts is None:
        return None
    currency, amount = parts
    return f"{currency or '?'} {amount:.2f}"


# --- dates -------------------------------------------------------------------------------------------

_MONTHS: dict[str, int] = {}
for _i, _names in enumerate([
    "january jan januar janvier enero ene janeiro gennaio januari", "february feb februar fevrier février febrero "
    "fevereiro febbraio februari", "march mar marz märz maerz mars marzo março maart", "april apr avril abril aprile",
    "may mai mayo maio maggio mei", "june jun juni juin junio junho giugno", "july jul juli juillet julio julho luglio",
    "august aug aout août agosto augustus", "september sep sept septembre septiembre setembro settembre",
    "october oct oktober octobre octubre outubro ottobre okt", "november nov novembre noviembre novembro",
    "december dec dez dezember decembre décembre diciembre dezembro dicembre desember",
], start=1):
    for _n in _names.split():
        _MONTHS[strip_accents(_n)] = _i
_MONTH_RE = "|".join(sorted(_MONTHS, key=len, reverse=True))
_WEEKDAYS = re.compile(r"\b(mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun)(day|nesday|rsday|urday)?\b\.?,?|"
                       r"\b(montag|dienstag|mittwoch|donnerstag|freitag|samstag|sonntag|lundi|mardi|mercredi|jeudi|"
                       r"vendredi|samedi|dimanche|lunes|martes|miercoles|jueves|viernes|sabado|domingo)\b,?|"
                       r"\([월화수목금토일]\)|[월화수목금토일]요일|\([月火水木金土日]\)")


def _ymd(y: int, mo: int, d: int) -> tuple[int, int, int] | None:
    if y < 100:
        y += 2000
    if not (1 <= mo <= 12 and 1 <= d <= 31 and 1900 <= y <= 2200):
        return None
    if d > (29 if mo == 2 and (y % 4 == 0 and (y % 100 or y % 400 == 0)) else
            28 if mo == 2 else 30 if mo in (4, 6, 9, 11) else 31):
        return None
    return y, mo, d


@lru_cache(maxsize=65536)
def parse_date(value: str, day_first: bool = False) -> tuple[tuple[int, int, int], str] | None:
    """((y, m, d), "hh:mm" or "") from a date as people and models write it."""
    text = strip_accents(unicodedata.normalize("NFKC", value)).strip().lower()
    text = _WEEKDAYS.sub(" ", text)
    hm = ""
    t = re.search(r"[t\s](\d{1,2}):(\d{2})(?::\d{2}(?:\.\d+)?)?\s*(am|pm)?", text)
    if t:
        h = int(t.group(1)) % 12 + (12 if t.group(3) == "pm" else 0) if t.group(3) else int(t.group(1))
        hm = f"{h:02d}:{t.group(2)}"
        text = text[:t.start()] + " " + text[t.end():]
    text = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", text)
    text = " ".join(text.replace(" of ", " ").split())
    m = re.search(r"(\d{4})\s*[년年]\s*(\d{1,2})\s*[월月]\s*(\d{1,2})\s*[일日]?", text)
    if m:
        r = _ymd(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        return (r, hm) if r else None
    m = re.search(r"\b(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})\b", text)
    if m:
        r = _ymd(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        return (r, hm) if r else None
    m = re.search(rf"\b(\d{{1,2}})\.?\s*(?:de\s+)?({_MONTH_RE})\.?,?\s*(?:de\s+)?(\d{{4}})\b", text)
    if m:
        r = _ymd(int(m.group(3)), _MONTHS[m.group(2)], int(m.group(1)))
        return (r, hm) if r else None
    m = re.search(rf"\b({_MONTH_RE})\.?\s*(\d{{1,2}}),?\s*(\d{{4}})\b", text)
    if m:
        r = _ymd(int(m.group(3)), _MONTHS[m.group(1)], int(m.group(2)))
        return (r, hm) if r else None
    m = re.search(r"\b(\d{1,2})([./-])(\d{1,2})\2(\d{4}|\d{2})\b", text)
    if m:
        a, sep, b, y = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        if a > 12 or sep == ".":  # dotted forms are day-first (Europe), as is a first part above 12
            r = _ymd(y, b, a)
        elif b > 12:
            r = _ymd(y, a, b)
        else:
            r = _ymd(y, b, a) if day_first else _ymd(y, a, b)
        return (r, hm) if r else None
    m = re.search(r"\b(\d{4})(\d{2})(\d{2})\b", text)
    if m:
        r = _ymd(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        return (r, hm) if r else None
    return None


def date_key(value: str, day_first: bool = False, with_time: bool = False) -> str | None:
    parsed = parse_date(value, day_first)
    if parsed is None:
        return None
    (y, mo, d), hm = parsed
    return f"{y:04d}-{mo:02d}-{d:02d}" + (f"T{hm}" if with_time and hm else "")


# --- email -------------------------------------------------------------------------------------------


def email_key(value: str) -> str | None:
    text = unicodedata.normalize("NFKC", value).strip().lower().replace("mailto:", " ")
    m = _EMAIL_RE.search(text)
    return m.group(0).strip(".") if m else None


# --- titles ------------------------------------------------------------------------------------------

_TITLE_WORDS = {
    "vp": "vice president", "v.p.": "vice president", "svp": "senior vice president", "evp": "executive vice "
    "president", "avp": "assistant vice president", "sr": "senior", "sr.": "senior", "snr": "senior", "jr": "junior",
    "mgr": "manager", "mngr": "manager", "dir": "director", "gm": "general manager", "md": "managing director",
    "asst": "assistant", "asst.": "assistant", "assoc": "associate", "exec": "executive", "eng": "engineer",
    "engr": "engineer", "dept": "department", "mktg": "marketing", "mkt": "marketing", "ops": "operations",
    "hr": "human resources", "it": "information technology", "biz": "business", "dev": "development",
    "bd": "business development", "intl": "international", "natl": "national", "acct": "account", "admin":
    "administrator", "coord": "coordinator", "rep": "representative", "spec": "specialist", "tech": "technical",
    "pres": "president", "chmn": "chairman", "chair": "chairman", "chairperson": "chairman", "head": "head",
    "lead": "lead", "leader": "lead", "procurement": "purchasing", "purchasing": "purchasing",
}
_C_SUITE = {
    "chief executive officer": "ceo", "chief financial officer": "cfo", "chief operating officer": "coo",
    "chief technology officer": "cto", "chief technical officer": "cto", "chief marketing officer": "cmo",
    "chief information officer": "cio", "chief product officer": "cpo", "chief revenue officer": "cro",
    "chief people officer": "cpeo", "chief human resources officer": "chro", "chief legal officer": "clo",
    "chief data officer": "cdo", "chief security officer": "cso", "chief information security officer": "ciso",
    "chief commercial officer": "cco", "chief strategy officer": "csto",
}
_KO_TITLES = {
    "대표이사": "ceo", "대표": "ceo", "사장": "president", "부사장": "executive vice president", "회장": "chairman",
    "전무": "executive director", "상무": "managing director", "이사": "director", "본부장": "head division",
    "부장": "general manager", "차장": "deputy general manager", "과장": "manager", "대리": "assistant manager",
    "주임": "associate", "사원": "staff", "팀장": "team lead", "실장": "head office", "매니저": "manager",
    "구매": "purchasing", "영업": "sales", "마케팅": "marketing", "재무": "finance", "인사": "human resources",
    "책임": "senior", "선임": "senior", "수석": "principal", "연구원": "researcher", "엔지니어": "engineer",
}
_TITLE_STOP = {"of", "and", "the", "for", "&", "in", "at", "to", "-", "/", ","}


@lru_cache(maxsize=65536)
def title_key(value: str) -> str | None:
    text = unicodedata.normalize("NFKC", value).strip()
    for ko in sorted(_KO_TITLES, key=len, reverse=True):
        if ko in text:
            text = text.replace(ko, f" {_KO_TITLES[ko]} ")
    text = strip_accents(text).casefold()
    text = re.sub(r"[(),;:/|]", " ", text).replace("&", " and ").replace("-", " ")
    words = [_TITLE_WORDS.get(w, _TITLE_WORDS.get(w.rstrip("."), w.rstrip("."))) for w in text.split()]
    text = " " + " ".join(words) + " "
    for long, short in _C_SUITE.items():
        text = text.replace(f" {long} ", f" {short} ")
    tokens = sorted({w for w in text.split() if w not in _TITLE_STOP})
    return " ".join(tokens) or None


# --- numbers, labels, text ---------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    text = unicodedata.normalize("NFKC", str(value)).strip().rstrip("%")
    if not re.fullmatch(r"[-+]?[\d.,'\s]+", text or "x"):
        return None
    sign = -1.0 if text.startswith("-") else 1.0
    amount = parse_amount(text.lstrip("+-"))
    return None if amount is None else sign * amount


def number_key(value: Any) -> str | None:
    x = _number(value)
    return None if x is None else repr(round(x, 9) + 0.0)


def label_key(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = fold(str(value)).strip(" .")
    return {"yes": "true", "y": "true", "no": "false", "n": "false"}.get(text, text) or None


def exact_key(value: Any) -> str | None:
    if not isinstance(value, str):
        import json

        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    text = fold(value)
    return text or None


# --- the entry point ---------------------------------------------------------------------------------


def key(kind: str, value: Any, *, day_first: bool = False) -> str | None:
    """The canonical key of ``value`` as a ``kind``; None for an empty value (an abstention)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if kind == "number":
        return number_key(value) or "=" + (exact_key(value) or "")
    if kind == "label":
        return label_key(value)
    if not isinstance(value, str):
        return exact_key(value)
    if kind == "person":
        k = person_key(value)
    elif kind == "organization":
        k = organization_key(value)
    elif kind == "money":
        k = money_key(value)
    elif kind == "date":
        k = date_key(value, day_first, with_time=False)
    elif kind == "email":
        k = email_key(value)
    elif kind == "title":
        k = title_key(value)
    else:
        return exact_key(value)
    return k if k is not None else "=" + (exact_key(value) or "")
