"""A seeded synthetic knowledge domain: houses, their members, trades and mentors.

The world is small enough for a tiny model to learn in minutes, and built so that each
RobustFT mechanism has the signal it has with a real LLM:

- **Partial knowledge.** Only some facts are written into the pre-training text ("seen");
  the others never are. The base model answers the first from memory and guesses on the
  second, which is what lets the checker tell clean labels from noisy ones.
- **Reasoning that helps.** "Where does the mentor of X live?" is a two-hop question. The
  pre-training text never answers it for the benchmark's people, but it states both hops
  (the mentor of X is Y; Y lives in Z), so a model that writes the hops out step by step
  answers what the direct prompt can only guess.
- **Neighbours that inform.** All members of a house live in the house's city. The
  pre-training text says where each *seen* member lives but never which house lives where
  (its questions name a random house), so the base model cannot infer an unseen member's
  city by itself — but solved questions about housemates, given as worked examples, show it.
- **Noise that hurts.** Every fact is asked once in the training split, so a wrong label
  teaches a wrong fact.

The training and test splits ask about the *same* facts (each fact once per split) with
independently drawn wording, distractors and option order: the closed-book QA setting in
which supervised fine-tuning teaches knowledge, so clean labels help and noisy ones hurt.

Everything is plain data and `random.Random` seeded from the config: the same config gives
the same world, benchmark and pre-training text on every machine.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

from ..prompts import answer_line, context_prompt, direct_prompt, reasoning_prompt, review_prompt
from ..sample import Sample, letter

RESIDENCE = "residence"  # where a person lives: shared by every member of a house
TRADE = "trade"  # a person's trade: their own
MENTOR = "mentor"  # where a person's mentor lives: a two-hop question
CATEGORIES = (RESIDENCE, TRADE, MENTOR)
MENTOR_OF = "mentor_of"  # the first hop (who the mentor is); never asked as a question

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
    """Sizes and rates of the synthetic domain (every field enters the toy model's cache key).

    Attributes:
        seed: seeds the names, the facts, which facts are seen, and the benchmark questions.
        n_houses, house_size: the benchmark's people (n_houses * house_size of them).
        n_cities: cities; each is home to the same number of houses.
        seen_residence, seen_trade: fraction of people whose city / trade the pre-training
            text states.
        seen_mentor: fraction of the two-hop question subjects whose mentor it states (the
            second hop, the mentor's city, always is).
        n_options: options per question.
        n_extra_people: people who exist only in the pre-training text (never in the
            benchmark). Their trades and mentors are stated, their cities never — like a
            benchmark person whose city is unseen — so worked-example documents can give
            them any city.
        n_extra_houses: houses that exist only in the pre-training text.
    """

    seed: int = 0
    n_houses: int = 24
    house_size: int = 6
    n_cities: int = 12
    seen_residence: float = 0.6
    seen_trade: float = 0.5
    seen_mentor: float = 0.8
    n_options: int = 4
    n_extra_people: int = 80
    n_extra_houses: int = 24

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Person:
    name: str
    house: str | None  # None for pre-training-only people
    city: str | None
    trade: str
    mentor: str | None


@dataclass
class World:
    """The knowledge base and which of its facts the pre-training text states.

    Attributes:
        config: the `WorldConfig` it was made from.
        people: name -> Person, the benchmark's people.
        extra_people: name -> Person, pre-training-only people (no house, no city).
        houses: house name -> its city (benchmark houses).
        extra_houses: pre-training-only house names.
        cities, trades: the value vocabularies.
        seen: the stated facts, as (name, relation) with relation in
            {"residence", "trade", "mentor_of"}.
        two_hop: the people asked the two-hop question in the benchmark.
        demo_two_hop: the people whose two-hop question the pre-training text answers
            (disjoint from `two_hop`).
    """

    config: WorldConfig
    people: dict[str, Person]
    extra_people: dict[str, Person]
    houses: dict[str, str]
    extra_houses: list[str]
    cities: tuple[str, ...]
    trades: tuple[str, ...]
    seen: set[tuple[str, str]]
    two_hop: list[str]
    demo_two_hop: list[str]

    def person(self, name: str) -> Person:
        return self.people[name] if name in self.people else self.extra_people[name]

    def knows(self, name: str, relation: str) -> bool:
        """Whether the pre-training text states the fact (for MENTOR: both hops)."""
        if relation == MENTOR:
            p = self.people[name]
            return (name, MENTOR_OF) in self.seen and (p.mentor, RESIDENCE) in self.seen
        return (name, relation) in self.seen

    def answer(self, name: str, relation: str) -> str:
        p = self.person(name)
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
        """Every name and value of the domain (each becomes one token)."""
        return [*self.people, *self.extra_people, *self.houses, *self.extra_houses,
                *self.cities, *self.trades]


def _names(rng: random.Random, n: int, pattern: str, taken: set[str]) -> list[str]:
    """n new capitalised names; pattern letters: 's' a consonant-vowel syllable, 'c' a coda."""
    out = []
    while len(out) < n:
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) if ch == "s" else rng.choice(_CODAS)
                       for ch in pattern).capitalize()
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
    taken: set[str] = set()
    cities = tuple(_names(rng, cfg.n_cities, "scs", taken))  # e.g. "Lonfi"
    house_names = _names(rng, cfg.n_houses, "sss", taken)  # e.g. "Tumura"
    n_people = cfg.n_houses * cfg.house_size
    person_names = _names(rng, n_people, "ssc", taken)  # e.g. "Zepus"
    extra_houses = _names(rng, cfg.n_extra_houses, "sss", taken)
    extra_names = _names(rng, cfg.n_extra_people, "ssc", taken)

    # Values are dealt out evenly (each city to the same number of houses, each trade to the
    # same number of people), so no value is a better blind guess than another: a model that
    # does not know a fact is at chance, not helped by a skewed prior.
    houses = dict(zip(house_names, _deal(rng, cities, cfg.n_houses)))
    house_of = {p: house_names[i // cfg.house_size] for i, p in enumerate(person_names)}
    trade_of = dict(zip(person_names + extra_names, _deal(rng, TRADES, n_people + cfg.n_extra_people)))

    seen: set[tuple[str, str]] = set()
    for p in person_names:
        if rng.random() < cfg.seen_residence:
            seen.add((p, RESIDENCE))
        if rng.random() < cfg.seen_trade:
            seen.add((p, TRADE))

    # Half of the people are asked the two-hop question in the benchmark; the other half have
    # it answered in the pre-training text. A mentor is someone of another house whose city
    # is stated, so the second hop is always known.
    order = person_names[:]
    rng.shuffle(order)
    two_hop, demo_two_hop = sorted(order[: n_people // 2]), sorted(order[n_people // 2:])
    mentors = [p for p in person_names if (p, RESIDENCE) in seen]
    mentor_of = {}
    for p in person_names:
        pool = [m for m in mentors if house_of[m] != house_of[p]]
        if not pool:
            raise ValueError("world too small: no seen resident of another house to be a mentor")
        mentor_of[p] = rng.choice(pool)
        if p in demo_two_hop or rng.random() < cfg.seen_mentor:
            seen.add((p, MENTOR_OF))

    people = {p: Person(p, house_of[p], houses[house_of[p]], trade_of[p], mentor_of[p])
              for p in person_names}
    extra = {p: Person(p, None, None, trade_of[p], rng.choice(mentors)) for p in extra_names}
    seen |= {(p, r) for p in extra_names for r in (TRADE, MENTOR_OF)}
    return World(cfg, people, extra, houses, extra_houses, cities, TRADES, seen, two_hop,
                 demo_two_hop)


# ------------------------------------------------------------------------------ questions
def question_text(relation: str, name: str, house: str, wording: int = 0) -> str:
    return QUESTION_TEMPLATES[relation][wording].format(p=f"{name} of House {house}")


def make_options(rng: random.Random, answer: str, values, n_options: int,
                 include: tuple[str, ...] = ()) -> tuple[tuple[str, ...], str]:
    """Options (the answer and distinct distractors, shuffled) and the answer's letter.
    Values in `include` are made distractors first."""
    first = [v for v in dict.fromkeys(include) if v != answer][: n_options - 1]
    pool = [v for v in values if v != answer and v not in first]
    options = [answer, *first, *rng.sample(pool, n_options - 1 - len(first))]
    rng.shuffle(options)
    return tuple(options), letter(options.index(answer))


def make_question(rng: random.Random, world: World, relation: str, name: str, house: str,
                  answer: str, *, wording: int | None = None, qid: str = "",
                  include: tuple[str, ...] = ()) -> Sample:
    """A multiple-choice question about (name, relation) whose right answer is `answer`."""
    wording = rng.randrange(2) if wording is None else wording
    options, ans = make_options(rng, answer, world.values(relation), world.config.n_options, include)
    return Sample(id=qid, question=question_text(relation, name, house, wording), options=options,
                  answer=ans, category=relation, clean_answer=ans,
                  extra={"person": name, "relation": relation})


def reasoning_text(world: World, name: str, relation: str, value: str | None = None) -> str:
    """Step-by-step recall, as the pre-training text writes it.

    One hop: "We know that X lives in Z."  Two hops: "We know that the mentor of X is Y. We
    know that Y lives in Z."  `value` replaces the one-hop answer (a guess).
    """
    if relation == RESIDENCE:
        return f"We know that {name} lives in {value or world.answer(name, RESIDENCE)}."
    if relation == TRADE:
        return f"We know that {name} works as a {value or world.answer(name, TRADE)}."
    m = world.person(name).mentor
    return f"We know that the mentor of {name} is {m}. We know that {m} lives in {world.people[m].city}."


@dataclass
class Benchmark:
    """The offline benchmark: train and test questions about the same facts, and the world.

    Attributes:
        train, test: lists of `Sample` with clean labels (add noise with
            `robustft.inject_noise`). `category` is the question kind ("residence", "trade",
            "mentor"); `extra` holds {"person", "relation", "known"}, where "known" says
            whether the pre-training text states the fact — for analysis only, no stage
            reads it.
        world: the knowledge base.
    """

    train: list[Sample]
    test: list[Sample]
    world: World = field(repr=False)


def benchmark_facts(world: World) -> list[tuple[str, str]]:
    """(person, relation) of every benchmark question, in a fixed order."""
    return [(p, r) for p in world.people for r in (RESIDENCE, TRADE)] + [(p, MENTOR) for p in world.two_hop]


def make_benchmark(config: WorldConfig | None = None, *, seed: int | None = None) -> Benchmark:
    """The offline benchmark of a world config (default `WorldConfig()`; `seed` replaces its
    seed). The toy model pre-trained on the same world config knows its seen facts."""
    cfg = config or WorldConfig()
    if seed is not None:
        cfg = WorldConfig(**{**cfg.as_dict(), "seed": seed})
    world = make_world(cfg)
    splits = {}
    for split in ("train", "test"):
        rng = random.Random(f"benchmark-{cfg.seed}-{split}")
        facts = benchmark_facts(world)
        rng.shuffle(facts)
        samples = []
        for i, (name, rel) in enumerate(facts):
            s = make_question(rng, world, rel, name, world.people[name].house, world.answer(name, rel),
                              qid=f"{split}-{i:04d}")
            s.extra["known"] = world.knows(name, rel)
            samples.append(s)
        splits[split] = samples
    return Benchmark(splits["train"], splits["test"], world)


# ------------------------------------------------------------------------ pre-training text
# Bump when the code that turns a config into a world, a benchmark or pre-training text changes
# in a way no config field shows (a renderer, a template, the wording of `robustft.prompts`, the
# order of random draws): it enters the toy model's cache key and the shipped weights' metadata,
# so weights made by other text are never taken for these.
WORLD_VERSION = 1


@dataclass(frozen=True)
class DocumentRates:
    """The probabilities inside each kind of pre-training document (`DocumentSampler`).

    Cut points are cumulative: a uniform draw r below `cuts[0]` picks the first branch,
    below `cuts[1]` the second, else the third.

    Attributes:
        seen_two_hop: share of two-hop facts among the seen facts that decoy examples and
            memory questions draw.
        two_hop_steps: share of two-hop documents answered step by step (else directly).
        unknown_steps: share of unknown-city documents answered step by step.
        context_cuts: context documents: housemates among the examples / a pre-training-only
            person with no housemate (a guess) / a seen fact from memory.
        context_housemates: the number of housemate examples, drawn uniformly from this tuple.
        context_extra_person: share of housemate documents whose person is a
            pre-training-only one (else a seen resident).
        context_named_mate: share of housemate documents whose first housemate is a seen
            resident of the same city (else a pre-training-only person).
        review_cuts: review documents: a two-hop question / an unknown person's city / a
            seen one-hop fact.
        review_two_hop_guess: two-hop reviews whose examples-based expert guesses.
        review_city_guess: city reviews whose step-by-step expert guesses.
        review_seen_guess: seen-fact reviews whose examples-based expert guesses.
        roll_call_size: the fewest and most names in a roll call.
    """

    seen_two_hop: float = 0.25
    two_hop_steps: float = 0.7
    unknown_steps: float = 0.5
    context_cuts: tuple[float, float] = (0.55, 0.7)
    context_housemates: tuple[int, ...] = (1, 1, 2, 3)
    context_extra_person: float = 0.6
    context_named_mate: float = 0.5
    review_cuts: tuple[float, float] = (0.35, 0.8)
    review_two_hop_guess: float = 0.7
    review_city_guess: float = 0.7
    review_seen_guess: float = 0.5
    roll_call_size: tuple[int, int] = (2, 6)


@dataclass(frozen=True)
class CorpusConfig:
    """The mixture of pre-training documents: the relative weight of each kind.

    Attributes:
        facts: encyclopedia paragraphs ("About X: X lives in Z. X works as a T. ...").
        direct: direct-prompt questions on seen one-hop facts, answered by option text.
        reasoning: step-by-step questions on seen one-hop facts.
        two_hop: two-hop questions of the demonstration people (direct or step by step).
        unknown: questions on the city of a pre-training-only person, answered with a random
            city each time: the model learns to spread its bets on what it was never told.
        roll_call: "Present today: X, Y, Z. In the same order: X, Y, Z." — name lists read
            twice, the plainest copying there is; they make the model learn early to copy a
            name it has just read (into a reasoning step, or an answer line).
        context: worked-examples documents (the context prompt).
        review: review-prompt documents.
        rates: the probabilities inside each kind (`DocumentRates`).
    """

    facts: float = 1.0
    direct: float = 1.0
    reasoning: float = 1.0
    two_hop: float = 1.0
    unknown: float = 0.3
    roll_call: float = 0.3
    context: float = 1.5
    review: float = 1.0
    rates: DocumentRates = field(default_factory=DocumentRates)

    def as_dict(self) -> dict:
        return asdict(self)


# The document kinds, in the order `DocumentSampler.sample` draws among them.
KINDS = ("facts", "direct", "reasoning", "two_hop", "unknown", "roll_call", "context", "review")


class DocumentSampler:
    """Draws pre-training documents from a world, with its own seeded generator.

    Every question is rendered with `robustft.prompts` — the functions the pipeline uses —
    and answered by option text. Three rules keep the benchmark honest:

    - a fact of the benchmark's people is written only when it is *seen*, and only truly;
    - a question names a random house, never the person's own, so the text never ties a
      house to a city;
    - a city given to a pre-training-only person is drawn afresh for each document, so
      worked-example and review documents teach how to *use* examples and experts' answers,
      not any fact.
    """

    def __init__(self, world: World, seed: int = 0, corpus: CorpusConfig | None = None):
        self.world = world
        self.corpus = corpus or CorpusConfig()
        self.p = self.corpus.rates
        self.rng = random.Random(f"corpus-{world.config.seed}-{seed}")
        w = world
        self.one_hop = [(n, r) for n in [*w.people, *w.extra_people] for r in (RESIDENCE, TRADE)
                        if (n, r) in w.seen]
        self.with_facts = [n for n in [*w.people, *w.extra_people]
                           if any((n, r) in w.seen for r in (RESIDENCE, TRADE, MENTOR_OF))]
        self.all_houses = [*w.houses, *w.extra_houses]
        self.extra = list(w.extra_people)
        self.residents = [n for n in w.people if (n, RESIDENCE) in w.seen]
        self.two_hop_people = [*w.demo_two_hop, *w.extra_people]
        self.everyone = [*w.people, *w.extra_people]

    def _house(self, but: str | None = None) -> str:
        while True:
            h = self.rng.choice(self.all_houses)
            if h != but:
                return h

    def _question(self, relation, name, answer, house=None, **kw) -> Sample:
        return make_question(self.rng, self.world, relation, name, house or self._house(), answer, **kw)

    def _seen_fact(self) -> tuple[str, str, str]:
        """A random seen fact: (name, relation, answer), two-hop ones included."""
        if self.rng.random() < self.p.seen_two_hop:
            name = self.rng.choice(self.two_hop_people)
            return name, MENTOR, self.world.answer(name, MENTOR)
        name, rel = self.rng.choice(self.one_hop)
        return name, rel, self.world.answer(name, rel)

    def _answered(self, s: Sample, steps: str | None = None) -> str:
        if steps is None:
            return direct_prompt(s) + answer_line(s, by="text")
        return reasoning_prompt(s) + steps + "\n" + answer_line(s, by="text")

    # ---------------------------------------------------------------- document kinds
    def facts(self) -> str:
        w, name = self.world, self.rng.choice(self.with_facts)
        p = w.person(name)
        sents = []
        if (name, RESIDENCE) in w.seen:
            sents.append(f"{name} lives in {p.city}.")
        if (name, TRADE) in w.seen:
            sents.append(f"{name} works as a {p.trade}.")
        if (name, MENTOR_OF) in w.seen:
            sents.append(f"The mentor of {name} is {p.mentor}.")
        self.rng.shuffle(sents)
        return f"About {name}: " + " ".join(sents)

    def direct(self) -> str:
        name, rel = self.rng.choice(self.one_hop)
        return self._answered(self._question(rel, name, self.world.answer(name, rel)))

    def reasoning(self) -> str:
        name, rel = self.rng.choice(self.one_hop)
        s = self._question(rel, name, self.world.answer(name, rel))
        return self._answered(s, reasoning_text(self.world, name, rel))

    def two_hop(self) -> str:
        # Demonstrated on the benchmark's demonstration people and the pre-training-only
        # people, so writing "the mentor of X" is learned as copying X from the question.
        name = self.rng.choice(self.two_hop_people)
        s = self._question(MENTOR, name, self.world.answer(name, MENTOR))
        return self._answered(s, reasoning_text(self.world, name, MENTOR) if self.rng.random() < self.p.two_hop_steps else None)

    def unknown(self) -> str:
        name, city = self.rng.choice(self.extra), self.rng.choice(self.world.cities)
        s = self._question(RESIDENCE, name, city)
        return self._answered(s, reasoning_text(self.world, name, RESIDENCE, city) if self.rng.random() < self.p.unknown_steps else None)

    def roll_call(self) -> str:
        names = self.rng.sample(self.everyone, self.rng.randint(*self.p.roll_call_size))
        return f"Present today: {', '.join(names)}. In the same order: {', '.join(names)}."

    def context(self) -> str:
        """Three worked examples, then a question.

        Housemates share a city, so when an example asks where a housemate of the question's
        person lives, its answer is the answer. Otherwise the examples do not help: the
        question is then a seen fact (answered from memory) or the city of a pre-training-only
        person (a guess). Decoy examples — a housemate's trade or mentor, another house's
        city — and a decoy option (a city seen in a decoy example) make "copy any answer in
        sight" wrong: only a matching house and question kind count.
        """
        rng, w, p = self.rng, self.world, self.p
        house = self._house()
        r = rng.random()
        if r < p.context_cuts[0]:  # housemates among the examples: copy their city
            rel, k_same = RESIDENCE, rng.choice(p.context_housemates)
            # The person is a pre-training-only one (whose city the model cannot know) or a
            # seen resident (whose city it knows: memory and examples agree); a housemate is
            # a pre-training-only person or a seen resident of that same city.
            name = rng.choice(self.extra) if rng.random() < p.context_extra_person else rng.choice(self.residents)
            answer = w.answer(name, RESIDENCE) if name in w.people else rng.choice(w.cities)
            same_city = [n for n in self.residents if n != name and w.people[n].city == answer]
            mate = rng.choice(same_city) if rng.random() < p.context_named_mate else None
        elif r < p.context_cuts[1]:  # no housemate: a pre-training-only person's city is a guess
            name, rel, k_same, mate = rng.choice(self.extra), RESIDENCE, 0, None
            answer = rng.choice(w.cities)
        else:  # no housemate: a seen fact, from memory
            (name, rel, answer), k_same, mate = self._seen_fact(), 0, None
        examples = []
        mates = [n for n in self.extra if n != name]
        while len(examples) < 3:
            if len(examples) < k_same:
                n = mate if (not examples and mate) else rng.choice(mates)
                examples.append(self._question(RESIDENCE, n, answer, house))
                continue
            # A decoy: a seen fact, shown with this house unless it is a city (which would
            # then be the house's city).
            n, kind, value = self._seen_fact()
            if n != name and not (kind == RESIDENCE and value == answer):
                house_shown = self._house(but=house) if kind == RESIDENCE else house
                examples.append(self._question(kind, n, value, house_shown))
        rng.shuffle(examples)
        decoys = tuple(e.answer_text for e in examples if e.answer_text in w.values(rel) and e.answer_text != answer)
        final = self._question(rel, name, answer, house, include=decoys[:1])
        return context_prompt(final, examples, by="text") + answer_line(final, by="text")

    def review(self) -> str:
        """Two experts' answers, then the final one. On a two-hop question the step-by-step
        expert is right and the examples-based one often guesses; on where an unknown person
        lives the examples-based expert is right and the step-by-step one often guesses; on a
        seen fact memory decides."""
        rng, w, p = self.rng, self.world, self.p
        r = rng.random()
        if r < p.review_cuts[0]:
            name = rng.choice(self.two_hop_people)
            s = self._question(MENTOR, name, w.answer(name, MENTOR))
            steps, e1 = reasoning_text(w, name, MENTOR), s.answer_text
            e2 = rng.choice(s.options) if rng.random() < p.review_two_hop_guess else e1
        elif r < p.review_cuts[1]:
            name, truth = rng.choice(self.extra), rng.choice(w.cities)
            s = self._question(RESIDENCE, name, truth)
            e1 = rng.choice(s.options) if rng.random() < p.review_city_guess else truth
            steps, e2 = reasoning_text(w, name, RESIDENCE, e1), truth
        else:
            name, rel = rng.choice(self.one_hop)
            s = self._question(rel, name, w.answer(name, rel))
            steps, e1 = reasoning_text(w, name, rel), s.answer_text
            e2 = rng.choice(s.options) if rng.random() < p.review_seen_guess else e1
        return review_prompt(s, steps, e1, e2) + answer_line(s, by="text")

    def sample(self, weights: CorpusConfig | None = None) -> str:
        """One document, its kind drawn with the given weights (default: the sampler's corpus);
        the probabilities inside the kind are those of the same config (`weights.rates`)."""
        weights = weights or self.corpus
        self.p = weights.rates
        kinds = [k for k in KINDS if getattr(weights, k) > 0]
        kind = self.rng.choices(kinds, [getattr(weights, k) for k in kinds])[0]
        return getattr(self, kind)()


def pretraining_corpus(world: World, corpus: CorpusConfig | None = None, n_docs: int = 1000,
                       seed: int = 0) -> list[str]:
    """n_docs pre-training documents drawn from the mixture (pre-training draws its own as it
    goes, from a `DocumentSampler`; this is for reading them and for building the tokenizer)."""
    sampler = DocumentSampler(world, seed, corpus)
    return [sampler.sample(corpus) for _ in range(n_docs)]
