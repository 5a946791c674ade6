"""The offline benchmark: a synthetic knowledge domain and a tiny Llama model that knows part of it.

    from robustft.offline import make_benchmark, load_toy_model
    bench = make_benchmark(seed=0)          # bench.train, bench.test: lists of Sample
    model, tokenizer = load_toy_model(seed=0)  # the shipped model of the same world
"""
from .tokenizer import build_tokenizer
from .toy_model import (TOY_SFT, VANILLA_BAND, ModelConfig, ToyConfig, ToyWeightsError, TrainConfig, cache_dir,
                        load_toy_model, pretrain, shipped_folder)
from .world import (CATEGORIES, MENTOR, RESIDENCE, TRADE, Benchmark, CorpusConfig, DocumentRates, World, WorldConfig,
                    make_benchmark, make_world, pretraining_corpus)

__all__ = ["load_toy_model", "make_benchmark", "make_world", "pretraining_corpus", "build_tokenizer",
           "pretrain", "cache_dir", "shipped_folder", "ToyConfig", "ToyWeightsError", "TOY_SFT", "VANILLA_BAND",
           "DocumentRates", "ModelConfig", "TrainConfig", "WorldConfig", "CorpusConfig",
           "World", "Benchmark", "CATEGORIES", "RESIDENCE", "TRADE", "MENTOR"]
