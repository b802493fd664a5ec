"""Regenerate sinabs_iaf.nir, the NIR graph that sinabs 3.1.3 exports for a small IAF network,
and sinabs_iaf_run.npz, what sinabs itself computes on a short event stream with it.

Not run by the tests or CI (sinabs is no dependency of spikecast): the committed
file is the contract. To regenerate, in a scratch virtual environment:

    pip install --no-deps sinabs==3.1.3 'nirtorch<2' nir==1.0.8 pbr
    python tests/converters/data/make_sinabs_fixture.py

Weights are multiples of 2^-6, so every sum is exact in float32 and the recorded run is
what any correct IF simulator must reproduce bit for bit. The neurons use sinabs's
SingleSpike (at most one spike per step, as in spikecast; sinabs's default MultiSpike
can emit several) with its default reset by subtraction. The NIR graph does not
record the spike function: sinabs exports the same graph either way.
"""

from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import sinabs.layers as sl
import torch
from sinabs.activation import SingleSpike
from sinabs.nir import to_nir
from torch import nn


def build() -> nn.Sequential:
    gen = torch.Generator().manual_seed(7)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        sl.IAFSqueeze(batch_size=1, spike_threshold=1.0, spike_fn=SingleSpike),
        sl.SumPool2d(2),
        nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False),
        sl.IAFSqueeze(batch_size=1, spike_threshold=8.0, spike_fn=SingleSpike),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 3),
        sl.IAFSqueeze(batch_size=1, spike_threshold=1.0, spike_fn=SingleSpike),
    )
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randint(-24, 40, m.weight.shape, generator=gen) / 64.0)
                if m.bias is not None:
                    m.bias.copy_(torch.randint(-4, 12, m.bias.shape, generator=gen) / 64.0)
    return net


def main() -> None:
    net = build()
    graph = to_nir(net, torch.zeros(1, 2, 8, 8))
    out = Path(__file__).with_name("sinabs_iaf.nir")
    nir.write(out, graph, compression=None)  # type: ignore[arg-type]  (small arrays: no gzip overhead)
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    run(build(), out.with_name("sinabs_iaf_run.npz"))


def run(net: nn.Sequential, out: Path, n_steps: int = 24) -> None:
    """Feed random event counts for n_steps steps; record the hidden IAF spikes and the
    output layer's input current per step."""
    gen = torch.Generator().manual_seed(11)
    events = (torch.rand(n_steps, 2, 8, 8, generator=gen) < 0.3).float()
    seen: dict[int, torch.Tensor] = {}
    for i in (1, 4, 6):
        net[i].register_forward_hook(lambda m, a, y, i=i: seen.__setitem__(i, y.detach().clone()))
    with torch.no_grad():
        net(events)
    np.savez_compressed(
        out,
        events=events.numpy().astype(np.uint8),
        spikes0=seen[1].numpy().astype(np.uint8),
        spikes1=seen[4].numpy().astype(np.uint8),
        current=seen[6].numpy().astype(np.float32),
    )
    print(f"wrote {out}: spikes per layer {seen[1].sum().item()}, {seen[4].sum().item()}")


if __name__ == "__main__":
    main()
