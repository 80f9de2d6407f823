"""The parts of transformers the engines build on, checked directly so that a release that
changes them fails here, with a message that says what moved (setup.cfg caps transformers at
the newest version tested; raise the cap only with these tests green)."""

from __future__ import annotations

import inspect

import torch
import transformers
from transformers import AttentionInterface, DynamicCache
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicLayer

from rlhf_env.engine.slots import PrefillLayer, StepLayer

VERSION = transformers.__version__


def _fail(what: str) -> str:
    return (
        f"transformers {VERSION} changed {what}, which rlhf_env.engine relies on; keep "
        "transformers at the version setup.cfg allows, or adapt the engine"
    )


def test_cache_layer_interface_is_what_the_ring_layers_implement():
    abstract = {
        name
        for name, member in inspect.getmembers(CacheLayerMixin)
        if getattr(member, "__isabstractmethod__", False)
    }
    ours = {"lazy_initialization", "update", "get_mask_sizes", "get_seq_length", "get_max_length"}
    assert abstract == ours, _fail(f"CacheLayerMixin's abstract methods (now {sorted(abstract)})")
    for layer in (StepLayer, PrefillLayer):
        assert not getattr(layer, "__abstractmethods__", None), _fail(
            f"what a cache layer must implement ({layer.__name__} lacks "
            f"{sorted(layer.__abstractmethods__)})"
        )
    assert "layers" in inspect.signature(Cache.__init__).parameters, _fail("Cache(layers=...)")


def test_dynamic_layers_hold_keys_and_values_the_dynamic_engine_splices(tokenizer, llama):
    """The dynamic engine reads and replaces ``DynamicLayer.keys`` / ``.values`` (B, H, T, D)
    to splice rows; the next forward must attend over the replaced tensors."""
    cache = DynamicCache()
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    with torch.no_grad():
        llama(input_ids=ids, cache=cache, use_cache=True)
    layers = list(cache.layers)
    assert layers and all(type(layer) is DynamicLayer for layer in layers), _fail(
        "the layers DynamicCache() builds without a config"
    )
    heads = llama.config.num_key_value_heads
    head_dim = llama.config.hidden_size // llama.config.num_attention_heads
    assert tuple(layers[0].keys.shape) == (2, heads, 3, head_dim), _fail(
        "DynamicLayer.keys's layout (batch, kv heads, tokens, head dim)"
    )
    with torch.no_grad():
        before = llama(input_ids=torch.tensor([[11], [11]]), cache=_copy(cache)).logits
        spliced = _copy(cache)
        for layer in spliced.layers:
            layer.keys = layer.keys.clone()
            layer.keys[1] = 0  # row 1 forgets its keys; row 0 is untouched
        after = llama(input_ids=torch.tensor([[11], [11]]), cache=spliced).logits
    torch.testing.assert_close(after[0], before[0], msg=_fail("how a forward reads the cache"))
    assert not torch.allclose(after[1], before[1]), _fail("DynamicLayer.keys as the key store")


def test_a_4d_mask_is_passed_to_attention_unchanged(llama):
    """The static engine builds its own 4-D masks over its cache slots; transformers must pass
    them to attention as they are (a masked-out slot holding garbage changes nothing)."""
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        plain = llama(input_ids=ids).logits[:, -1]
        garbage = torch.tensor([[5, 6, 7, 300, 8]])  # token 300 sits where the mask hides it
        mask = torch.ones(1, 1, 5, 5, dtype=torch.bool).tril()
        mask[..., 3] = False
        mask[0, 0, 3, 3] = True  # the garbage token attends to itself only
        positions = torch.tensor([[0, 1, 2, 3, 3]])
        masked = llama(input_ids=garbage, attention_mask=mask, position_ids=positions)
    torch.testing.assert_close(
        masked.logits[:, -1], plain, atol=1e-5, rtol=0, msg=_fail("the 4-D attention masks")
    )


def test_attention_functions_are_looked_up_by_the_configs_name():
    assert "sdpa" in AttentionInterface._global_mapping, _fail("AttentionInterface's registry")
    from rlhf_env.engine.attention import ONE_TOKEN_ATTENTION, one_token_attention

    assert AttentionInterface._global_mapping[ONE_TOKEN_ATTENTION] is one_token_attention


def _copy(cache: DynamicCache) -> DynamicCache:
    copy = DynamicCache()
    for index, layer in enumerate(cache.layers):
        copy.update(layer.keys.clone(), layer.values.clone(), index)
    return copy
