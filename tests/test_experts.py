"""Wan 2.2 A14B's two experts in training: a batch's rows run the expert of their own sigma (high noise at and
above the boundary, low below), and the LoRAs and the discriminator's feature taps sit on both experts."""

from __future__ import annotations

import torch

from magicdistill.models.dit import Condition
from magicdistill.models.families.base import RealDiT
from magicdistill.models.families.wan import WAN
from real_fixtures import _wan_transformer

BOUNDARY = 0.875


def _a14b():
    return RealDiT(WAN, _wan_transformer(seed=0), _wan_transformer(seed=1), boundary=BOUNDARY).eval()


def _inputs(sigmas):
    g = torch.Generator().manual_seed(0)
    b = len(sigmas)
    x = torch.randn(b, 16, 3, 4, 4, generator=g)
    cond = Condition(torch.randn(b, 12, 32, generator=g), torch.ones(b, 12, dtype=torch.bool), torch.zeros(b, 32), None)
    return x, torch.tensor(sigmas), cond


@torch.no_grad()
def test_each_row_runs_the_expert_of_its_own_sigma():
    dit = _a14b()
    x, sigma, cond = _inputs([0.2, 0.95, 0.875, 0.5])  # low, high, high (at the boundary), low
    out = dit(x, sigma, cond)
    for i, model in enumerate([dit.transformer_2, dit.transformer, dit.transformer, dit.transformer_2]):
        alone = model(hidden_states=x[i:i + 1], encoder_hidden_states=cond.context[i:i + 1],
                      timestep=sigma[i:i + 1] * 1000, return_dict=False)[0]
        torch.testing.assert_close(out[i:i + 1], alone, atol=1e-5, rtol=0)
    assert (dit.transformer(hidden_states=x[:1], encoder_hidden_states=cond.context[:1], timestep=sigma[:1] * 1000,
                            return_dict=False)[0] - out[:1]).abs().max() > 1e-3  # the experts differ


def test_loras_and_feature_taps_cover_both_experts():
    from magicdistill.models.discriminator import FeatureTap
    from magicdistill.models.experts import experts
    from magicdistill.models.lora import AdapterWeights, SharedLoRA

    dit = _a14b()
    lora = SharedLoRA(experts(dit), rank=4)
    keys = list(lora.state_dict())
    assert any(k.startswith("transformer_2.blocks.") for k in keys) and any(k.startswith("blocks.") for k in keys)
    assert len(keys) == 2 * sum(1 for k in keys if not k.startswith("transformer_2."))
    with torch.no_grad():  # a nonzero LoRA on the low-noise expert only changes the rows below the boundary
        weights = AdapterWeights(lora)
        for k, p in zip(weights.names, weights.tensors):
            if k.startswith("transformer_2.") and "lora_B" in k:
                p.fill_(0.1)
    x, sigma, cond = _inputs([0.2, 0.95, 0.5])
    tap = FeatureTap(experts(dit), ["block:-1"])
    with torch.no_grad():
        with lora.scaled(0.0):
            base = dit(x, sigma, cond)
        with tap.capture() as feats:
            out = dit(x, sigma, cond)
    changed = (out - base).flatten(1).abs().amax(1)
    assert changed[1] == 0 and changed[0] > 1e-3 and changed[2] > 1e-3
    assert len(feats) == 1 and feats[0].shape[0] == 3  # one map per name: the rows of both experts
