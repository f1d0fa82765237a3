#!/usr/bin/env python3
"""PyTorch peer of equivae's EquiVAE training step, for speed ratios measured in the same run.

The same model (model/equivae.cpp: filters 16,16,32,32,64, H 128, d_r = d_v = 16, Bernoulli
decoder), the same objective (mean over the batch of KL - log p(x | r_y, v)), Adam 1e-3, and the
same complementary-set scheme as train/sampler.cpp: per class in the batch a pool of the batch's
own rows topped up to m + 1 rows, each point's set = m pool rows other than itself, every used
image encoded once, r_y = g(segmented mean of h). Prints one JSON line with images/s.

--labels N: the semi-supervised step of train/trainer.cpp (Trainer::semi_objective) instead, N
labels balanced over the classes, the other rows unlabelled. A step takes BATCH unlabelled rows
and as many labelled ones (endless shuffled passes over the labelled rows) and minimises
  -(mean_lab [log p(x | r_y, v) - KL] + mean_lab log q(y|x) + mean_unlab L_unlab)
with L_unlab(x) = sum_y q(y|x) [log p(x | r_y, v_y) - KL_y] - KL(q(y|x) || p(y)), p(y) uniform:
the decoder runs once per class for every unlabelled image, each (image, y) pair with its own
set of m ~ U{1..min(m_max, N / K)} labelled images of y (train/sampler.cpp sample_class_sets:
per class a random pool of about BATCH labelled rows, every image of the pool encoded once).
q(y|x): its own conv stack on x, concatenated with r(x) (m = 1) under no_grad (the stop-gradient),
dense 128 and 64 with ReLU and dropout 0.5, K logits. Like the engine, the labelled sets and the
unlabelled pairs' sets are two separate batches for h, and e_x runs once per unlabelled image.

  python3 bench/torch_peer.py --data-dir ../shared/data/mnist --threads 2 --steps 60
  python3 bench/torch_peer.py --data-dir ../shared/data/mnist --threads 2 --steps 40 --labels 810
"""
import argparse
import gzip
import json
import math
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
    def __init__(self, channels=1, image=28, filters=(16, 16, 32, 32, 64), hidden=128, d_r=16, d_v=16, classes=0):
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
        if classes:  # q(y | x) of a semi-supervised model (model/equivae.cpp class_logits)
            self.q_y = ConvEncoder(channels, filters, sizes[-1], H)
            self.q_y_dense = nn.Sequential(nn.Linear(H + d_r, 128), nn.ReLU(), nn.Dropout(0.5),
                                           nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, classes))

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

    def elbo(self, e_x, x, r):
        """Per row: log p(x | r, v) - KL(q(v | r, x) || N(0, I)), one sample of v; e_x = self.e_x(x)."""
        c = torch.cat([e_x, F.relu(self.e_r(r))], 1)
        mu, logvar = self.mu(c), self.logvar(c)
        v = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        logits = self.decode(r, v)
        loglik = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1)
        return loglik - kl

    def loss(self, x, r):
        return -self.elbo(self.e_x(x), x, r).mean()

    def class_logits(self, x):
        with torch.no_grad():  # stop_grad(r(x)), r with m = 1
            r = self.g(self.h(x))
        return self.q_y_dense(torch.cat([self.q_y(x), r], 1))

    def semi_loss(self, x_l, y_l, r_l, x_u, r_pairs):
        """-(mean_lab [L_lab + log q(y|x)] + mean_unlab L_unlab), r_pairs[i K + y] = r_y of unlabelled image i."""
        log_q = F.log_softmax(self.class_logits(x_l), 1).gather(1, y_l[:, None]).mean()
        n, classes = x_u.shape[0], r_pairs.shape[0] // x_u.shape[0]
        elbo_y = self.elbo(self.e_x(x_u).repeat_interleave(classes, 0), x_u.repeat_interleave(classes, 0),
                           r_pairs).view(n, classes)
        log_q_u = F.log_softmax(self.class_logits(x_u), 1)
        q_u = log_q_u.exp()
        unlab = (q_u * elbo_y).sum(1) - (q_u * (log_q_u + math.log(classes))).sum(1)  # KL to a uniform p(y)
        return self.loss(x_l, r_l) - log_q - unlab.mean(), unlab.mean().detach()


def complementary_sets(batch, labels, by_class, m_max, rng):
    """The scheme of train/sampler.cpp (not its random numbers)."""
    present = sorted(set(labels[batch].tolist()))
    m = int(rng.integers(1, min(m_max, *(len(by_class[c]) - 1 for c in present)) + 1))
    pools = {}
    for c in present:
        pool = list(dict.fromkeys(int(b) for b in batch if labels[b] == c))
        extra = [r for r in rng.permutation(by_class[c])[: m + 1 + len(pool)] if r not in pool]
        pools[c] = pool + extra[: max(0, m + 1 - len(pool))]
    return gather_sets(rng.choice([r for r in pools[labels[b]] if r != b], m, replace=False) for b in batch)


def class_sets(n, by_class, m, rng):
    """Sets of m labelled images of class y for each (image i, y) in row i K + y: train/sampler.cpp
    sample_class_sets's scheme (not its random numbers)."""
    pools = [rng.permutation(rows)[:max(m, n)] for rows in by_class]
    return gather_sets(rng.choice(pool, m, replace=False) for _ in range(n) for pool in pools)


def gather_sets(sets):
    """Each distinct image of the sets once: the rows to encode, and the sets' offsets and members
    into them (the engine's segmented-mean layout)."""
    images, index, offsets, members = [], {}, [0], []
    for chosen in sets:
        for r in chosen:
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
    ap.add_argument("--m-max", type=int, default=1)  # train_mnist's default (TrainConfig::m_max)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--compile", action="store_true", help="torch.compile the step's model (Inductor)")
    ap.add_argument("--labels", type=int, default=0, help="semi-supervised step with N labels (0: supervised)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    x_all = load_idx_images(os.path.join(a.data_dir, "train-images-idx3-ubyte.gz"))[:55000]
    y_all = load_idx_labels(os.path.join(a.data_dir, "train-labels-idx1-ubyte.gz"))[:55000]
    by_class = [np.flatnonzero(y_all == c) for c in range(10)]
    dev = torch.device(a.device)
    semi = a.labels > 0
    model = EquiVAE(classes=10 if semi else 0).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # torch.compile of the functions a step calls (the set sizes vary, so dynamic shapes).
    class_latent, loss_fn, semi_fn = model.class_latent, model.loss, model.semi_loss
    if a.compile:
        class_latent = torch.compile(model.class_latent, dynamic=True)
        loss_fn = torch.compile(model.loss, dynamic=True)
        semi_fn = torch.compile(model.semi_loss, dynamic=True)
    x_of = lambda rows: torch.from_numpy(x_all[rows]).to(dev)
    latent = lambda sets: class_latent(x_of(sets[0]), sets[1].to(dev), sets[2].to(dev))
    order = rng.permutation(len(x_all))
    if semi:  # labels / 10 per class; steps walk the unlabelled rows, sets draw on the labelled ones
        labelled = np.sort(np.concatenate([rng.permutation(rows)[:a.labels // 10] for rows in by_class]))
        order = rng.permutation(np.setdiff1d(np.arange(len(x_all)), labelled))
        by_class = [np.intersect1d(rows, labelled) for rows in by_class]
        b_l = min(a.batch_size, len(labelled))
        passes = -(-(a.warmup + a.steps) * b_l // len(labelled))
        labelled_order = np.concatenate([rng.permutation(labelled) for _ in range(passes)])
    images_done, start, unlab = 0, None, None
    for step in range(a.warmup + a.steps):
        if step == a.warmup:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        batch = order[step * a.batch_size:(step + 1) * a.batch_size]
        if semi:
            lab = labelled_order[step * b_l:(step + 1) * b_l]
            r_l = latent(complementary_sets(lab, y_all, by_class, a.m_max, rng))
            m = 1 + int(rng.integers(min(a.m_max, a.labels // 10)))
            r_pairs = latent(class_sets(len(batch), by_class, m, rng))
            loss, unlab = semi_fn(x_of(lab), torch.from_numpy(y_all[lab]).to(dev), r_l, x_of(batch), r_pairs)
        else:
            loss = loss_fn(x_of(batch), latent(complementary_sets(batch, y_all, by_class, a.m_max, rng)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= a.warmup:
            # Semi: unlabelled images, the unit of train_mnist --labels's metrics.jsonl images_per_s
            # (it counts the labelled rows of its steps, one per unlabelled row while N >= batch).
            images_done += len(batch)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "compile": a.compile, "device": a.device,
                      "threads": a.threads,
                      "batch_size": a.batch_size, "steps": a.steps, "images_per_s": images_done / seconds,
                      "parameters": sum(p.numel() for p in model.parameters()), "final_loss": float(loss.detach()),
                      **({"labels": a.labels, "final_unlabelled_elbo": float(unlab)} if semi else {})}))


if __name__ == "__main__":
    main()
