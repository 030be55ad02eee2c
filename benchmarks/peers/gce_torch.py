"""PyTorch peer of one GCE training step (O'Shaughnessy et al. 2020), for side-by-side benchmarks.

The Table 1 CNN classifier (frozen) and the Table 2 VAE, built from jcausal parameters so both
frameworks start from identical weights, and the objective ``-(C + lam D)`` with
``D = -(SSE + KL) / batch`` (the authors' ``VAE_LL_loss``) and ``C`` from Algorithm 2:

- :func:`causal_effect_authors` -- the authors' ``joint_uncond``: a Python loop over the
  ``N_alpha`` draws of alpha, each decoding and classifying ``N_beta`` latents as one batch.
- :func:`causal_effect_batched` -- the strongest straightforward PyTorch: all
  ``N_alpha * N_beta`` latents as one batch.

Both take ``sampler="mc"`` (plain Monte Carlo) or ``"stratified"``: the Latin hypercube draws of
``jcausal.gce.information_flow`` (alpha one draw per stratum, a fresh beta hypercube per alpha),
so speed can be compared at equal algorithm.

Needs the ``bench`` extra (``torch``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, np.float32, copy=True))


class TorchCNN(nn.Module):
    """GCE Table 1 CNN (softmax outputs), weights from ``jcausal.models.GCECNN`` parameters."""

    def __init__(self, params: dict):
        super().__init__()
        p = params
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.fc1 = nn.Linear(12 * 12 * 64, 128)
        self.fc2 = nn.Linear(128, np.shape(p["fc2"]["bias"])[0])
        with torch.no_grad():
            for name in ("conv1", "conv2"):
                getattr(self, name).weight.copy_(_t(p[name]["kernel"]).permute(3, 2, 0, 1))  # HWIO->OIHW
                getattr(self, name).bias.copy_(_t(p[name]["bias"]))
            # jcausal flattens (h, w, c); torch flattens (c, h, w)
            k = _t(p["fc1"]["kernel"]).reshape(12, 12, 64, 128).permute(2, 0, 1, 3).reshape(-1, 128)
            self.fc1.weight.copy_(k.T)
            self.fc1.bias.copy_(_t(p["fc1"]["bias"]))
            self.fc2.weight.copy_(_t(p["fc2"]["kernel"]).T)
            self.fc2.bias.copy_(_t(p["fc2"]["bias"]))

    def forward(self, x):  # (n, 1, 28, 28) -> (n, M) probabilities; dropout off (frozen, eval)
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.nn.functional.max_pool2d(x, 2).flatten(1)
        x = torch.relu(self.fc1(x))
        return torch.softmax(self.fc2(x), dim=-1)


class TorchVAE(nn.Module):
    """GCE Table 2 VAE, weights from ``jcausal.models.vae.conv_vae`` parameters."""

    def __init__(self, params: dict, latent: int):
        super().__init__()
        e, d = params["encoder"], params["decoder"]
        self.conv1 = nn.Conv2d(1, 64, 4, 2, 1)
        self.conv2 = nn.Conv2d(64, 64, 4, 2, 1)
        self.conv3 = nn.Conv2d(64, 64, 4, 1, 0)
        self.mu = nn.Linear(1024, latent)
        self.logvar = nn.Linear(1024, latent)
        self.fc = nn.Linear(latent, 3136)
        self.deconv1 = nn.ConvTranspose2d(64, 64, 4, 1, 1)
        self.deconv2 = nn.ConvTranspose2d(64, 64, 4, 2, 2)
        self.deconv3 = nn.ConvTranspose2d(64, 1, 4, 2, 1)
        with torch.no_grad():
            for name in ("conv1", "conv2", "conv3"):
                getattr(self, name).weight.copy_(_t(e[name]["kernel"]).permute(3, 2, 0, 1))
                getattr(self, name).bias.copy_(_t(e[name]["bias"]))
            for name in ("mu", "logvar"):
                src = e["mean" if name == "mu" else "log_var"]
                k = _t(src["kernel"]).reshape(4, 4, 64, latent).permute(2, 0, 1, 3).reshape(-1, latent)
                getattr(self, name).weight.copy_(k.T)
                getattr(self, name).bias.copy_(_t(src["bias"]))
            k = _t(d["fc"]["kernel"]).reshape(latent, 7, 7, 64).permute(0, 3, 1, 2).reshape(latent, -1)
            self.fc.weight.copy_(k.T)
            self.fc.bias.copy_(_t(d["fc"]["bias"]).reshape(7, 7, 64).permute(2, 0, 1).reshape(-1))
            for name in ("deconv1", "deconv2", "deconv3"):
                # (k, k, I, O) -> (I, O, k, k)
                getattr(self, name).weight.copy_(_t(d[name]["kernel"]).permute(2, 3, 0, 1))
                getattr(self, name).bias.copy_(_t(d[name]["bias"]))

    def encode(self, x):
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.conv2(h))
        h = torch.relu(self.conv3(h)).flatten(1)
        return self.mu(h), self.logvar(h)

    def decode(self, z):
        h = torch.relu(self.fc(z)).view(-1, 64, 7, 7)
        h = torch.relu(self.deconv1(h))
        h = torch.relu(self.deconv2(h))
        return torch.sigmoid(self.deconv3(h))

    def forward(self, x):
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.decode(z), mu, logvar


def vae_ll_loss(x, xhat, mu, logvar):
    """The authors' ``VAE_LL_loss``: ``(SSE + KL) / batch`` (= ``-D``)."""
    sse = torch.sum((xhat - x) ** 2)
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return (sse + kl) / x.shape[0]


def _entropy(p):
    return -torch.sum(p * torch.log(p.clamp_min(1e-38)), dim=-1)


def normal_draws(shape, sampler="mc"):
    """``N(0, 1)`` draws ``(*batch, n, d)``: plain, or a Latin hypercube over the ``n`` points of
    every batch element (as ``jcausal.gce.objectives.normal_draws``)."""
    if sampler == "mc":
        return torch.randn(*shape)
    n = shape[-2]
    strata = torch.argsort(torch.rand(*shape), dim=-2).to(torch.float32)
    u = ((strata + torch.rand(*shape)) / n).clamp(1.2e-7, 1 - 1.2e-7)
    return torch.special.ndtri(u)


def latent_draws(n_alpha, n_beta, K, L, sampler="mc"):
    """``(alphas (n_alpha, K), betas (n_alpha, n_beta, L))`` as jcausal's ``grid_latents`` draws
    them: fresh betas for every alpha (plain or a Latin hypercube each), or (``"sobol"``) alphas
    a Latin hypercube sorted by the first coordinate and the betas consecutive blocks of one
    scrambled Sobol sequence (PyTorch's own ``SobolEngine``, Owen scrambling)."""
    if sampler != "sobol":
        return normal_draws((n_alpha, K), sampler), normal_draws((n_alpha, n_beta, L), sampler)
    alphas = normal_draws((n_alpha, K), "stratified")
    alphas = alphas[torch.argsort(alphas[:, 0])]
    seed = int(torch.randint(0, 2 ** 31 - 1, ()))
    u = torch.quasirandom.SobolEngine(L, scramble=True, seed=seed).draw(n_alpha * n_beta)
    return alphas, torch.special.ndtri(u.clamp(1.2e-7, 1 - 1.2e-7)).reshape(n_alpha, n_beta, L)


def causal_effect_authors(vae, clf, K, L, n_alpha, n_beta, sampler="mc"):
    """``C`` as in the authors' ``joint_uncond``: a loop over alpha draws, batches of ``n_beta``."""
    I, q = 0.0, 0.0
    alphas, betas = latent_draws(n_alpha, n_beta, K, L, sampler)
    for i in range(n_alpha):
        alpha = alphas[i:i + 1].expand(n_beta, K)
        p = clf(vae.decode(torch.cat([alpha, betas[i]], 1))).mean(0)  # p(y | alpha_i)
        I = I - _entropy(p) / n_alpha
        q = q + p / n_alpha
    return I + _entropy(q)


def causal_effect_batched(vae, clf, K, L, n_alpha, n_beta, sampler="mc"):
    """``C`` with all ``n_alpha * n_beta`` latents decoded and classified as one batch."""
    alphas, beta = latent_draws(n_alpha, n_beta, K, L, sampler)
    alpha = alphas[:, None, :].expand(n_alpha, n_beta, K)
    z = torch.cat([alpha, beta], -1).reshape(-1, K + L)
    p = clf(vae.decode(z)).reshape(n_alpha, n_beta, -1).mean(1)
    return _entropy(p.mean(0)) - _entropy(p).mean()


class Peer:
    """One optimizer step of ``-(C + lam D)`` on a batch, the classifier frozen."""

    def __init__(self, clf_params, vae_params, *, K, L, lam, n_alpha, n_beta, lr=5e-4, strategy="authors",
                 sampler="mc"):
        self.clf = TorchCNN(clf_params).eval()
        for p in self.clf.parameters():
            p.requires_grad_(False)
        self.vae = TorchVAE(vae_params, K + L)
        self.K, self.L, self.lam, self.na, self.nb, self.sampler = K, L, lam, n_alpha, n_beta, sampler
        self.effect = {"authors": causal_effect_authors, "batched": causal_effect_batched}[strategy]
        self.opt = torch.optim.Adam(self.vae.parameters(), lr=lr)

    def objective(self, x):
        xhat, mu, logvar = self.vae(x)
        nll = vae_ll_loss(x, xhat, mu, logvar)
        C = self.effect(self.vae, self.clf, self.K, self.L, self.na, self.nb, self.sampler)
        return -C + self.lam * nll, C, -nll

    def step(self, x):
        self.opt.zero_grad()
        loss, C, D = self.objective(x)
        loss.backward()
        self.opt.step()
        return float(loss.detach()), float(C.detach()), float(D.detach())

    @torch.no_grad()
    def evaluate(self, x):
        loss, C, D = self.objective(x)
        return float(loss), float(C), float(D)

    @torch.no_grad()
    def flow(self):
        """One estimate of ``C`` alone (no data term)."""
        return float(self.effect(self.vae, self.clf, self.K, self.L, self.na, self.nb, self.sampler))
