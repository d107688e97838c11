"""Distillation losses as pure functions of logits (classification) or raw Gaussian outputs.

Shapes: student logits (batch, classes) or (batch, members, classes); teacher logits
(batch, members, classes). Temperatures divide logits: σ_T(v) = softmax(v / T).
Regression: raw outputs (batch, 2) or (batch, members, 2), mapped to N(μ, σ²) by
``models.gaussian.gaussian_params``.

Every loss computes in at least float32 (:func:`~ensemble_distill.training.full_precision`):
under bf16 autocast the networks' outputs arrive in bf16.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ensemble_distill.models.gaussian import gaussian_params
from ensemble_distill.training import full_precision


def ensemble_log_probs(teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """log p̄_T with p̄_T = (1/M) Σ_m σ_T(z_m): the log of the mean of member *probabilities*.

    Computed as logsumexp_m log σ_T(z_m) − log M, so it never takes the log of a rounded 0.

    Args:
        teacher_logits: (batch, members, classes).

    Returns:
        (batch, classes) log-probabilities.
    """
    members = teacher_logits.shape[1]
    log_probs = F.log_softmax(teacher_logits / temperature, dim=-1)
    return torch.logsumexp(log_probs, dim=1) - math.log(members)


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    alpha: float,
    temperature: float,
) -> Tensor:
    """Hinton et al. 2015 knowledge distillation towards the ensemble mean.

    L = (1 − α)·CE(s, y) + α·T²·KL(p̄_T ‖ σ_T(s)), p̄_T = (1/M) Σ_m σ_T(z_m),
    averaged over the batch. The T² factor keeps gradient magnitudes comparable across T.

    Args:
        student_logits: (batch, classes).
        teacher_logits: (batch, members, classes).
        labels: (batch,); unused when α = 1.
    """
    student_logits, teacher_logits = full_precision(student_logits), full_precision(teacher_logits)
    target = ensemble_log_probs(teacher_logits, temperature)
    student = F.log_softmax(student_logits / temperature, dim=-1)
    # kl_div(input, target) = KL(target ‖ input); both given as log-probabilities.
    kl = F.kl_div(student, target, reduction="batchmean", log_target=True)
    loss = alpha * temperature**2 * kl
    if alpha < 1.0:
        loss = loss + (1.0 - alpha) * F.cross_entropy(student_logits, labels)
    return loss


def hydra_loss(student_logits: Tensor, teacher_logits: Tensor, *, temperature: float) -> Tensor:
    """Hydra's per-head distillation loss (Tran et al. 2020, arXiv 2001.04694).

    L = (1/M) Σ_m T²·KL(σ_T(z_m) ‖ σ_T(h_m)): head m imitates member m; averaged over the batch.

    Args:
        student_logits: (batch, members, classes), head m's logits h_m.
        teacher_logits: (batch, members, classes), member m's logits z_m.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student {tuple(student_logits.shape)} and teacher "
            f"{tuple(teacher_logits.shape)} logits must have the same shape"
        )
    target = F.log_softmax(full_precision(teacher_logits) / temperature, dim=-1)
    student = F.log_softmax(full_precision(student_logits) / temperature, dim=-1)
    kl = F.kl_div(student, target, reduction="none", log_target=True).sum(-1)  # (batch, M)
    return temperature**2 * kl.mean()


def member_mutual_information(logits: Tensor) -> Tensor:
    """Per-example mutual information of member logits (batch, members, classes), in nats:
    MI = H[p̄] − (1/M) Σ_m H[p_m], p_m = σ(z_m), p̄ their mean (Depeweg et al. 2018); (batch,).
    Differentiable (``metrics.mutual_information`` is the float64 metric)."""
    log_p = F.log_softmax(full_precision(logits), dim=-1)
    log_mean = torch.logsumexp(log_p, dim=1) - math.log(logits.shape[1])  # (batch, classes)
    total = -(log_mean.exp() * log_mean).sum(-1)
    expected = -(log_p.exp() * log_p).sum(-1).mean(-1)
    return total - expected


def disagreement_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """(1/B) Σ_b (MI_S(x_b) − MI_T(x_b))²: the members' disagreement itself matched example by
    example (issue 28), beside the per-member KL, which a compact student can satisfy on
    average while its heads agree where the teachers do not. Temperature 1, as MI is read.

    Args:
        student_logits, teacher_logits: (batch, members, classes); members may differ.
    """
    target = member_mutual_information(teacher_logits.detach())
    return (member_mutual_information(student_logits) - target).pow(2).mean()


def dirichlet_nll(log_alpha: Tensor, member_probs: Tensor, *, smoothing: float = 1e-3) -> Tensor:
    """EnD² loss (Malinin et al. 2019): NLL of every member's probabilities under Dir(α).

    −log Dir(π | α) = −log Γ(α₀) + Σ_k log Γ(α_k) − Σ_k (α_k − 1) log π_k, α₀ = Σ_k α_k,
    averaged over members and batch. Member probabilities are smoothed toward uniform,
    π̃ = (1 − ε)·π + ε/C, so that log π̃ stays finite for (near-)one-hot members.

    Args:
        log_alpha: (batch, classes) log-concentrations, α = exp(log_alpha).
        member_probs: (batch, members, classes) the teacher members' probabilities.
    """
    classes = member_probs.shape[-1]
    smoothed = (1.0 - smoothing) * full_precision(member_probs) + smoothing / classes
    alpha = full_precision(log_alpha).exp().unsqueeze(1)  # (batch, 1, classes)
    log_density = (
        torch.lgamma(alpha.sum(-1))
        - torch.lgamma(alpha).sum(-1)
        + ((alpha - 1.0) * smoothed.log()).sum(-1)
    )  # (batch, members)
    return -log_density.mean()


# float32's machine epsilon: the reference code's guard of the proxy precision (K − 1)/(2·MKL).
PROXY_EPS = float(torch.finfo(torch.float32).eps)
# log α above this is clipped before exp in float64 (e^700 ≈ 1e304: a sum of C of them stays
# finite); no trained network gets near it.
_MAX_LOG_ALPHA = 700.0


def dirichlet_kl(alpha: Tensor, beta: Tensor) -> Tensor:
    """KL[Dir(α) ‖ Dir(β)] per row, in closed form:

    log Γ(α₀) − Σ_k log Γ(α_k) − log Γ(β₀) + Σ_k log Γ(β_k) + Σ_k (α_k − β_k)(ψ(α_k) − ψ(α₀)),
    α₀ = Σ_k α_k, β₀ = Σ_k β_k (ψ the digamma function). Non-negative, 0 iff α = β.

    Args:
        alpha, beta: (..., classes) concentrations > 0.

    Returns:
        (...) the divergences.
    """
    alpha0, beta0 = alpha.sum(-1), beta.sum(-1)
    return (
        torch.lgamma(alpha0)
        - torch.lgamma(alpha).sum(-1)
        - torch.lgamma(beta0)
        + torch.lgamma(beta).sum(-1)
        + ((alpha - beta) * (torch.digamma(alpha) - torch.digamma(alpha0).unsqueeze(-1))).sum(-1)
    )


def proxy_dirichlet_target(teacher_logits: Tensor) -> tuple[Tensor, Tensor]:
    """The Proxy-Dirichlet's mean π̂ and estimated precision β̂₀ (Ryabinin, Malinin & Gales
    2021, arXiv 2105.06987, section 4; their code: ``compute_ensemble_stats``, MKL option).

    π̂_k = (1/M) Σ_m π_k^(m), the members' mean probability, and Minka's (2000) closed-form
    approximation of the maximum-likelihood precision of a Dirichlet with mean π̂:

        β̂₀ = (K − 1) / (2·MKL + ε),  MKL = Σ_k π̂_k (log π̂_k − (1/M) Σ_m log π_k^(m)),

    MKL the members' mean KL(π̂ ‖ π^(m)) (≥ 0, 0 iff the members agree), ε = float32's
    machine epsilon as in the reference code: members that agree exactly give β̂₀ =
    (K − 1)/ε (≈ 7.5e7 for K = 10). Computed in float64 from log-softmax (no log of a
    rounded 0); no gradient flows into the teachers.

    Args:
        teacher_logits: (batch, members, classes).

    Returns:
        π̂ (batch, classes) and β̂₀ (batch,), float64.
    """
    members, classes = teacher_logits.shape[1], teacher_logits.shape[-1]
    log_probs = F.log_softmax(teacher_logits.detach().double(), dim=-1)
    log_mean = torch.logsumexp(log_probs, dim=1) - math.log(members)
    mean = log_mean.exp()
    mkl = (mean * (log_mean - log_probs.mean(1))).sum(-1).clamp_min(0.0)
    return mean, (classes - 1) / (2.0 * mkl + PROXY_EPS)


def proxy_dirichlet_loss(logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Proxy-Dirichlet EnD² (Ryabinin, Malinin & Gales, NeurIPS 2021, arXiv 2105.06987): the
    reverse KL from the student's Dirichlet to a Dirichlet fitted to the members,

        L = (1/B) Σ_b KL[Dir(α_b) ‖ Dir(β_b)] / β̂₀_b,   α = e^s + 1,   β_k = β̂₀·π̂_k + 1,

    π̂, β̂₀ from :func:`proxy_dirichlet_target`. The +1 on β is the paper's: it makes the loss,
    up to a term free of α, the reference code's ``rkl_dirichlet_proxy_distillation`` criterion
    −Σ_k π̂_k (ψ(α_k) − ψ(α₀)) − H[Dir(α)]/β̂₀, an expected cross-entropy to the members' mean
    (weight 1 on every example, unlike EnD²'s likelihood, whose gradients grow with 1/π of the
    tail classes) plus an entropy bonus weighted by the members' disagreement 1/β̂₀. The
    division by β̂₀ is the reference's (its released commands, ``--target-offset 1``, divide
    by β̂₀ + K instead; not reproduced). The +1 on α is those commands' model offset 1: at the
    optimum α − 1 = β̂₀π̂, so softmax(s) estimates the members' mean π̂ (the student's point
    prediction, :class:`~ensemble_distill.methods.endd.PriorNetwork`). No temperature (the
    reference code has none). Computed in float64 (β̂₀ reaches ~1e8, where float32's log Γ
    loses the difference), returned in ``logits``' full precision.

    Args:
        logits: (batch, classes) the student's outputs s, α = exp(s) + 1.
        teacher_logits: (batch, members, classes) the members' logits.
    """
    dtype = full_precision(logits).dtype
    mean, precision = proxy_dirichlet_target(teacher_logits)
    beta = precision.unsqueeze(-1) * mean + 1.0
    alpha = logits.double().clamp(max=_MAX_LOG_ALPHA).exp() + 1.0
    return (dirichlet_kl(alpha, beta) / precision).mean().to(dtype)


# --- Regression: Gaussian members N(μ, σ²) from raw outputs (..., 2) ----------------------
# Raw outputs go through ``models.gaussian.gaussian_params``: μ = raw[..., 0],
# σ² = softplus(raw[..., 1]) + MIN_VARIANCE. Layout: (batch, members, 2).


def gaussian_kl(mean_p: Tensor, var_p: Tensor, mean_q: Tensor, var_q: Tensor) -> Tensor:
    """Elementwise KL(N(μp, σp²) ‖ N(μq, σq²)) = ½[log(σq²/σp²) + (σp² + (μp − μq)²)/σq² − 1].

    Non-negative, zero iff μp = μq and σp² = σq². Arguments broadcast against each other.
    """
    return 0.5 * (var_q.log() - var_p.log() + (var_p + (mean_p - mean_q).square()) / var_q - 1.0)


def moment_matched(means: Tensor, variances: Tensor) -> tuple[Tensor, Tensor]:
    """The single Gaussian with the ensemble mixture's mean and variance.

    μ̄ = (1/M) Σ_m μ_m, σ̄² = (1/M) Σ_m σ_m² + (1/M) Σ_m (μ_m − μ̄)² (aleatoric + epistemic;
    METHODS.md, "Teacher: deep ensemble"). Differentiable, unlike the float64
    ``metrics.regression.mixture_moments`` it agrees with.

    Args:
        means: (batch, members) member means.
        variances: (batch, members) member variances.

    Returns:
        (mean (batch,), variance (batch,)).
    """
    mean = means.mean(dim=1)
    epistemic = (means - mean[:, None]).square().mean(dim=1)
    return mean, variances.mean(dim=1) + epistemic


def kd_regression_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Hinton-style KD for regression: fit one Gaussian to the ensemble.

    L = mean over the batch of KL(N(μ̄, σ̄²) ‖ N(μ_s, σ_s²)), with (μ̄, σ̄²) the moment-matched
    teacher (:func:`moment_matched`); the teacher is a detached target. Also Hydra's phase 1
    for regression (METHODS.md, "Hydra").

    Args:
        student: (batch, 2) raw student outputs.
        teacher: (batch, members, 2) raw member outputs.
    """
    if student.dim() != 2 or teacher.dim() != 3 or student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"student {tuple(student.shape)} must be (batch, 2) and teacher "
            f"{tuple(teacher.shape)} (batch, members, 2)"
        )
    target_mean, target_var = moment_matched(*gaussian_params(full_precision(teacher.detach())))
    mean, variance = gaussian_params(full_precision(student))
    return gaussian_kl(target_mean, target_var, mean, variance).mean()


def hydra_regression_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Hydra's per-head loss for regression (Tran et al. 2020, arXiv 2001.04694).

    L = (1/M) Σ_m KL(N(μ_m, σ_m²) ‖ N(μ̂_m, σ̂_m²)): head m (μ̂_m, σ̂_m²) imitates member m
    (μ_m, σ_m²); averaged over the batch; the teacher is a detached target.

    Args:
        student: (batch, members, 2) raw head outputs.
        teacher: (batch, members, 2) raw member outputs.
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
            "outputs must have the same shape"
        )
    target_mean, target_var = gaussian_params(full_precision(teacher.detach()))
    mean, variance = gaussian_params(full_precision(student))
    return gaussian_kl(target_mean, target_var, mean, variance).mean()
