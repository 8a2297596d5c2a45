"""The CSPRNG behind DP noise (secure_rng) and the noise-source policy (noise).

Statistical checks use fresh OS entropy each run: a correct sampler fails the KS
check (p < 1e-4) about once in 10^4 runs; the same check is shown to reject samplers
that are only slightly wrong, so it cannot pass vacuously.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy import stats

from lepton_fed.privacy import secure_rng
from lepton_fed.privacy.noise import (
    OSNoise,
    ReproducibleNoiseWarning,
    SecureNoise,
    SeededNoise,
    check_noise_config,
    noise_source,
)
from lepton_fed.privacy.secure_rng import CryptoRandom

N = 200_000
ALPHA = 1e-4


@pytest.mark.parametrize("cipher", CryptoRandom.CIPHERS)
def test_uniforms_are_exact_53_bit_grid_values_and_uniform(cipher):
    u = CryptoRandom(cipher).uniform(N).numpy()
    assert u.dtype == np.float64 and u.shape == (N,)
    assert u.min() >= 0.0 and u.max() < 1.0
    k = u * 2.0**53
    assert np.array_equal(k, np.floor(k))  # k / 2**53 exactly
    assert stats.kstest(u, "uniform").pvalue > ALPHA
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / N)
    # the 53 bits are all used: low bits of k are balanced
    assert abs((k.astype(np.int64) & 1).mean() - 0.5) < 5 * 0.5 / np.sqrt(N)


@pytest.mark.parametrize("cipher", CryptoRandom.CIPHERS)
@pytest.mark.parametrize("kind", ["standard_normal", "fp_safe_normal"])
def test_normals_pass_ks_mean_and_variance(cipher, kind):
    z = getattr(CryptoRandom(cipher), kind)(N).numpy()
    assert z.dtype == np.float64 and z.shape == (N,)
    assert stats.kstest(z, "norm").pvalue > ALPHA
    assert abs(z.mean()) < 5 / np.sqrt(N)
    assert abs(z.var() - 1.0) < 5 * np.sqrt(2 / N)
    assert np.abs(z).max() < 8.6 * (2 if kind == "fp_safe_normal" else 1)
    # Box-Muller's two outputs (cos half, sin half) are uncorrelated, as are neighbours
    half = N // 2
    assert abs(np.corrcoef(z[:half], z[half : 2 * half])[0, 1]) < 5 / np.sqrt(half)
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 5 / np.sqrt(N)


def test_the_ks_check_has_power_against_a_slightly_wrong_sampler():
    z = CryptoRandom().standard_normal(N).numpy()
    assert stats.kstest(z * 1.05, "norm").pvalue < ALPHA  # 5% too wide: caught
    assert stats.kstest(z + 0.05, "norm").pvalue < ALPHA  # biased by 0.05 sd: caught


def test_odd_and_empty_sizes():
    r = CryptoRandom()
    for n in (0, 1, 7):
        assert r.standard_normal(n).shape == (n,)
        assert r.fp_safe_normal(n).shape == (n,)
        assert r.uniform(n).shape == (n,)
    with pytest.raises(ValueError, match="n must be"):
        r.random_bytes(-1)
    with pytest.raises(ValueError, match="cipher"):
        CryptoRandom("rc4")


def test_streams_never_repeat_across_instances_or_calls():
    a, b = CryptoRandom(), CryptoRandom()
    x, y = a.random_bytes(64), b.random_bytes(64)
    assert x != y and a.random_bytes(64) != x


def test_chacha20_block_counter_starts_at_zero():
    # a random 32-bit start could overflow OpenSSL's counter after a few bytes (seen:
    # "Exceeded the maximum number of bytes ... for this nonce")
    nonces = [secure_rng._fresh_nonce("chacha20") for _ in range(3)]
    assert all(len(n) == 16 and n[:4] == bytes(4) for n in nonces)
    assert len({n[4:] for n in nonces}) == 3
    assert len(secure_rng._fresh_nonce("aes256-ctr")) == 16
    assert secure_rng.REKEY_BYTES <= 2**32 * 64  # a key is retired before the counter ends


def test_rekeys_after_the_byte_limit(monkeypatch):
    monkeypatch.setattr(secure_rng, "REKEY_BYTES", 1024)
    r = CryptoRandom()
    r.random_bytes(1000)
    enc = r._enc
    r.random_bytes(100)  # would cross 1024 bytes: a fresh key first
    assert r._enc is not enc and r._used == 100


def test_a_forked_child_does_not_repeat_the_parents_stream():
    r = CryptoRandom()
    r.random_bytes(16)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: only cryptography and os here, then exit at once
        try:
            os.write(write, r.random_bytes(32))
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 32)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32 and child != r.random_bytes(32)


# ------------------------------------------------------------------ noise sources


@pytest.mark.parametrize("cls", [OSNoise, SecureNoise])
def test_os_sources_ignore_every_seed(cls):
    torch.manual_seed(0)
    np.random.seed(0)
    a = cls().gaussian(1.0, (1000,))
    torch.manual_seed(0)
    np.random.seed(0)
    b = cls().gaussian(1.0, (1000,))
    assert not torch.equal(a, b)
    assert a.dtype == torch.float32 and a.shape == (1000,)


@pytest.mark.parametrize("cls", [OSNoise, SecureNoise])
def test_source_gaussian_has_the_asked_std_shape_and_dtype(cls):
    z = cls().gaussian(0.3, (400, 500), dtype=torch.float64)
    assert z.shape == (400, 500) and z.dtype == torch.float64
    assert z.std().item() == pytest.approx(0.3, rel=0.01)
    assert cls().gaussian(2.0, ()).shape == ()


def test_seeded_source_is_reproducible_and_warns():
    with pytest.warns(ReproducibleNoiseWarning, match="regenerate the noise"):
        a, b, c = SeededNoise(5), SeededNoise(5), SeededNoise(6)
    ga, gb = a.gaussian(1.0, (50,)), b.gaussian(1.0, (50,))
    assert torch.equal(ga, gb) and not torch.equal(ga, c.gaussian(1.0, (50,)))
    assert torch.equal(a.uniform(20), b.uniform(20))
    with pytest.raises(ValueError, match="seed"):
        SeededNoise(-1)


@pytest.mark.filterwarnings("ignore::lepton_fed.privacy.noise.ReproducibleNoiseWarning")
def test_noise_source_picks_by_settings():
    assert noise_source().name == "os"
    assert noise_source(secure_mode=True).name == "secure"
    assert noise_source(reproducible=True, seed=1).name == "seeded"
    with pytest.raises(ValueError, match="exclude each other"):
        noise_source(reproducible=True, seed=1, secure_mode=True)
    with pytest.raises(ValueError, match="simulations only"):
        noise_source(reproducible=True, seed=1, deployment=True)
    with pytest.raises(ValueError, match="needs a seed"):
        noise_source(reproducible=True)
    with pytest.raises(ValueError, match="reproducible=False"):
        noise_source(seed=1)


def _cfg(**privacy):
    return OmegaConf.create({"privacy": {"mode": "dpsgd", **privacy}})


def test_check_noise_config():
    assert check_noise_config(_cfg()) == []  # keys absent = false
    assert check_noise_config(_cfg(secure_mode=True, reproducible=False)) == []
    assert check_noise_config(_cfg(reproducible=True)) == []  # simulation: allowed
    both = check_noise_config(_cfg(secure_mode=True, reproducible=True))
    assert len(both) == 1 and "exclude each other" in both[0]
    real = check_noise_config(_cfg(reproducible=True), deployment=True)
    assert len(real) == 1 and "privacy.reproducible" in real[0]
    bad = check_noise_config(_cfg(reproducible="yes"))
    assert bad == ["privacy.reproducible must be true or false, got 'yes'"]
