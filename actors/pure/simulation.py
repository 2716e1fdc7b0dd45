"""A seeded simulation of three LLMs extracting seven fields from business emails, and the scores of
every way to merge them: each single provider, max-confidence, naive majority, our consensus (the
same code as ``scripts/consensus_eval.py``: ``actors.pure.recorded``), and the Bayes optimum under
the simulation's true parameters.

Run it with ``python scripts/ensemble_sim.py`` (a thin CLI) or ``llmbus bench --only ensembles``.

The simulation: per item a true value per field (English or Korean emails), shared look-alike lures
(Johnson/Johnston, Daniel/Danielle, a cc'd colleague, USD/EUR 603, 12,405/12,450, the day after,
month and day swapped, a year off, Senior X/X, COO/CFO, .com/.co.kr, Acme/Acme Capital), so erring
providers agree on the same wrong answer; correct answers in realistic surface variants; null
fields and whole-response failures. Provider ``calibrated`` states its real chance of being right,
``under`` states less, ``over`` always says 0.9.

Scores per (item, field): accuracy (the emitted value is the true one; an abstention is wrong),
coverage (a value was emitted), false merges (the emitted value's members answered with different
true entities: a look-alike merged with another), each with its standard error.
"""

from __future__ import annotations

import math
import random
import time

from actors.pure import canonical, recorded
from actors.pure.vote import VoteOptions

FIRST = ["John", "Daniel", "Maria", "Sarah", "Michael", "Anna", "David", "Laura", "Peter", "Emma", "Thomas", "Julia"]
LAST = ["Johnson", "Smith", "Miller", "Anders", "Carlson", "Peters", "Robins", "Williams", "Harris", "Nelson"]
KO_SUR = [("김", ["Kim", "Gim"]), ("이", ["Lee", "Yi", "Rhee"]), ("박", ["Park", "Bak"]), ("정", ["Jung", "Jeong"]),
          ("최", ["Choi", "Choe"])]
KO_GIVEN = [("민준", ["Min-jun", "Minjun", "Min Jun"]), ("서연", ["Seo-yeon", "Seoyeon"]),
            ("지훈", ["Ji-hoon", "Jihoon", "Jihun"]), ("수아", ["Su-ah", "Sooah"]), ("영호", ["Young-ho", "Yeong-ho"])]
COMPANIES = ["Acme", "Vertex", "Northwind", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Zenith"]
TITLES = [("Procurement Manager", ["Procurement Mgr", "Manager, Procurement"]),
          ("Vice President of Sales", ["VP of Sales", "Sales VP", "VP Sales"]),
          ("Chief Operating Officer", ["COO", "Chief Operating Officer"]),
          ("Director of Finance", ["Finance Director", "Dir. of Finance"])]
PRIORITIES = ["low", "normal", "high", "urgent"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
FIELDS = ["contact_name", "company", "job_title", "contact_email", "amount", "due_date", "priority"]

# provider -> per-field accuracy, and how it states confidence
PROVIDERS = {
    "calibrated": {"acc": 0.82, "style": "calibrated"},
    "under": {"acc": 0.78, "style": "under"},
    "over": {"acc": 0.66, "style": "over"},
}
P_NULL, P_FAIL = 0.04, 0.03


class Item:
    """One email: per field the truth's variants and its lures, each a list of surface forms."""

    def __init__(self, rng: random.Random, i: int) -> None:
        self.id = f"sim-{i:05d}"
        self.lang = "ko" if rng.random() < 0.35 else "en"
        self.entities: dict[str, list[list[str]]] = {}  # field -> [truth forms, lure 1 forms, …]
        r = rng
        if self.lang == "en":
            first, last = r.choice(FIRST), r.choice(LAST)
            truth = [f"{first} {last}", f"{last}, {first}", f"Mr. {first} {last}" if first not in ("Maria", "Sarah",
                     "Anna", "Laura", "Emma", "Julia") else f"Ms. {first} {last}", f"{first.upper()} {last.upper()}"]
            other_first = r.choice([f for f in FIRST if f != first])
            lures = [[f"{first} {last}t" if not last.endswith("n") else f"{first} {last[:-1]}ton"],
                     [f"{first}le {last}" if first == "Daniel" else f"{other_first} {last}"]]
        else:
            (sur, sur_r), (giv, giv_r) = r.choice(KO_SUR), r.choice(KO_GIVEN)
            truth = [f"{sur}{giv}", f"{r.choice(sur_r)} {r.choice(giv_r)}", f"{r.choice(giv_r)} {r.choice(sur_r)}",
                     f"{sur}{giv} 님"]
            (sur2, sur2_r) = r.choice([s for s in KO_SUR if s[0] != sur])
            (giv2, giv2_r) = r.choice([g for g in KO_GIVEN if g[0] != giv])
            lures = [[f"{sur}{giv2}", f"{r.choice(sur_r)} {r.choice(giv2_r)}"], [f"{sur2}{giv}"]]
        self.entities["contact_name"] = [truth, *lures]
        co = r.choice(COMPANIES)
        forms = [f"{co} Inc.", f"{co}, Inc.", f"{co} Corporation", f"{co.upper()} INC", co] if self.lang == "en" \
            else [f"{co} Co., Ltd.", f"(주){co}", f"{co} 주식회사", co]
        self.entities["company"] = [forms, [f"{co} Capital"], [f"{co} Holdings Asia"]]
        title, variants = r.choice(TITLES)
        senior = r.random() < 0.5
        t_forms = [("Senior " if senior else "") + t for t in [title, *variants]]
        if senior:
            t_forms += ["Sr. " + variants[0]]
        lure_t = [title] if senior else ["Senior " + title]
        other = "Chief Financial Officer" if "Operating" in title else r.choice([t for t, _ in TITLES if t != title])
        self.entities["job_title"] = [t_forms, lure_t, [other]]
        user = f"{r.choice(FIRST).lower()}.{r.choice(LAST).lower()}"
        dom = co.lower()
        tld = ".com" if self.lang == "en" else ".co.kr"
        email = f"{user}@{dom}{tld}"
        self.entities["contact_email"] = [[email, email.upper(), f"mailto:{email}", f"<{email}>"],
                                          [f"{user}@{dom}{'.co.kr' if tld == '.com' else '.com'}"],
                                          [f"{user[0]}{user.split('.')[1]}@{dom}{tld}"]]
        cur = "USD" if self.lang == "en" else r.choice(["KRW", "USD"])
        amount = r.choice([603, 1200, 12405, 4500, 98000, 250, 7800]) * (1000 if cur == "KRW" else 1)
        self.entities["amount"] = [self.money_forms(cur, amount), self.money_forms("EUR" if cur == "USD" else "USD",
                                   amount)[:2], self.money_forms(cur, self.swap_digits(amount))[:2]]
        y, mo, d = r.choice([2025, 2026]), r.randint(1, 12), r.randint(1, 12)
        self.entities["due_date"] = [self.date_forms(y, mo, d), self.date_forms(y, mo, d + 1)[:2],
                                     self.date_forms(y, d, mo)[:2] if d != mo else self.date_forms(y + 1, mo, d)[:2],
                                     self.date_forms(y + 1, mo, d)[:1]]
        p = r.choice(PRIORITIES)
        self.entities["priority"] = [[p, p.capitalize()], [r.choice([q for q in PRIORITIES if q != p])]]

    @staticmethod
    def swap_digits(n: int) -> int:
        s = str(n)
        if len(s) >= 2 and s[-1] != s[-2]:
            return int(s[:-2] + s[-1] + s[-2])
        return n + 10

    def money_forms(self, cur: str, n: int) -> list[str]:
        sym = {"USD": "$", "EUR": "€", "KRW": "₩"}[cur]
        forms = [f"{cur} {n:,}", f"{sym}{n:,}.00" if cur != "KRW" else f"{sym}{n:,}", f"{n:,} {cur}"]
        if cur == "KRW" and n % 10000 == 0:
            forms.append(f"{n // 10000:,}만 원")
        if cur == "EUR":
            forms.append(f"{n:,}".replace(",", ".") + ",00 €")
        return forms

    def date_forms(self, y: int, mo: int, d: int) -> list[str]:
        if d > 28:
            d = 28
        forms = [f"{y}-{mo:02d}-{d:02d}", f"{MONTHS[mo - 1]} {d}, {y}", f"{d} {MONTHS[mo - 1][:3]} {y}"]
        forms.append(f"{y}년 {mo}월 {d}일" if self.lang == "ko" else f"{d:02d}.{mo:02d}.{y}")
        return forms

    def truth_form(self, name: str) -> str:
        return self.entities[name][0][0]


def simulate(n: int, seed: int):
    rng = random.Random(seed)
    items, truth_conf = [], []
    for i in range(n):
        item = Item(rng, i)
        responses, confs = {}, {}
        for provider, spec in PROVIDERS.items():
            if rng.random() < P_FAIL:
                responses[provider] = {"fields": None, "error": "timeout"}
                continue
            fields = {}
            for name in FIELDS:
                if rng.random() < P_NULL:
                    fields[name] = {"value": None, "confidence": None}
                    continue
                acc = spec["acc"] + (0.06 if name in ("priority", "contact_email") else 0.0)
                if spec["style"] == "calibrated":
                    c = min(0.99, max(0.3, rng.gauss(acc, 0.12)))
                    stated, p_right = c, c
                elif spec["style"] == "under":
                    c = min(0.99, max(0.3, rng.gauss(acc, 0.12)))
                    stated, p_right = max(0.05, c - 0.3), c
                else:
                    stated, p_right = 0.9, acc
                ents = item.entities[name]
                if rng.random() < p_right:
                    entity = 0
                else:
                    entity = 1 + min(int(rng.random() ** 1.6 * (len(ents) - 1)), len(ents) - 2)
                fields[name] = {"value": rng.choice(ents[entity]), "confidence": round(stated, 3)}
                confs[(provider, name)] = p_right
            responses[provider] = {"fields": fields, "latency_ms": rng.randint(200, 3000)}
        items.append({"id": item.id, "lang": item.lang, "email_text": "…", "responses": responses})
        truth_conf.append((item, confs))
    return items, truth_conf


def entity_of(item: Item, name: str, value) -> int | None:
    if value is None:
        return None
    for k, forms in enumerate(item.entities[name]):
        if value in forms:
            return k
    return -1


def score(rows: list[tuple[Item, str, object, list[str], dict]]) -> dict:
    """rows: (item, field, emitted value, members, answers provider -> value)."""
    n = len(rows)
    right = covered = merges = 0
    for item, name, value, members, answers in rows:
        e = entity_of(item, name, value)
        covered += value is not None
        right += e == 0
        ents = {entity_of(item, name, answers[p]) for p in members if answers.get(p) is not None}
        merges += len(ents) > 1
    def se(k):
        p = k / n
        return round(100 * p, 2), round(100 * math.sqrt(p * (1 - p) / n), 2)
    return {"accuracy": se(right), "coverage": se(covered), "false_merges": se(merges)}


def bayes_choice(item: Item, name: str, answers: dict, confs: dict, alternatives: float) -> object:
    """The Bayes-optimal value: true per-answer accuracies, true entities (perfect clustering)."""
    by_entity: dict[int, list[str]] = {}
    for p, v in answers.items():
        if v is not None:
            by_entity.setdefault(entity_of(item, name, v), []).append(p)
    if not by_entity:
        return None
    best, best_s = None, -1e18
    for e, ps in by_entity.items():
        s = sum(math.log(confs[(p, name)] / (1 - confs[(p, name)]) * alternatives) for p in ps)
        if s > best_s:
            best, best_s = e, s
    return item.entities[name][best][0] if best is not None and best >= 0 else None


def evaluate(n: int, seed: int, alternatives: float) -> dict:
    items, truth = simulate(n, seed)
    for it in items:
        it["_answers"] = recorded.answers_of(it)
    t0 = time.perf_counter()
    kinds = recorded.field_kinds(items, None)
    merged, _ = recorded.run(items, kinds, VoteOptions(alternatives=alternatives))
    merge_s = time.perf_counter() - t0
    methods: dict[str, list] = {p: [] for p in PROVIDERS}
    methods.update({"max_confidence": [], "naive_majority": [], "consensus": [], "bayes_optimum": []})
    for it, (item, confs), out in zip(items, truth, merged):
        answers_all = it["_answers"]
        for name in FIELDS:
            answers = {p: f.get(name, (None, None))[0] for p, f in answers_all.items()}
            stated = {p: f.get(name, (None, None))[1] for p, f in answers_all.items()}
            for p in PROVIDERS:
                methods[p].append((item, name, answers.get(p), [p] if answers.get(p) is not None else [], answers))
            present = [p for p in answers if answers[p] is not None]
            top = max(present, key=lambda p: stated[p] or 0.0) if present else None
            methods["max_confidence"].append((item, name, answers.get(top) if top else None, [top] if top else [],
                                              answers))
            counts: dict[str, list[str]] = {}
            for p in present:
                counts.setdefault(canonical.fold(answers[p]), []).append(p)
            if counts:
                ps = max(counts.values(), key=len)
                methods["naive_majority"].append((item, name, answers[ps[0]], ps, answers))
            else:
                methods["naive_majority"].append((item, name, None, [], answers))
            methods["consensus"].append((item, name, out["fields"][name], out["members"][name], answers))
            b = bayes_choice(item, name, answers, confs, alternatives)
            methods["bayes_optimum"].append((item, name, b, [], answers))
    return {"items": n, "fields": len(FIELDS), "seed": seed, "merge_seconds": round(merge_s, 2),
            "kinds": kinds, "methods": {k: score(v) for k, v in methods.items()}}
