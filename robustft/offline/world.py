"""A seeded synthetic knowledge domain: houses, their members, trades and mentors.

The world is small enough to be learned by a tiny model in minutes, and built so that each
RobustFT mechanism has the signal it has with a real LLM:

- **Partial knowledge.** Only some facts are written into the pre-training text ("seen");
  the others never appear. The base model answers the first from memory and guesses on the
  second, which is what lets the checker tell clean labels from noisy ones.
- **Reasoning that helps.** "Where does the mentor of X live?" is a two-hop question. The
  pre-training text never answers it for the benchmark's people, but it states both hops
  (X's mentor is Y; Y lives in Z), so a model that writes the hops out step by step can
  answer what the direct prompt only guesses.
- **Neighbours that inform.** All members of a house live in the house's city. The
  pre-training text states where each *seen* member lives but never which house lives where
  (in its questions a person's house is drawn at random), so the base model cannot infer an
  unseen member's city — but solved questions about housemates, retrieved as worked
  examples, show it.
- **Noise that hurts.** Every fact is asked once in the training split; a wrong label
  teaches a wrong fact.

The benchmark's training and test splits ask about the *same* facts (each fact once per
split) with independently drawn wording, distractors and option order — the closed-book QA
setting in which supervised fine-tuning teaches knowledge, so clean labels help and noisy
labels hurt.

Everything here is plain data and a `random.Random(seed)`: the same config gives the same
world, benchmark and pre-training text on every machine.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

from ..prompts import answer_line, context_prompt, direct_prompt, reasoning_prompt, review_prompt
from ..sample import Sample, letter

RESIDENCE = "residence"  # where a person lives: shared by every member of a house
TRADE = "trade"  # a person's trade: individual
MENTOR = "mentor"  # where a person's mentor lives: a two-hop question
CATEGORIES = (RESIDENCE, TRADE, MENTOR)

TRADES = ("potter", "weaver", "smith", "baker", "mason", "tanner", "cooper", "fletcher",
          "brewer", "miller", "carver", "glazier", "dyer", "chandler", "cobbler", "tailor",
          "farrier", "roper", "thatcher", "tinker", "scribe", "herald", "falconer", "vintner")

# Two wordings per question kind; `{p}` is a person as "Name of House X".
QUESTION_TEMPLATES = {
    RESIDENCE: ("Where does {p} live?", "In which city does {p} live?"),
    TRADE: ("What is the trade of {p}?", "What does {p} do for a living?"),
    MENTOR: ("Where does the mentor of {p} live?", "In which city does the mentor of {p} live?"),
}

_ONSETS = "b d f g k l m n p r s t v z".split()
_VOWELS = "a e i o u".split()
_CODAS = "n r s k l m".split()


@dataclass(frozen=True)
class WorldConfig:
    """Sizes and rates of the synthetic domain. Every field enters the toy model's cache key.

    Attributes:
        seed: seeds the names, the facts, which facts are seen, and the benchmark questions.
        n_houses, house_size: the benchmark's people (n_houses * house_size of them).
        n_cities: cities a house can live in (several houses may share one).
        seen_residence, seen_trade: fraction of people whose city / trade is written into the
            pre-training text.
        seen_mentor: fraction of the two-hop question subjects whose mentor is written into
            the pre-training text (the first hop; the second, the mentor's city, always is).
        n_options: options per question.
        n_filler_people, n_filler_houses: people and houses that exist only in the
            pre-training text (worked-example demonstrations), never in the benchmark.
    """

    seed: int = 0
    n_houses: int = 40
    house_size: int = 8
    n_cities: int = 20
    seen_residence: float = 0.6
    seen_trade: float = 0.5
    seen_mentor: float = 0.8
    n_options: int = 4
    n_filler_people: int = 240
    n_filler_houses: int = 40

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Person:
    name: str
    house: str
    city: str
    trade: str
    mentor: str


@dataclass
class World:
    """The knowledge base: people and their facts, and which facts the pre-training text states.

    Attributes:
        people: name -> Person for the benchmark's people.
        houses: house name -> its city.
        cities, trades: the value vocabularies.
        seen: set of (name, relation) facts stated in pre-training, relation in
            {"residence", "trade", "mentor"} ("mentor" = who the mentor is).
        two_hop: the people asked the two-hop question in the benchmark.
        demo_two_hop: the people whose two-hop question is *demonstrated* in pre-training
            (disjoint from `two_hop`).
        filler_people, filler_houses: names used only in pre-training demonstrations.
    """

    config: WorldConfig
    people: dict[str, Person]
    houses: dict[str, str]
    cities: tuple[str, ...]
    trades: tuple[str, ...]
    seen: set[tuple[str, str]]
    two_hop: list[str]
    demo_two_hop: list[str]
    filler_people: list[str]
    filler_houses: list[str]

    def knows(self, name: str, relation: str) -> bool:
        """Whether the fact is stated in pre-training (for MENTOR: both hops are)."""
        if relation == MENTOR:
            p = self.people[name]
            return (name, "mentor") in self.seen and (p.mentor, RESIDENCE) in self.seen
        return (name, relation) in self.seen

    def answer(self, name: str, relation: str) -> str:
        p = self.people[name]
        if relation == RESIDENCE:
            return p.city
        if relation == TRADE:
            return p.trade
        if relation == MENTOR:
            return self.people[p.mentor].city
        raise ValueError(f"unknown relation {relation!r}")

    def values(self, relation: str) -> tuple[str, ...]:
        return self.trades if relation == TRADE else self.cities

    def vocabulary(self) -> list[str]:
        """Every word of the domain (for building the tokenizer)."""
        return [*self.people, *self.houses, *self.cities, *self.trades,
                *self.filler_people, *self.filler_houses]


def _names(rng: random.Random, n: int, pattern: str, taken: set[str]) -> list[str]:
    """n distinct capitalised names from syllable patterns: 'cv' syllable, 'c' coda."""
    out = []
    while len(out) < n:
        parts = []
        for ch in pattern:
            parts.append(rng.choice(_ONSETS) + rng.choice(_VOWELS) if ch == "s" else rng.choice(_CODAS))
        name = "".join(parts).capitalize()
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out


def _deal(rng: random.Random, values, n: int) -> list:
    """n values, each of `values` used floor(n/len) or ceil(n/len) times, in random order."""
    out = [values[i % len(values)] for i in range(n)]
    rng.shuffle(out)
    return out


def make_world(config: WorldConfig | None = None) -> World:
    """The knowledge base of a config (deterministic)."""
    cfg = config or WorldConfig()
    rng = random.Random(f"world-{cfg.seed}")
    taken: set[str] = set(t.capitalize() for t in TRADES)
    cities = _names(rng, cfg.n_cities, "scs", taken)  # e.g. "Karlomi"
    house_names = _names(rng, cfg.n_houses, "sss", taken)  # e.g. "Tolemi"
    n_people = cfg.n_houses * cfg.house_size
    person_names = _names(rng, n_people, "ssc", taken)  # e.g. "Zenok"
    filler_houses = _names(rng, cfg.n_filler_houses, "sss", taken)
    filler_people = _names(rng, cfg.n_filler_people, "ssc", taken)
    trades = TRADES

    # Values are dealt out evenly (each city to the same number of houses, each trade to the
    # same number of people) so that no value is a better guess than another: a model that
    # does not know a fact is at chance, not helped by a skewed prior.
    houses = dict(zip(house_names, _deal(rng, cities, len(house_names))))
    members = {h: person_names[i * cfg.house_size:(i + 1) * cfg.house_size]
               for i, h in enumerate(house_names)}
    house_of = {p: h for h, ps in members.items() for p in ps}

    seen: set[tuple[str, str]] = set()
    for p in person_names:
        if rng.random() < cfg.seen_residence:
            seen.add((p, RESIDENCE))
        if rng.random() < cfg.seen_trade:
            seen.add((p, TRADE))

    # Two-hop: half of the people are asked about their mentor in the benchmark, the other
    # half have their two-hop question demonstrated in pre-training. A mentor is someone of
    # another house whose city is seen (so the second hop is always known).
    order = person_names[:]
    rng.shuffle(order)
    two_hop = sorted(order[: n_people // 2])
    demo_two_hop = sorted(order[n_people // 2:])
    mentors_pool = [p for p in person_names if (p, RESIDENCE) in seen]
    mentor = {}
    for p in person_names:
        mentor[p] = rng.choice([m for m in mentors_pool if house_of[m] != house_of[p]])
        if p in demo_two_hop or rng.random() < cfg.seen_mentor:
            seen.add((p, "mentor"))

    trade_of = dict(zip(person_names, _deal(rng, trades, n_people)))
    people = {p: Person(p, house_of[p], houses[house_of[p]], trade_of[p], mentor[p])
              for p in person_names}
    return World(cfg, people, houses, tuple(cities), trades, seen, two_hop, demo_two_hop,
                 filler_people, filler_houses)


# ------------------------------------------------------------------------------ questions
def person_phrase(name: str, house: str) -> str:
    return f"{name} of House {house}"


def question_text(relation: str, name: str, house: str, wording: int = 0) -> str:
    return QUESTION_TEMPLATES[relation][wording].format(p=person_phrase(name, house))


def make_options(rng: random.Random, answer: str, values, n_options: int,
                 fixed: tuple[str, ...] = ()) -> tuple[tuple[str, ...], str]:
    """Options (answer + distinct distractors, shuffled) and the answer's letter.

    `fixed` distractors are included first (used to put a neighbour's answer among them)."""
    pool = [v for v in values if v != answer and v not in fixed]
    distractors = [v for v in fixed if v != answer][: n_options - 1]
    distractors += rng.sample(pool, n_options - 1 - len(distractors))
    options = [answer, *distractors]
    rng.shuffle(options)
    return tuple(options), letter(options.index(answer))


def make_question(rng: random.Random, world: World, relation: str, name: str, house: str,
                  answer: str, *, wording: int | None = None, qid: str = "",
                  category: str | None = None, fixed: tuple[str, ...] = ()) -> Sample:
    """One multiple-choice question about (name, relation) with a given (true) answer."""
    wording = rng.randrange(2) if wording is None else wording
    options, ans = make_options(rng, answer, world.values(relation), world.config.n_options, fixed)
    return Sample(id=qid, question=question_text(relation, name, house, wording), options=options,
                  answer=ans, category=category or relation, clean_answer=ans,
                  extra={"person": name, "relation": relation})


def reasoning_text(world: World, name: str, relation: str, *, mentor: str | None = None,
                   value: str | None = None, mentor_city: str | None = None) -> str:
    """The step-by-step recall of a fact, as the pre-training text writes it.

    One hop: "We know that X lives in Z."  Two hops: "We know that the mentor of X is Y. We
    know that Y lives in Z."  (Overrides let demonstrations write a guess instead.)
    """
    if relation == RESIDENCE:
        return f"We know that {name} lives in {value or world.people[name].city}."
    if relation == TRADE:
        return f"We know that {name} works as a {value or world.people[name].trade}."
    m = mentor or world.people[name].mentor
    city = mentor_city or world.people[m].city
    return f"We know that the mentor of {name} is {m}. We know that {m} lives in {city}."


@dataclass
class Benchmark:
    """The offline benchmark: train and test questions about the same facts, and the world.

    Attributes:
        train, test: `Sample` lists (clean labels; add noise with `robustft.inject_noise`).
            Each sample's `category` is its question kind ("residence", "trade", "mentor")
            and `extra` holds {"person", "relation", "known"} — "known" says whether the
            pre-training text states the fact (for analysis only; no stage reads it).
        world: the knowledge base.
    """

    train: list[Sample]
    test: list[Sample]
    world: World = field(repr=False)

    def known(self, samples: list[Sample]) -> list[bool]:
        return [bool(s.extra.get("known")) for s in samples]


def benchmark_facts(world: World) -> list[tuple[str, str]]:
    """(person, relation) of every benchmark question, in a fixed order."""
    facts = [(p, r) for p in world.people for r in (RESIDENCE, TRADE)]
    facts += [(p, MENTOR) for p in world.two_hop]
    return facts


def make_benchmark_from_world(world: World) -> Benchmark:
    splits = {}
    for split in ("train", "test"):
        rng = random.Random(f"benchmark-{world.config.seed}-{split}")
        facts = benchmark_facts(world)
        rng.shuffle(facts)
        out = []
        for i, (name, rel) in enumerate(facts):
            p = world.people[name]
            s = make_question(rng, world, rel, name, p.house, world.answer(name, rel),
                              qid=f"{split}-{i:04d}")
            s.extra["known"] = world.knows(name, rel)
            out.append(s)
        splits[split] = out
    return Benchmark(splits["train"], splits["test"], world)


def make_benchmark(config: WorldConfig | None = None, *, seed: int | None = None) -> Benchmark:
    """The offline benchmark of a world config (default `WorldConfig()`; `seed` overrides
    its seed). The toy model built with the same world config knows the "seen" facts."""
    cfg = config or WorldConfig()
    if seed is not None:
        cfg = WorldConfig(**{**cfg.as_dict(), "seed": seed})
    return make_benchmark_from_world(make_world(cfg))


# ------------------------------------------------------------------------ pre-training text
@dataclass(frozen=True)
class CorpusConfig:
    """How many times each kind of pre-training document is written.

    Attributes:
        facts: encyclopedia paragraphs per person (its seen facts as sentences).
        direct: direct-prompt questions per seen one-hop fact.
        reasoning: step-by-step questions per seen one-hop fact.
        two_hop: direct and step-by-step two-hop questions per demonstrated person.
        context: context-prompt (worked examples) documents in all.
        review: review-prompt documents in all.
    """

    facts: int = 12
    direct: int = 8
    reasoning: int = 4
    two_hop: int = 8
    context: int = 0
    review: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _random_house(rng: random.Random, world: World) -> str:
    # The pre-training text never tells a benchmark person's house: a question names a random
    # one, so the model learns that the house is no clue to a person's own facts.
    return rng.choice(list(world.houses) + world.filler_houses)


def _qa(rng, world, relation, name, answer, prompt_kind, reasoning=None) -> str:
    s = make_question(rng, world, relation, name, _random_house(rng, world), answer)
    if prompt_kind == "direct":
        return direct_prompt(s) + answer_line(s, by="text")
    return reasoning_prompt(s) + reasoning + "\n" + answer_line(s, by="text")


def pretraining_corpus(world: World, corpus: CorpusConfig | None = None,
                       seed: int = 0) -> list[str]:
    """The pre-training documents (strings, in a seeded random order).

    Kinds: encyclopedia paragraphs of seen facts; direct-prompt and step-by-step questions on
    seen facts (rendered with `robustft.prompts`, answered by option text); two-hop questions
    of the demonstration people; worked-example (context prompt) and review documents over
    filler people, so the model learns to use examples without learning the benchmark's
    houses.
    """
    cc = corpus or CorpusConfig()
    rng = random.Random(f"corpus-{world.config.seed}-{seed}")
    docs: list[str] = []
    people = world.people

    for _ in range(cc.facts):
        for name, p in people.items():
            sents = []
            if (name, RESIDENCE) in world.seen:
                sents.append(f"{name} lives in {p.city}.")
            if (name, TRADE) in world.seen:
                sents.append(f"{name} works as a {p.trade}.")
            if (name, "mentor") in world.seen:
                sents.append(f"The mentor of {name} is {p.mentor}.")
            if sents:
                rng.shuffle(sents)
                docs.append("About " + name + ": " + " ".join(sents))

    one_hop = [(n, r) for n in people for r in (RESIDENCE, TRADE) if (n, r) in world.seen]
    for name, rel in one_hop:
        ans = world.answer(name, rel)
        for _ in range(cc.direct):
            docs.append(_qa(rng, world, rel, name, ans, "direct"))
        for _ in range(cc.reasoning):
            docs.append(_qa(rng, world, rel, name, ans, "reasoning", reasoning_text(world, name, rel)))

    for name in world.demo_two_hop:
        ans = world.answer(name, MENTOR)
        for _ in range(cc.two_hop):
            docs.append(_qa(rng, world, MENTOR, name, ans, "direct"))
            docs.append(_qa(rng, world, MENTOR, name, ans, "reasoning", reasoning_text(world, name, MENTOR)))

    docs += [context_document(rng, world) for _ in range(cc.context)]
    docs += [review_document(rng, world) for _ in range(cc.review)]
    rng.shuffle(docs)
    return docs


def context_document(rng: random.Random, world: World) -> str:
    """A worked-examples document over filler people: housemates share a city."""
    house = rng.choice(world.filler_houses)
    city = rng.choice(world.cities)
    names = rng.sample(world.filler_people, 4)
    k_same = rng.choice((1, 2, 3))
    examples = []
    for i, n in enumerate(names[:3]):
        if i < k_same:
            examples.append(make_question(rng, world, RESIDENCE, n, house, city))
        else:
            other = rng.choice([h for h in world.filler_houses if h != house])
            examples.append(make_question(rng, world, RESIDENCE, n, other,
                                          rng.choice([c for c in world.cities if c != city])))
    rng.shuffle(examples)
    others = tuple(e.answer_text for e in examples if e.answer_text != city)
    final = make_question(rng, world, RESIDENCE, names[3], house, city, fixed=others[:1])
    return context_prompt(final, examples, by="text") + answer_line(final, by="text")


def review_document(rng: random.Random, world: World) -> str:  # pragma: no cover - later
    raise NotImplementedError
