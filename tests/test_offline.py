"""The offline benchmark: the synthetic domain, the tokenizer, and the toy model's knowledge.

The first group needs no model. The second pre-trains a miniature toy model (seconds) to
check determinism and caching. The third checks the shipped weights (hashes, no cache touched).
The fourth uses the default toy model — the shipped one, or with ROBUSTFT_TOY=pretrain one
pre-trained on this machine — and asserts the properties the book relies on: partial knowledge, reasoning that helps, SFT that helps
with clean labels and hurts with noisy ones.
"""
from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from robustft import inject_noise
from robustft.offline import (MENTOR, RESIDENCE, TOY_SFT, TRADE, VANILLA_BAND, CorpusConfig, ModelConfig, ToyConfig,
                              TrainConfig, WorldConfig, build_tokenizer, load_toy_model, make_benchmark, make_world,
                              pretraining_corpus)
from robustft.offline.world import DocumentSampler, benchmark_facts
from robustft.prompts import direct_prompt, extract_answer, reasoning_prompt

CFG = WorldConfig()
N_PEOPLE = CFG.n_houses * CFG.house_size


# ------------------------------------------------------------------------------ the domain
def test_benchmark_is_deterministic_per_seed():
    a, b, c = make_benchmark(seed=0), make_benchmark(seed=0), make_benchmark(seed=1)
    assert a.train == b.train and a.test == b.test
    assert [s.extra for s in a.train] == [s.extra for s in b.train]
    assert a.train != c.train
    assert make_world(WorldConfig(seed=0)).people == make_world(WorldConfig(seed=0)).people


def test_benchmark_counts_and_categories():
    bench = make_benchmark()
    n = 2 * N_PEOPLE + N_PEOPLE // 2
    assert len(bench.train) == len(bench.test) == n == 360
    for split in (bench.train, bench.test):
        counts = collections.Counter(s.category for s in split)
        assert counts == {RESIDENCE: N_PEOPLE, TRADE: N_PEOPLE, MENTOR: N_PEOPLE // 2}
        assert len({s.id for s in split}) == n
        for s in split:
            assert len(s.options) == 4 and len(set(s.options)) == 4
            assert s.answer == s.clean_answer and s.options[s.answer_index] == bench.world.answer(
                s.extra["person"], s.extra["relation"])
        letters = collections.Counter(s.answer for s in split)
        assert all(0.17 < letters[x] / n < 0.33 for x in "ABCD"), letters


def test_train_and_test_ask_the_same_facts_differently():
    bench = make_benchmark()
    facts = lambda split: sorted((s.extra["person"], s.extra["relation"]) for s in split)  # noqa: E731
    assert facts(bench.train) == facts(bench.test) == sorted(benchmark_facts(bench.world))
    test_by_fact = {(s.extra["person"], s.extra["relation"]): s for s in bench.test}
    same = sum(s.question == test_by_fact[(s.extra["person"], s.extra["relation"])].question
               and s.options == test_by_fact[(s.extra["person"], s.extra["relation"])].options
               for s in bench.train)
    assert same < 0.05 * len(bench.train)  # wording, distractors and order drawn independently


def test_partial_knowledge_rates():
    bench = make_benchmark()
    known = collections.defaultdict(list)
    for s in bench.train:
        known[s.category].append(s.extra["known"])
    rates = {k: np.mean(v) for k, v in known.items()}
    assert 0.45 < rates[RESIDENCE] < 0.75 and 0.35 < rates[TRADE] < 0.65 and 0.65 < rates[MENTOR] < 0.95
    assert 0.5 < np.mean([s.extra["known"] for s in bench.train]) < 0.7


def test_values_are_dealt_evenly_and_housemates_share_a_city():
    world = make_world()
    cities = collections.Counter(world.houses.values())
    assert len(cities) == CFG.n_cities and set(cities.values()) == {CFG.n_houses // CFG.n_cities}
    trades = collections.Counter(p.trade for p in [*world.people.values(), *world.extra_people.values()])
    assert max(trades.values()) - min(trades.values()) <= 1
    by_house = collections.defaultdict(set)
    for p in world.people.values():
        by_house[p.house].add(p.city)
    assert all(len(c) == 1 for c in by_house.values()) and len(by_house) == CFG.n_houses
    # Two-hop subjects and demonstration people are disjoint; every mentor's city is seen.
    assert not set(world.two_hop) & set(world.demo_two_hop)
    assert all((p.mentor, RESIDENCE) in world.seen for p in world.people.values())


_QUESTION = re.compile(r"Question: (?:Where does|In which city does|What is the trade of|What does) "
                       r"(the mentor of )?(\w+) of House (\w+)")


def test_pretraining_text_states_no_unseen_fact_and_no_house_city():
    """No leakage: every statement about a benchmark person is a seen fact and true; a
    question's house is random, so the text never ties a house to its city."""
    world = make_world()
    docs = pretraining_corpus(world, n_docs=4000, seed=3)
    kinds = collections.Counter()
    own_house = questions = 0
    for doc in docs:
        for m in re.finditer(r"(?:We know that |About \w+: | )(the mentor of |The mentor of )?([A-Z]\w+) "
                             r"(lives in|works as a|is) (\w+)\.", doc):
            mentor, name, verb, value = m.groups()
            if name not in world.people:
                continue
            if mentor:
                assert (name, "mentor_of") in world.seen and value == world.people[name].mentor, m.group(0)
            elif verb == "lives in":
                if doc.startswith("Two experts") and "Expert 1" in doc:
                    continue  # an expert's (possibly wrong) reasoning, not a statement of the text
                assert (name, RESIDENCE) in world.seen and value == world.people[name].city, m.group(0)
            elif verb == "works as a":
                if doc.startswith("Two experts"):
                    continue
                assert (name, TRADE) in world.seen and value == world.people[name].trade, m.group(0)
            kinds[verb] += 1
        for m in _QUESTION.finditer(doc):
            mentor, name, house = m.groups()
            if name in world.people:
                questions += 1
                own_house += house == world.people[name].house
    assert kinds["lives in"] > 500 and kinds["works as a"] > 300
    # Named houses are drawn uniformly from 48: the own house turns up by chance only.
    assert questions > 2000 and own_house / questions < 0.05


def test_every_answer_in_the_pretraining_text_is_true_for_benchmark_people():
    world = make_world()
    sampler = DocumentSampler(world, seed=5)
    for _ in range(1500):
        doc = sampler.sample()
        if doc.startswith("Two experts"):
            blocks = [doc]  # only the final answer line is the text's own claim
        else:
            blocks = doc.split("\n\n")[1:]
        for block in blocks:
            q = _QUESTION.search(block)
            answers = re.findall(r"^Answer: (\w+)$", block, re.M)
            if not q or not answers or q.group(2) not in world.people:
                continue
            name, line = q.group(2), q.group(0)
            rel = MENTOR if q.group(1) else TRADE if ("trade" in line or "What does" in line) else RESIDENCE
            assert world.knows(name, rel) or (rel == MENTOR and name in world.demo_two_hop), (name, rel)
            assert answers[-1] == world.answer(name, rel), block


# ----------------------------------------------------------------------------- tokenizer
def test_tokenizer_words_are_single_tokens_and_text_round_trips():
    world = make_world()
    tok = build_tokenizer(pretraining_corpus(world, n_docs=300), world.vocabulary())
    for w in world.vocabulary():
        assert len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1, w
    s = make_benchmark().test[0]
    text = reasoning_prompt(s) + "We know that Zz lives in Qq.\nAnswer: " + s.options[0] + " é✓"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)


def test_cache_key_follows_the_config():
    base = ToyConfig()
    assert base.key() == ToyConfig().key() and len(base.key()) == 16
    variants = [ToyConfig.for_seed(1), replace(base, model=replace(base.model, hidden_size=64)),
                replace(base, train=replace(base.train, steps=10)),
                replace(base, corpus=replace(base.corpus, review=0.0)),
                # the probabilities inside the documents shape the weights too
                replace(base, corpus=replace(base.corpus, rates=replace(base.corpus.rates, seen_two_hop=0.3))),
                replace(base, corpus=replace(base.corpus, rates=replace(base.corpus.rates, context_cuts=(0.5, 0.7)))),
                replace(base, world=replace(base.world, seen_trade=0.4))]
    keys = {v.key() for v in variants}
    assert len(keys) == len(variants) and base.key() not in keys


# ------------------------------------------------------------ miniature pre-training runs
def _mini(seed: int = 0) -> ToyConfig:
    return ToyConfig(world=WorldConfig(seed=seed, n_houses=4, house_size=3, n_cities=4, seen_residence=0.9, n_extra_people=4,
                                       n_extra_houses=2),
                     corpus=CorpusConfig(), model=ModelConfig(hidden_size=32, intermediate_size=64),
                     train=TrainConfig(fact_steps=3, steps=3, batch_tokens=512, warmup_steps=2, seed=seed))


def test_pretraining_is_deterministic_and_cached(tmp_path):
    cfg = _mini()
    m1, t1 = load_toy_model(cfg, cache_dir=tmp_path / "a", progress=False)
    m2, t2 = load_toy_model(cfg, cache_dir=tmp_path / "b", progress=False)  # rebuilt from scratch
    m3, t3 = load_toy_model(cfg, cache_dir=tmp_path / "a", progress=False)  # from the cache
    folder = tmp_path / "a" / f"toy-{cfg.key()}"
    assert (folder / "model.safetensors").exists() and (folder / "toy_config.json").exists()
    s1, s2, s3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    assert s1.keys() == s2.keys() == s3.keys()
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k  # same config, same weights, bit for bit
        assert torch.equal(s1[k], s3[k]), k
    assert t1.get_vocab() == t2.get_vocab() == t3.get_vocab()
    other, _ = load_toy_model(_mini(seed=1), cache_dir=tmp_path / "a", progress=False)
    assert len(list((tmp_path / "a").glob("toy-*"))) == 2
    a, b = s1["model.embed_tokens.weight"], other.state_dict()["model.embed_tokens.weight"]
    assert a.shape != b.shape or not torch.equal(a, b)  # another seed, another model


# ------------------------------------------------------------------- the shipped weights
def test_benchmark_seeds_are_shipped_with_their_hashes():
    from robustft.offline import toy_model

    entries = toy_model.manifest()["models"]
    # The book and the tests use seed 0; `robustft demo --seeds 0 1 2` all three.
    assert sorted(e["seed"] for e in entries) == [0, 1, 2]
    for e in entries:
        cfg = ToyConfig.for_seed(e["seed"])
        assert e["key"] == cfg.key()
        folder = toy_model.shipped_folder(cfg)  # checks every file's sha256
        assert folder == toy_model.WEIGHTS_DIR / f"seed-{e['seed']}"
        assert {"model.safetensors", "tokenizer.json", "config.json", "toy_config.json"} <= set(e["files"])
        meta = json.loads((folder / "toy_config.json").read_text())
        assert meta["key"] == cfg.key() and meta["config"] == json.loads(json.dumps(cfg.as_dict()))
    assert toy_model.shipped_folder(_mini()) is None  # other configs are pre-trained


def test_a_changed_shipped_file_is_a_clear_error(tmp_path, monkeypatch):
    from robustft.offline import ToyWeightsError, toy_model

    shutil.copytree(toy_model.WEIGHTS_DIR, tmp_path / "toy-models")
    monkeypatch.setattr(toy_model, "WEIGHTS_DIR", tmp_path / "toy-models")
    monkeypatch.setattr(toy_model, "MANIFEST", tmp_path / "toy-models" / "manifest.json")
    weights = tmp_path / "toy-models" / "seed-0" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    # source="auto" stated: this test is about the shipped path, also when $ROBUSTFT_TOY=pretrain.
    with pytest.raises(ToyWeightsError, match=r"seed-0/model\.safetensors: sha256 .* differs .*manifest\.json"):
        load_toy_model(seed=0, cache_dir=tmp_path / "cache", source="auto")
    assert not (tmp_path / "cache").exists()  # no silent fallback to pre-training
    weights.unlink()
    with pytest.raises(ToyWeightsError, match="missing"):
        load_toy_model(seed=0, cache_dir=tmp_path / "cache", source="auto")


def test_source_pretrain_ignores_the_shipped_weights(tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    from robustft.offline import toy_model

    cfg = ToyConfig.for_seed(0)
    shipped = toy_model.shipped_folder(cfg)
    # A stand-in for a model pre-trained on this machine: the shipped one, one weight changed.
    cached = toy_model.cache_folder(cfg, tmp_path)
    shutil.copytree(shipped, cached)
    state = load_file(cached / "model.safetensors")
    state["model.norm.weight"] = state["model.norm.weight"] + 1.0
    save_file(state, cached / "model.safetensors", metadata={"format": "pt"})

    def norm(model):
        return model.state_dict()["model.norm.weight"]

    monkeypatch.delenv("ROBUSTFT_TOY", raising=False)
    auto, _ = load_toy_model(cfg, cache_dir=tmp_path)
    local, _ = load_toy_model(cfg, cache_dir=tmp_path, source="pretrain")
    assert torch.equal(norm(auto), load_file(shipped / "model.safetensors")["model.norm.weight"])
    assert torch.equal(norm(local), norm(auto) + 1.0)
    monkeypatch.setenv("ROBUSTFT_TOY", "pretrain")
    assert torch.equal(norm(load_toy_model(cfg, cache_dir=tmp_path)[0]), norm(local))
    monkeypatch.setenv("ROBUSTFT_TOY", "cached")
    with pytest.raises(ValueError, match="ROBUSTFT_TOY"):
        load_toy_model(cfg, cache_dir=tmp_path)


def test_shipped_model_loads_without_touching_cache_or_home(tmp_path):
    """A fresh machine: empty $HOME and $ROBUSTFT_CACHE. The toy model loads from the package
    and nothing is written to either folder."""
    home, cache = tmp_path / "home", tmp_path / "cache"
    home.mkdir()
    cache.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ROBUSTFT_TOY", "XDG_CACHE_HOME", "HF_HOME")}
    env.update(HOME=str(home), ROBUSTFT_CACHE=str(cache))
    code = ("import robustft\n"
            "lm = robustft.load_model('toy', seed=0)\n"
            "from robustft.offline import make_benchmark\n"
            "acc = robustft.evaluate(lm, make_benchmark(seed=0).test[:40], progress=False).accuracy\n"
            "print(sum(p.numel() for p in lm.model.parameters()), acc)")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    n_params, acc = out.stdout.split()
    assert int(n_params) > 500_000 and 0.25 < float(acc) <= 1.0
    assert list(home.rglob("*")) == [] and list(cache.rglob("*")) == []


# --------------------------------------------------------------- the default toy model
@pytest.fixture(scope="module")
def toy():
    """The default toy model (cached; pre-trained on first use) and its benchmark."""
    from robustft.model import LanguageModel

    model, tokenizer = load_toy_model(progress=False)
    return LanguageModel(model, tokenizer, answer_by="text", name="toy"), make_benchmark()


def _by_known(bench_samples, correct):
    groups = collections.defaultdict(list)
    for s, c in zip(bench_samples, correct):
        groups[s.extra["known"]].append(c)
    return {k: float(np.mean(v)) for k, v in groups.items()}


def test_vanilla_accuracy_shows_partial_knowledge(toy):
    from robustft.evaluate import evaluate

    lm, bench = toy
    one_hop = [s for s in bench.test if s.category != MENTOR]
    result = evaluate(lm, bench.test, progress=False)
    assert VANILLA_BAND[0] <= result.accuracy <= VANILLA_BAND[1]
    r = evaluate(lm, one_hop, progress=False)
    by_known = _by_known(one_hop, r.correct)
    assert by_known[True] >= 0.9  # seen facts: answered from memory
    assert by_known[False] <= 0.4  # unseen facts: a guess among 4 options


def test_step_by_step_writes_reasoning_then_answers_two_hop_questions(toy):
    from robustft.evaluate import evaluate
    from robustft.inference import generate

    lm, bench = toy
    two_hop = [s for s in bench.test if s.category == MENTOR]
    gens = generate(lm, [reasoning_prompt(s) for s in two_hop], max_new_tokens=48, progress=False)
    # One generation in full: the hops, written out, then the answer line.
    s, g = two_hop[0], gens[0]
    print(reasoning_prompt(s) + g.text)
    reasoning, _, answer = g.text.rpartition("Answer:")
    assert re.fullmatch(r"We know that the mentor of \w+ is \w+\. We know that \w+ lives in \w+\.\n", reasoning)
    assert answer.strip() in s.options
    written = [bool(re.fullmatch(r"We know that the mentor of \w+ is \w+\. We know that \w+ lives in \w+\.\nAnswer: \w+", g.text))
               for g in gens]
    assert np.mean(written) >= 0.95
    step_acc = np.mean([extract_answer(g.text, s) == s.answer for g, s in zip(gens, two_hop)])
    direct_acc = evaluate(lm, two_hop, progress=False).accuracy
    assert step_acc >= direct_acc + 0.10, (step_acc, direct_acc)


def test_sft_helps_with_clean_labels_and_hurts_with_noisy_ones(toy):
    from robustft.evaluate import evaluate
    from robustft.finetune import finetune

    lm, bench = toy
    vanilla = evaluate(lm, bench.test, progress=False).accuracy
    acc = {}
    for rate in (0.0, 0.3, 0.7):
        train, _ = inject_noise(bench.train, rate, seed=0)
        tuned = finetune(lm, train, seed=0, progress=False, **TOY_SFT)
        acc[rate] = evaluate(tuned, bench.test, progress=False).accuracy
    assert acc[0.0] >= vanilla + 0.05
    assert acc[0.0] > acc[0.3] > acc[0.7]
    assert acc[0.7] < vanilla
