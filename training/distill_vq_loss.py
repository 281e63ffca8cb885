"""ListNet distillation loss used by Distill-VQ."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ListNetDistillLoss(nn.Module):
    """ListNet (listwise) distillation of a teacher's scores into a student's.

    For each query i over the same candidate documents j (in-batch documents plus the
    teacher's top-k):

        L = -1/B sum_i sum_j softmax(t_i / tau)_j * log softmax(s_i / tau)_j

    where t are the teacher's (dense, uncompressed) scores and s the student's (quantised)
    scores. Candidates masked out (mask False) take no part in either softmax.

    Sources: Cao et al., "Learning to Rank: From Pairwise Approach to Listwise Approach"
    (ICML 2007, ListNet); Xiao et al., "Distill-VQ: Learning Retrieval Oriented Vector
    Quantization by Distilling Knowledge from Dense Embeddings" (SIGIR 2022), which trains IVF
    centroids and PQ codebooks with it.

    Example:
        >>> loss = ListNetDistillLoss(temperature=1.0)
        >>> t = torch.tensor([[2.0, 0.0]]); s = torch.tensor([[2.0, 0.0]])
        >>> round(float(loss(t, s)), 4)  # cross-entropy of identical distributions = entropy
        0.3653
    """

    def __init__(self, temperature: float = 0.05):
        super().__init__()
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        self.temperature = temperature

    def forward(self, teacher: Tensor, student: Tensor, mask: Tensor | None = None) -> Tensor:
        if teacher.shape != student.shape:
            raise ValueError(f"teacher {tuple(teacher.shape)} and student {tuple(student.shape)} scores differ in shape")
        t = teacher.detach() / self.temperature
        s = student / self.temperature
        if mask is not None:
            neg_inf = torch.finfo(s.dtype).min
            t = t.masked_fill(~mask, neg_inf)
            s = s.masked_fill(~mask, neg_inf)
        p_teacher = torch.softmax(t, dim=-1)
        log_p_student = torch.log_softmax(s, dim=-1)
        # 0 * log(0-ish) from masked entries must not give NaN.
        terms = torch.where(p_teacher > 0, p_teacher * log_p_student, torch.zeros_like(log_p_student))
        return -terms.sum(dim=-1).mean()
