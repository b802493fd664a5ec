"""A CIFAR-10 ResNet (He et al. 2016, the CIFAR variant), trained seeded on the CPU.

    python bench/resnet_cifar.py --blocks 3 --epochs 30 --threads 1   # ResNet-20, as committed (66 min)

ResNet-(6n+2): Conv(3→16, 3)-BN-ReLU, three stages of n basic blocks at 16, 32 and 64
channels (the first block of stages 2 and 3 has stride 2 and a 1x1-conv + BN projection
skip, option B; the others an identity skip), global average pooling, Linear(64→10).
A basic block is relu(bn2(conv2(relu(bn1(conv1(x))))) + skip(x)): the ReLU comes after
the residual sum, which is where the converter expects it (the sum's two weight sets
feed one layer of neurons). No max-pool (average pooling converts exactly); convs have
no bias (BN follows and is folded at conversion).

Training: SGD with Nesterov momentum, one-cycle learning rate, weight decay 5e-4, random
crops of the 4-pixel zero-padded image and horizontal flips (bench/cifar10.py's
``augment``), batch 128, bf16 autocast and channels-last on the CPU; seeded. The same
48,000 / 2,000 fit / held-out split and input normalisation as bench/cifar10.py. A
checkpoint and the recipe JSON are written after every epoch, so a partial run still
leaves a model (the JSON says how many epochs it had).

Needs torch, numpy, Pillow and tqdm, not spikecast.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cifar10 import augment, channel_stats, evaluate, load_cifar10, normalise, split
from common import DATA, MODELS, RESULTS, seed_everything


class BasicBlock(nn.Module):
    """3x3 conv-BN-ReLU, 3x3 conv-BN, + identity or 1x1-conv-BN projection, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs (n basic blocks per stage)."""

    def __init__(self, blocks: int, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        layers: list[nn.Module] = []
        c = 16
        for stage, width in enumerate((16, 32, 64)):
            for k in range(blocks):
                layers.append(BasicBlock(c, width, 2 if stage > 0 and k == 0 else 1))
                c = width
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.layers(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


def name_of(blocks: int) -> str:
    return f"resnet{6 * blocks + 2}_cifar10"


def train(args: argparse.Namespace) -> None:  # noqa: PLR0915  (one linear training run, recorded as it goes)
    torch.set_num_threads(args.threads)
    t_start = time.time()
    xtr, ytr, xte, yte = load_cifar10(Path(args.data))
    fit, held = split(len(xtr), args.seed)
    mean, std = channel_stats(xtr[fit])
    x_fit = torch.from_numpy(normalise(xtr[fit], mean, std))
    y_fit = torch.from_numpy(ytr[fit])
    x_held = torch.from_numpy(normalise(xtr[held], mean, std))
    y_held = torch.from_numpy(ytr[held])
    name = name_of(args.blocks)
    weights = MODELS / f"{name}.pt"
    recipe_path = RESULTS / f"{name}.train.json"

    seed_everything(args.seed)
    model = ResNetCifar(args.blocks).to(memory_format=torch.channels_last)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, momentum=0.9, nesterov=True,
    )  # fmt: skip
    per_epoch = math.ceil(len(x_fit) / args.batch_size)
    if args.max_batches:
        per_epoch = min(per_epoch, args.max_batches)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * per_epoch, pct_start=0.2, div_factor=10.0,
        final_div_factor=100.0,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(args.seed)
    log: list[dict[str, Any]] = []
    recipe: dict[str, Any] = {
        "command": " ".join(["python", "bench/resnet_cifar.py", *sys.argv[1:]]),
        "network": f"ResNet-{6 * args.blocks + 2} (He et al. 2016 CIFAR variant, {args.blocks} basic "
        "block(s) per stage at 16/32/64 channels, 1x1-conv+BN projection skips, ReLU after the sum, "
        "global average pooling, Linear(64->10))",
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs_planned": args.epochs,
        "batches_per_epoch": per_epoch,
        "seed": args.seed,
        "device": "cpu",
        "threads": args.threads,
        "batch_size": args.batch_size,
        "optimizer": f"SGD nesterov momentum 0.9, one-cycle max lr {args.lr}, "
        f"weight decay {args.weight_decay}",
        "precision": "bf16 autocast, channels-last (weights kept in float32)",
        "augmentation": "random 32x32 crop of 4-px zero-padded image, horizontal flip",
        "fit_images": len(fit),
        "input_mean": mean,
        "input_std": std,
        "torch": torch.__version__,
    }
    for epoch in range(args.epochs):
        model.train()
        t0 = time.time()
        order = torch.randperm(len(x_fit), generator=gen)
        total, seen = 0.0, 0
        for k in range(per_epoch):
            idx = order[k * args.batch_size : (k + 1) * args.batch_size]
            xb = augment(x_fit[idx], gen).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(xb), y_fit[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
            if args.checkpoint_every and (k + 1) % args.checkpoint_every == 0:
                torch.save(model.state_dict(), weights)  # a partial run still leaves a model
            if k % 25 == 0:
                print(f"epoch {epoch + 1} batch {k}/{per_epoch} loss {total / seen:.3f} "
                      f"{(time.time() - t0) / (k + 1):.2f} s/batch", flush=True)  # fmt: skip
        entry = {"epoch": epoch + 1, "loss": total / seen, "seconds": time.time() - t0,
                 "holdout_accuracy": evaluate(model, x_held, y_held)}  # fmt: skip
        log.append(entry)
        print(json.dumps(entry), flush=True)
        weights.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), weights)
        recipe.update(epochs_done=epoch + 1, train_seconds=time.time() - t_start, log=log)
        recipe_path.write_text(json.dumps(recipe, indent=2) + "\n")
    test_acc = evaluate(model, torch.from_numpy(normalise(xte, mean, std)), torch.from_numpy(yte))
    recipe.update(ann_test_accuracy_at_training=test_acc, train_seconds=time.time() - t_start)
    recipe_path.write_text(json.dumps(recipe, indent=2) + "\n")
    print(f"ANN test accuracy {test_acc:.4f} -> {weights}", flush=True)


def load(blocks: int, path: Path | None = None) -> nn.Module:
    """The trained model (float32, eval mode) from its state dict."""
    model = ResNetCifar(blocks)
    model.load_state_dict(torch.load(path or MODELS / f"{name_of(blocks)}.pt", map_location="cpu"))
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", type=int, default=3, help="basic blocks per stage (1: ResNet-8, 3: ResNet-20)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--max-batches", type=int, default=None, help="batches per epoch (default: all)")
    p.add_argument("--checkpoint-every", type=int, default=40, help="batches between checkpoints")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default=str(DATA / "cifar10" / "cifar10_jpeg.npz"))
    train(p.parse_args(argv))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
