#!/usr/bin/env python3
"""PyTorch peer of equivae's EquiVAE training step, for speed ratios measured in the same run.

The same model (model/equivae.cpp: filters 16,16,32,32,64, H 128, d_r = d_v = 16, Bernoulli
decoder), the same objective (mean over the batch of KL - log p(x | r_y, v)), Adam 1e-3, and the
same complementary-set scheme as train/sampler.cpp: per class in the batch a pool of the batch's
own rows topped up to m + 1 rows, each point's set = m pool rows other than itself, every used
image encoded once, r_y = g(segmented mean of h). Prints one JSON line with images/s.

  python3 bench/torch_peer.py --data-dir ../shared/data/mnist --threads 2 --steps 60
"""
import argparse
import gzip
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def load_idx_images(path):
    with gzip.open(path) if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    n, h, w = (int.from_bytes(data[i:i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(data, np.uint8, offset=16).reshape(n, 1, h, w).astype(np.float32) / 255.0


def load_idx_labels(path):
    with gzip.open(path) if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    return np.frombuffer(data, np.uint8, offset=8).astype(np.int64)


class ConvEncoder(nn.Module):
    def __init__(self, channels, filters, size, hidden):
        super().__init__()
        layers, c = [], channels
        for i, f in enumerate(filters):
            layers += [nn.Conv2d(c, f, 5, stride=1 if i == 0 else 2, padding=2), nn.ReLU()]
            c = f
        self.convs = nn.Sequential(*layers)
        self.dense = nn.Linear(c * size * size, hidden)

    def forward(self, x):
        return F.relu(self.dense(self.convs(x).flatten(1)))


class EquiVAE(nn.Module):
    def __init__(self, channels=1, image=28, filters=(16, 16, 32, 32, 64), hidden=128, d_r=16, d_v=16):
        super().__init__()
        sizes, s = [], image
        for i in range(len(filters)):
            s = (s + 4 - 5) // (1 if i == 0 else 2) + 1
            sizes.append(s)
        self.sizes, self.filters = sizes, filters
        H = hidden
        self.h = ConvEncoder(channels, filters, sizes[-1], H)
        self.g = nn.Sequential(nn.Linear(H, H), nn.ReLU(), nn.Linear(H, d_r))
        self.e_x = ConvEncoder(channels, filters, sizes[-1], H)
        self.e_r = nn.Linear(d_r, H)
        self.mu = nn.Sequential(nn.Linear(2 * H, H), nn.ReLU(), nn.Linear(H, d_v))
        self.logvar = nn.Sequential(nn.Linear(2 * H, H), nn.ReLU(), nn.Linear(H, d_v))
        self.p_r, self.p_v, self.p_joint = nn.Linear(d_r, H), nn.Linear(d_v, H), nn.Linear(2 * H, H)
        self.p_map = nn.Linear(H, filters[-1] * sizes[-1] ** 2)
        deconvs = []
        for i in reversed(range(len(filters))):
            out = filters[i - 1] if i > 0 else channels
            if i > 0:
                target = sizes[i - 1]
                op = target - ((sizes[i] - 1) * 2 - 4 + 5)
                deconvs.append(nn.ConvTranspose2d(filters[i], out, 5, stride=2, padding=2, output_padding=op))
            else:
                deconvs.append(nn.ConvTranspose2d(filters[i], out, 5, stride=1, padding=2))
        self.deconvs = nn.ModuleList(deconvs)

    def class_latent(self, set_images, offsets, members):
        e = self.h(set_images)
        counts = offsets[1:] - offsets[:-1]
        seg = torch.repeat_interleave(torch.arange(len(counts), device=e.device), counts)
        pooled = torch.zeros(len(counts), e.shape[1], device=e.device).index_add_(0, seg, e[members])
        pooled = pooled / counts[:, None]
        return self.g(pooled)

    def decode(self, r, v):
        j = F.relu(self.p_joint(torch.cat([F.relu(self.p_r(r)), F.relu(self.p_v(v))], 1)))
        x = F.relu(self.p_map(j)).view(-1, self.filters[-1], self.sizes[-1], self.sizes[-1])
        for i, d in enumerate(self.deconvs):
            x = d(x) if i + 1 == len(self.deconvs) else F.relu(d(x))
        return x

    def loss(self, x, r):
        c = torch.cat([self.e_x(x), F.relu(self.e_r(r))], 1)
        mu, logvar = self.mu(c), self.logvar(c)
        v = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        logits = self.decode(r, v)
        loglik = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1)
        return (kl - loglik).mean()


def complementary_sets(batch, labels, by_class, m_max, rng):
    """The scheme of train/sampler.cpp (not its random numbers)."""
    present = sorted(set(labels[batch].tolist()))
    m = int(rng.integers(1, min(m_max, *(len(by_class[c]) - 1 for c in present)) + 1))
    pools = {}
    for c in present:
        pool = list(dict.fromkeys(int(b) for b in batch if labels[b] == c))
        extra = [r for r in rng.permutation(by_class[c])[: m + 1 + len(pool)] if r not in pool]
        pools[c] = pool + extra[: max(0, m + 1 - len(pool))]
    images, index, offsets, members = [], {}, [0], []
    for b in batch:
        choices = [r for r in pools[labels[b]] if r != b]
        for r in rng.choice(choices, m, replace=False):
            if r not in index:
                index[r] = len(images)
                images.append(r)
            members.append(index[r])
        offsets.append(len(members))
    return images, torch.tensor(offsets), torch.tensor(members)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="../shared/data/mnist")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--m-max", type=int, default=7)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--compile", action="store_true", help="torch.compile the step's model (Inductor)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    x_all = load_idx_images(os.path.join(a.data_dir, "train-images-idx3-ubyte.gz"))[:55000]
    y_all = load_idx_labels(os.path.join(a.data_dir, "train-labels-idx1-ubyte.gz"))[:55000]
    by_class = [np.flatnonzero(y_all == c) for c in range(10)]
    dev = torch.device(a.device)
    model = EquiVAE().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # torch.compile of the two functions a step calls (the set sizes vary, so dynamic shapes).
    class_latent, loss_fn = model.class_latent, model.loss
    if a.compile:
        class_latent = torch.compile(model.class_latent, dynamic=True)
        loss_fn = torch.compile(model.loss, dynamic=True)
    order = rng.permutation(len(x_all))
    images_done, start = 0, None
    for step in range(a.warmup + a.steps):
        if step == a.warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        batch = order[step * a.batch_size:(step + 1) * a.batch_size]
        images, offsets, members = complementary_sets(batch, y_all, by_class, a.m_max, rng)
        x = torch.from_numpy(x_all[batch]).to(dev)
        r = class_latent(torch.from_numpy(x_all[images]).to(dev), offsets.to(dev), members.to(dev))
        loss = loss_fn(x, r)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= a.warmup:
            images_done += len(batch)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "compile": a.compile, "device": a.device,
                      "threads": a.threads,
                      "batch_size": a.batch_size, "steps": a.steps, "images_per_s": images_done / seconds,
                      "parameters": sum(p.numel() for p in model.parameters()), "final_loss": float(loss)}))


if __name__ == "__main__":
    main()
