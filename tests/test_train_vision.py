"""Stage 0c: the ViT learns a pretrained network's patch features (EfficientNet-Lite0, offline)."""

import torch

from unixcxr.model.config import tiny
from unixcxr.train.vision import Student, Teacher, feature_distance


def test_feature_distance_resamples_the_teacher_grid_and_is_zero_for_matching_features():
    maps = torch.randn(2, 5, 1, 1).expand(2, 5, 2, 2)  # a 2 x 2 teacher grid (constant: resampling is exact)
    pred = maps[:, :, :1, :1].expand(2, 5, 4, 4).flatten(2).transpose(1, 2)  # 4 x 4 patches
    assert feature_distance(pred * 3.0, maps).abs() < 1e-6  # scale-free
    assert feature_distance(-pred, maps) > 1.99


def test_a_few_distillation_steps_bring_the_vit_closer_to_the_teacher():
    torch.manual_seed(0)
    teacher = Teacher()
    student = Student(tiny().vision, teacher.dim)
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    target = teacher(images)
    assert target.shape == (4, teacher.dim, 2, 2)  # stride 16
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss = feature_distance(student(images), target)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
