"""The offline benchmark: a synthetic knowledge domain and a tiny Llama model that knows part of it.

    from robustft.offline import make_benchmark, load_toy_model
    bench = make_benchmark(seed=0)          # bench.train, bench.test: lists of Sample
    model, tokenizer = load_toy_model(seed=0)  # pre-trained on the same world (cached)
"""
from .tokenizer import build_tokenizer
from .toy_model import ModelConfig, ToyConfig, TrainConfig, cache_dir, load_toy_model, pretrain
from .world import (CATEGORIES, MENTOR, RESIDENCE, TRADE, Benchmark, CorpusConfig, World, WorldConfig,
                    make_benchmark, make_world, pretraining_corpus)

__all__ = ["load_toy_model", "make_benchmark", "make_world", "pretraining_corpus", "build_tokenizer",
           "pretrain", "cache_dir", "ToyConfig", "ModelConfig", "TrainConfig", "WorldConfig", "CorpusConfig",
           "World", "Benchmark", "CATEGORIES", "RESIDENCE", "TRADE", "MENTOR"]
