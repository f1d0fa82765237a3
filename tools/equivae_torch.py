#!/usr/bin/env python3
"""EquiVAE in PyTorch, built from a train_mnist / train_svhn checkpoint alone (docs/model.md).

    import equivae_torch                      # tools/ on sys.path
    model = equivae_torch.load("runs/mnist/best.safetensors")
    r = model.represent(x)                    # x: [n, C, S, S] float, as the engine sees images
    mu, logvar = model.encode_v(x, r)         # q(v | r, x)
    logits = model.decode(r, mu)              # Bernoulli logits (Gaussian: the means)

The architecture and sizes come from the checkpoint's "model" metadata, the parameters from its
tensors under the engine's names (h.conv0.weight, g.out.bias, p.deconv0.weight, ...), which are
also the names of this module's state_dict. The classifier q(y | x) of semi-supervised runs
(q_y.*) is not built. Images must be preprocessed as the run did (pixels in [0, 1]; for a Gaussian
likelihood standardised with the training set's channel statistics): equivae_embed --images
writes them so. The checkpoint is read with checks (sizes inside the file, known dtypes), since it
may come from anywhere; the safetensors package is not needed.
"""
import json
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

KERNEL, PAD = 5, 2


def _conv_out(size, stride):
    return (size + 2 * PAD - KERNEL) // stride + 1


class _Node(nn.Module):
    """A named level of the parameter tree ("q" of "q.mu.dense.weight")."""

    def __init__(self, **children):
        super().__init__()
        for name, child in children.items():
            setattr(self, name, child)


class ConvStack(nn.Module):
    """5x5 convolutions (stride 1, then 2; padding 2; ReLU), flatten, dense + ReLU."""

    def __init__(self, channels, size, filters, hidden):
        super().__init__()
        c = channels
        for i, f in enumerate(filters):
            setattr(self, f"conv{i}", nn.Conv2d(c, f, KERNEL, stride=1 if i == 0 else 2, padding=PAD))
            size = _conv_out(size, 1 if i == 0 else 2)
            c = f
        self.layers = len(filters)
        self.dense = nn.Linear(c * size * size, hidden)

    def forward(self, x):
        for i in range(self.layers):
            x = F.relu(getattr(self, f"conv{i}")(x))
        return F.relu(self.dense(x.flatten(1)))


class EquiVAE(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        C, S, filters = config["channels"], config["image_size"], config["filters"]
        H, dr, dv = config["hidden"], config["d_r"], config["d_v"]
        sizes = [S]
        for i in range(len(filters)):
            sizes.append(_conv_out(sizes[-1], 1 if i == 0 else 2))
        self.map_shape = (filters[-1], sizes[-1], sizes[-1])
        self.h = ConvStack(C, S, filters, H)
        self.g = _Node(dense=nn.Linear(H, H), out=nn.Linear(H, dr))
        self.e_x = ConvStack(C, S, filters, H)
        self.e_r = _Node(dense=nn.Linear(dr, H))
        self.q = _Node(mu=_Node(dense=nn.Linear(2 * H, H), out=nn.Linear(H, dv)),
                       logvar=_Node(dense=nn.Linear(2 * H, H), out=nn.Linear(H, dv)))
        p = _Node(r=_Node(dense=nn.Linear(dr, H)), v=_Node(dense=nn.Linear(dv, H)),
                  joint=_Node(dense=nn.Linear(2 * H, H)), map=_Node(dense=nn.Linear(H, filters[-1] * sizes[-1] ** 2)))
        # Transposed convolutions retrace the encoder's sizes (sizes[1:] backwards to sizes[1]),
        # then a stride-1 one to the image channels.
        self.deconvs = len(filters)
        enc = sizes[1:]
        for j in range(len(filters)):
            i = len(filters) - 1 - j
            cin, cout = filters[i], filters[i - 1] if i > 0 else C
            if i > 0:
                natural = (enc[i] - 1) * 2 - 2 * PAD + KERNEL
                layer = nn.ConvTranspose2d(cin, cout, KERNEL, stride=2, padding=PAD, output_padding=enc[i - 1] - natural)
            else:
                layer = nn.ConvTranspose2d(cin, cout, KERNEL, stride=1, padding=PAD)
            setattr(p, f"deconv{j}", layer)
        if config["likelihood"] == "gaussian":
            p.output_logvar = nn.Parameter(torch.zeros(C))
        self.p = p

    def represent(self, x):
        """r(x) with m = 1: g(h(x))."""
        return self.g.out(F.relu(self.g.dense(self.h(x))))

    def class_latent(self, sets):
        """r_y of one set of images of a class: g of the mean of h over the set."""
        return self.g.out(F.relu(self.g.dense(self.h(sets).mean(0, keepdim=True))))

    def encode_v(self, x, r):
        """Mean and log-variance of q(v | r, x)."""
        c = torch.cat([self.e_x(x), F.relu(self.e_r.dense(r))], 1)
        return (self.q.mu.out(F.relu(self.q.mu.dense(c))), self.q.logvar.out(F.relu(self.q.logvar.dense(c))))

    def decode(self, r, v):
        """p(x | r, v): Bernoulli logits, or the Gaussian means (variance exp(p.output_logvar) per channel)."""
        p = self.p
        joint = F.relu(p.joint.dense(torch.cat([F.relu(p.r.dense(r)), F.relu(p.v.dense(v))], 1)))
        x = F.relu(p.map.dense(joint)).reshape(-1, *self.map_shape)
        for j in range(self.deconvs):
            x = getattr(p, f"deconv{j}")(x)
            if j + 1 < self.deconvs:
                x = F.relu(x)
        return x


def read_safetensors(path):
    """(metadata, {name: numpy array}) of a safetensors file, every header entry checked."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: too short to be a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError(f"{path}: header length {n} exceeds the file size {len(data)}")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError as e:
        raise ValueError(f"{path}: header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header is not a JSON object")
    body = memoryview(data)[8 + n:]
    dtypes = {"F32": np.float32, "F64": np.float64, "I32": np.int32}
    tensors = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = dtypes[e["dtype"]], [int(d) for d in e["shape"]], e["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: tensor {name}: bad header entry {str(e)[:60]}") from None
        count = int(np.prod(shape)) if shape else 1
        if min(shape, default=0) < 0 or not (0 <= begin <= end <= len(body)) or end - begin != count * np.dtype(dtype).itemsize:
            raise ValueError(f"{path}: tensor {name}: data_offsets {begin, end} do not hold its {shape} values")
        tensors[name] = np.frombuffer(body[begin:end], dtype=dtype).reshape(shape)
    return header.get("__metadata__", {}), tensors


def load(path):
    """The EquiVAE of a checkpoint, in evaluation mode, on the CPU in float32."""
    metadata, tensors = read_safetensors(path)
    if "model" not in metadata:
        raise ValueError(f"{path}: no model in the metadata (not an equivae checkpoint)")
    config = json.loads(metadata["model"])
    model = EquiVAE(config)
    state = model.state_dict()
    missing = [k for k in state if k not in tensors]
    if missing:
        raise ValueError(f"{path}: tensors missing: {', '.join(missing[:5])}")
    for name, value in state.items():
        if tuple(tensors[name].shape) != tuple(value.shape):
            raise ValueError(f"{path}: tensor {name} has shape {tensors[name].shape}, the model expects {tuple(value.shape)}")
        state[name] = torch.from_numpy(tensors[name].astype(np.float32))
    model.load_state_dict(state)
    model.classes = json.loads(metadata.get("classes", "[]"))
    return model.eval()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: equivae_torch.py CHECKPOINT   (prints the model it builds)")
    m = load(sys.argv[1])
    print(m.config)
    print(f"{sum(p.numel() for p in m.parameters())} parameters; classes {m.classes}")
