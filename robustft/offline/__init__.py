"""The offline benchmark: a synthetic knowledge domain and a tiny Llama model that knows part of it."""
