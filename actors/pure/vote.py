"""Merging several answers to the same fields: cluster, weigh, vote, abstain. Pure; no I/O.

Per field (``merge_field``):

1. **Canonicalise** each answer by the field's kind (``actors.pure.canonical.key``); a null is that
   voter abstaining on the field.
2. **Cluster**: equal keys first. Then only for person and organization names, complete linkage
   with ``canonical.similar`` (two clusters merge when *every* pair across them is similar), the
   best-supported pair first; numbers within ``tolerance`` (relative) likewise. Nothing else is
   merged, so a look-alike stays its own cluster.
3. **Vote** in log-odds: a voter with accuracy ``p`` (its learned reliability on the field, then
   calibrated by the confidence it stated) adds ``log(p / (1 - p)) + log(alternatives)`` to its
   cluster — the one-coin Dawid–Skene model with ``alternatives`` wrong values it may pick. Repeated
   samples of one provider (self-consistency) are not independent: each adds ``1/sqrt(n)`` of a vote.
   The posterior of cluster ``c`` is ``e^s_c / (sum_k e^s_k + unproposed)``, where ``unproposed``
   counts the values nobody proposed (each weighs ``e^0``): one voter alone with accuracy p gets
   posterior p, as it should.
4. **Decide**: the highest posterior; ties go to the larger cluster, then the larger summed
   reliability, then abstain. Below ``min_confidence`` the field abstains (value None, a reason).
   Free text (kind ``text``) is never voted by string distance: the candidate most similar to the
   others (token-set similarity, weighted by reliability) is picked, with that share as confidence.

Reliability (``Reliability``) is learned without labels from how voters agree: each merged field's
posteriors are soft labels (EM over a window: ``learn`` offline, ``observe`` online with decay);
labelled feedback is the same ``observe`` with certainty. Calibration bins each provider's stated
confidence and learns the accuracy of each bin: a provider that always says 0.9 gains nothing by it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rapidfuzz import fuzz

from actors.pure import canonical

FUZZY_KINDS = frozenset({"person", "organization"})


@dataclass(frozen=True, slots=True)
class Vote:
    voter: str  # the provider (the same one several times: self-consistency samples)
    value: Any
    confidence: float | None = None  # what the provider said, if anything


@dataclass(slots=True)
class Cluster:
    key: str
    members: list[int]  # indices into the votes
    keys: list[str] = field(default_factory=list)  # every distinct key merged into it
    score: float = 0.0
    posterior: float = 0.0
    reliability: float = 0.0


@dataclass(slots=True)
class FieldResult:
    value: Any
    confidence: float  # the winner's posterior (0 when every voter abstained)
    members: list[str]  # the providers whose answers formed the value (distinct, in vote order)
    dissent: list[tuple[str, Any]] = field(default_factory=list)  # (provider, value) outside the winner
    reason: str | None = None  # why the field abstained
    key: str | None = None

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "confidence": round(self.confidence, 4),
                               "support": self.members,
                               "dissent": [{"provider": p, "value": v} for p, v in self.dissent]}
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True, slots=True)
class VoteOptions:
    min_confidence: float = 0.0
    alternatives: float = 4.0  # wrong values a voter may plausibly pick (lures are few, not uniform)
    day_first: bool = False
    name_threshold: float = canonical.NAME_THRESHOLD
    tolerance: float = 0.0  # numbers: relative tolerance (0: equal values only)


# --- reliability and calibration ---------------------------------------------------------------------

BINS = (0.55, 0.65, 0.75, 0.85, 0.92, 0.97)  # upper edges of stated-confidence bins (the last: above)


def _bin(confidence: float | None) -> int:
    if confidence is None:
        return -1
    for i, edge in enumerate(BINS):
        if confidence < edge:
            return i
    return len(BINS)


class Reliability:
    """Each provider's accuracy per field, and per stated-confidence bin, as soft counts."""

    __slots__ = ("prior", "prior_n", "decay", "fields", "bins", "overall")

    def __init__(self, prior: float = 0.7, prior_n: float = 2.0, window: float = 0.0) -> None:
        self.prior = prior
        self.prior_n = prior_n
        self.decay = 1.0 - 1.0 / window if window else 1.0  # online: older asks fade over ~window
        self.fields: dict[tuple[str, str], list[float]] = {}  # (provider, field) -> [correct, n]
        self.bins: dict[tuple[str, int], list[float]] = {}  # (provider, bin) -> [correct, n]
        self.overall: dict[str, list[float]] = {}  # provider -> [correct, n]

    def accuracy(self, provider: str, name: str) -> float:
        c = self.fields.get((provider, name))
        base = self._overall(provider)
        if c is None:
            return base
        return (c[0] + base * self.prior_n) / (c[1] + self.prior_n)

    def _overall(self, provider: str) -> float:
        c = self.overall.get(provider)
        return self.prior if c is None else (c[0] + self.prior * self.prior_n) / (c[1] + self.prior_n)

    def calibrated(self, provider: str, name: str, stated: float | None) -> float:
        """The probability that this provider's answer on this field is right, given what it said."""
        p = self.accuracy(provider, name)
        b = self.bins.get((provider, _bin(stated)))
        if b is not None and b[1] > 0:
            base = self._overall(provider)
            in_bin = (b[0] + base * self.prior_n) / (b[1] + self.prior_n)
            p = p * in_bin / base if base > 0 else p
        return min(0.995, max(0.005, p))

    def stated_worth(self, provider: str, stated: float | None) -> float:
        """What a stated confidence has been worth for this provider (the accuracy of its bin); the
        stated value itself while its bin has no data, the provider's accuracy when it said nothing."""
        if stated is None:
            return self._overall(provider)
        b = self.bins.get((provider, _bin(stated)))
        if b is None or b[1] <= 0:
            return min(1.0, max(0.0, stated))
        return (b[0] + stated * self.prior_n) / (b[1] + self.prior_n)

    def observe(self, provider: str, name: str, stated: float | None, correct: float, weight: float = 1.0) -> None:
        """One answer whose probability of being right is ``correct`` (a posterior, or 0/1 from a label)."""
        d = self.decay
        for table, k in ((self.fields, (provider, name)), (self.bins, (provider, _bin(stated))),
                         (self.overall, provider)):
            c = table.get(k)
            if c is None:
                table[k] = [correct * weight, weight]
            else:
                c[0] = c[0] * d + correct * weight
                c[1] = c[1] * d + weight

    def export(self, provider: str) -> dict[str, Any]:
        """One provider's soft counts as plain JSON data (``load`` reads it back): what the router
        keeps in KV, one key per provider."""
        return {"fields": {n: c for (p, n), c in self.fields.items() if p == provider},
                "bins": {str(b): c for (p, b), c in self.bins.items() if p == provider},
                "overall": self.overall.get(provider)}

    def load(self, provider: str, data: dict[str, Any] | None) -> None:
        """Replace one provider's counts by ``data`` (``export``'s shape; None forgets the provider)."""
        for table in (self.fields, self.bins):
            for k in [k for k in table if k[0] == provider]:
                del table[k]
        self.overall.pop(provider, None)
        if not data:
            return
        for n, c in (data.get("fields") or {}).items():
            self.fields[(provider, n)] = [float(c[0]), float(c[1])]
        for b, c in (data.get("bins") or {}).items():
            self.bins[(provider, int(b))] = [float(c[0]), float(c[1])]
        if data.get("overall"):
            self.overall[provider] = [float(data["overall"][0]), float(data["overall"][1])]

    def providers(self) -> list[str]:
        return sorted(self.overall)

    def table(self) -> dict[str, dict[str, float]]:
        """provider -> field -> accuracy (for status reports)."""
        out: dict[str, dict[str, float]] = {}
        for (provider, name) in self.fields:
            out.setdefault(provider, {})[name] = round(self.accuracy(provider, name), 4)
        return out


def combine(stored: dict[str, Any] | None, delta: dict[str, Any], decay: float = 1.0) -> dict[str, Any]:
    """``stored`` (``Reliability.export`` data) with ``delta``'s counts added, each stored count first
    faded by ``decay`` per unit of weight the delta adds to it (older asks fade as they would
    online). Pure: what a compare-and-set writer computes."""
    stored = stored or {}
    out: dict[str, Any] = {"fields": dict(stored.get("fields") or {}), "bins": dict(stored.get("bins") or {}),
                           "labels": dict(stored.get("labels") or {}), "overall": stored.get("overall")}

    def add(old, new):
        if not new:
            return old
        if not old:
            return [float(new[0]), float(new[1])]
        f = decay ** new[1]
        return [old[0] * f + new[0], old[1] * f + new[1]]

    for part in ("fields", "bins", "labels"):  # labels: the labelled answers alone (right, n), never faded
        for k, c in (delta.get(part) or {}).items():
            out[part][k] = add(out[part].get(k), c) if part != "labels" else [
                out[part].get(k, [0.0, 0.0])[0] + c[0], out[part].get(k, [0.0, 0.0])[1] + c[1]]
    out["overall"] = add(out["overall"], delta.get("overall"))
    return out


# --- clustering --------------------------------------------------------------------------------------


def cluster(kind: str, votes: Sequence[Vote], options: VoteOptions = VoteOptions()) -> list[Cluster]:
    """The clusters of the votes that did not abstain (see the module docstring)."""
    groups: dict[str, Cluster] = {}
    first_value: dict[str, Any] = {}
    for i, v in enumerate(votes):
        k = canonical.key(kind, v.value, day_first=options.day_first)
        if k is None:
            continue
        c = groups.get(k)
        if c is None:
            groups[k] = Cluster(k, [i], [k])
            first_value[k] = v.value
        else:
            c.members.append(i)
    clusters = list(groups.values())
    if len(clusters) < 2:
        return clusters
    if kind in FUZZY_KINDS:
        def close(a: str, b: str) -> bool:
            va, vb = first_value[a], first_value[b]
            return isinstance(va, str) and isinstance(vb, str) and canonical.similar(kind, va, vb,
                                                                                     options.name_threshold)
        clusters = _complete_linkage(clusters, close)
    elif kind == "number" and options.tolerance > 0:
        def close(a: str, b: str) -> bool:
            try:
                x, y = float(a), float(b)
            except ValueError:
                return False
            return abs(x - y) <= options.tolerance * max(abs(x), abs(y))
        clusters = _complete_linkage(clusters, close)
    return clusters


def _complete_linkage(clusters: list[Cluster], close) -> list[Cluster]:
    while True:
        best: tuple[int, int, int] | None = None
        for i in range(len(clusters)):
            for j in range(i + 1, len(clusters)):
                a, b = clusters[i], clusters[j]
                if all(close(x, y) for x in a.keys for y in b.keys):
                    size = len(a.members) + len(b.members)
                    if best is None or size > best[0]:
                        best = (size, i, j)
        if best is None:
            return clusters
        _, i, j = best
        a, b = clusters[i], clusters.pop(j)
        keep = max((a, b), key=lambda c: (len(c.members), "." not in c.key, len(c.key)))
        clusters[i] = Cluster(keep.key, a.members + b.members, a.keys + b.keys)


# --- voting ------------------------------------------------------------------------------------------


def vote_shares(votes: Sequence[Vote]) -> list[float]:
    """Each vote's weight: 1/sqrt(n) for n samples of the same provider (they are not independent,
    but their agreement still says something), 1 for a provider asked once."""
    n: dict[str, int] = {}
    for v in votes:
        n[v.voter] = n.get(v.voter, 0) + 1
    return [1.0 / math.sqrt(n[v.voter]) for v in votes]


def score(clusters: list[Cluster], votes: Sequence[Vote], name: str, reliability: Reliability,
          options: VoteOptions = VoteOptions(), ps: Sequence[float] | None = None) -> None:
    """Set each cluster's score, reliability and posterior (in place). ``ps``: each vote's
    calibrated accuracy, when the caller has it already."""
    shares = vote_shares(votes)
    log_alt = math.log(max(options.alternatives, 1.0))
    for c in clusters:
        s = r = 0.0
        for i in c.members:
            if ps is not None:
                p = ps[i]
            else:
                v = votes[i]
                p = reliability.calibrated(v.voter, name, v.confidence)
            s += shares[i] * (math.log(p / (1.0 - p)) + log_alt)
            r += shares[i] * p
        c.score, c.reliability = s, r
    top = max(c.score for c in clusters)
    unproposed = max(options.alternatives + 1.0 - len(clusters), 0.0)
    weights = [math.exp(c.score - top) for c in clusters]
    total = sum(weights) + unproposed * math.exp(-top)
    for c, w in zip(clusters, weights):
        c.posterior = w / total


def _plainness(kind: str, value: Any) -> float:
    """How plainly a surface form is written (higher is plainer): no initials, little punctuation."""
    if not isinstance(value, str):
        return 0.0
    penalty = sum(1 for ch in value if not (ch.isalnum() or ch.isspace()))
    if kind == "person" and any(t.endswith(".") for t in canonical.person_tokens(value)):
        penalty += 10
    return -float(penalty)


def _representative(c: Cluster, votes: Sequence[Vote], ps: Sequence[float], kind: str) -> Any:
    """The value to emit for a cluster: its most common surface form, then the plainest (no
    initials, little punctuation), then the most reliable voter's (``ps``: each vote's accuracy)."""
    if len(c.members) == 1:
        return votes[c.members[0]].value
    counts: dict[Any, list[float]] = {}
    for i in c.members:
        v = votes[i]
        k = v.value if isinstance(v.value, (str, int, float, bool)) else repr(v.value)
        e = counts.get(k)
        if e is None:
            counts[k] = [1.0, ps[i], float(i), 0.0]
        else:
            e[0] += 1
            e[1] = max(e[1], ps[i])
    if len(counts) == 1:
        return votes[c.members[0]].value
    for e in counts.values():
        e[3] = _plainness(kind, votes[int(e[2])].value)
    best = max(counts.items(), key=lambda kv: (kv[1][0], kv[1][3], kv[1][1], -kv[1][2]))
    return votes[int(best[1][2])].value


def _distinct(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def merge_field(name: str, kind: str, votes: Sequence[Vote], reliability: Reliability,
                options: VoteOptions = VoteOptions()) -> tuple[FieldResult, list[Cluster]]:
    """The merged value of one field, and the clusters it was chosen from."""
    if kind == "text":
        return _merge_text(name, votes, reliability, options), []
    clusters = cluster(kind, votes, options)
    if not clusters:
        return FieldResult(None, 0.0, [], reason="every provider abstained (null)"), clusters
    ps = [reliability.calibrated(v.voter, name, v.confidence) if v.value is not None else 0.5 for v in votes]
    score(clusters, votes, name, reliability, options, ps)
    ranked = sorted(clusters, key=lambda c: (c.posterior, len(c.members), c.reliability), reverse=True)
    win = ranked[0]
    in_win = set(win.members)
    dissent = [(votes[i].voter, votes[i].value) for c in ranked[1:] for i in c.members if i not in in_win]
    members = _distinct(votes[i].voter for i in win.members)
    if len(ranked) > 1:
        second = ranked[1]
        if (abs(second.posterior - win.posterior) < 1e-12 and len(second.members) == len(win.members)
                and abs(second.reliability - win.reliability) < 1e-12):
            return FieldResult(None, win.posterior, [], dissent=[(votes[i].voter, votes[i].value) for c in ranked
                                                                 for i in c.members],
                               reason="a tie between equally supported values"), clusters
    if win.posterior < options.min_confidence:
        return FieldResult(None, win.posterior, [], dissent=[(votes[i].voter, votes[i].value) for c in ranked
                                                             for i in c.members],
                           reason=f"confidence {win.posterior:.2f} below min_confidence {options.min_confidence}"), \
            clusters
    value = _representative(win, votes, ps, kind)
    return FieldResult(value, win.posterior, members, dissent, key=win.key), clusters


def _merge_text(name: str, votes: Sequence[Vote], reliability: Reliability, options: VoteOptions) -> FieldResult:
    idx = [i for i, v in enumerate(votes) if v.value is not None and (not isinstance(v.value, str) or v.value.strip())]
    if not idx:
        return FieldResult(None, 0.0, [], reason="every provider abstained (null)")
    texts = {i: canonical.exact_key(votes[i].value) or "" for i in idx}
    weight = {i: reliability.calibrated(votes[i].voter, name, votes[i].confidence) for i in idx}
    total = sum(weight.values())
    best, best_support = idx[0], -1.0
    for i in idx:
        support = sum(weight[j] * (1.0 if texts[i] == texts[j] else fuzz.token_set_ratio(texts[i], texts[j]) / 100.0)
                      for j in idx) / total
        if support > best_support + 1e-12:
            best, best_support = i, support
    same = [i for i in idx if texts[i] == texts[best]]
    dissent = [(votes[i].voter, votes[i].value) for i in idx if texts[i] != texts[best]]
    if best_support < options.min_confidence:
        return FieldResult(None, best_support, [], dissent=[(votes[i].voter, votes[i].value) for i in idx],
                           reason=f"confidence {best_support:.2f} below min_confidence {options.min_confidence}")
    return FieldResult(votes[best].value, best_support, _distinct(votes[i].voter for i in same), dissent,
                       key=texts[best])


# --- whole answers -----------------------------------------------------------------------------------


def merge(answers: Sequence[tuple[str, dict[str, Any] | None, float | None]], kinds: dict[str, str],
          reliability: Reliability, options: VoteOptions = VoteOptions(),
          field_confidence: Sequence[dict[str, float | None]] | None = None) -> dict[str, FieldResult]:
    """Merge whole answers ``(provider, data or None, stated confidence)`` field by field; a field
    not in ``kinds`` gets its kind from its name and values. ``field_confidence``: per answer, a
    stated confidence per field (overrides the answer's)."""
    names: list[str] = list(kinds)
    for _, data, _ in answers:
        if isinstance(data, dict):
            names.extend(k for k in data if k not in kinds and k != "confidence" and k not in names)
    out: dict[str, FieldResult] = {}
    for name in names:
        votes = []
        for j, (provider, data, conf) in enumerate(answers):
            value = data.get(name) if isinstance(data, dict) else None
            if field_confidence is not None:
                conf = field_confidence[j].get(name, conf)
            votes.append(Vote(provider, value, conf))
        kind = kinds.get(name) or canonical.infer_kind(name, [v.value for v in votes if isinstance(v.value, str)])
        out[name], _ = merge_field(name, kind, votes, reliability, options)
    return out


def learn(items: Sequence[dict[str, tuple[str, list[Vote]]]], *, iterations: int = 8,
          options: VoteOptions = VoteOptions(), prior: float = 0.7, prior_n: float = 2.0) -> Reliability:
    """Reliability and calibration from unlabelled items (EM): each item maps a field name to its
    kind and votes. Clusters are made once; each round scores them with the last round's estimates
    and counts each vote as right with its cluster's posterior."""
    prepared = []
    for item in items:
        for name, (kind, votes) in item.items():
            if kind == "text":
                continue
            clusters = cluster(kind, votes, options)
            if clusters:
                prepared.append((name, votes, clusters, vote_shares(votes)))
    rel = Reliability(prior, prior_n)
    for _ in range(iterations):
        new = Reliability(prior, prior_n)
        for name, votes, clusters, shares in prepared:
            score(clusters, votes, name, rel, options)
            for c in clusters:
                for i in c.members:
                    v = votes[i]
                    new.observe(v.voter, name, v.confidence, c.posterior, shares[i])
        rel = new
    return rel
