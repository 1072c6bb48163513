"""The understanding branch must be able to read its image: a fresh tiny model, trained through the
real layout, mask and loss, learns a one-token answer that only the image decides (is there a
bright square, anywhere?). A broken reading path (a mask that hides the image block, ViT tokens
scattered to the wrong slots, gradients stopped at the connector) leaves it at chance."""

import torch

from unixcxr.data.batches import UnderstandingExample, make_batch
from unixcxr.model.config import tiny
from unixcxr.model.unix import UniX, is_gen_parameter

YES, NO, PROMPT = 100, 101, [50, 51, 52]


def films(labels: list[int], size: int, generator: torch.Generator) -> torch.Tensor:
    """Noise, plus an 8 x 8 bright square at a random place where the label is 1."""
    x = torch.randn(len(labels), 1, size, size, generator=generator) * 0.3
    for i, y in enumerate(labels):
        r, c = torch.randint(0, size - 8, (2,), generator=generator).tolist()
        if y:
            x[i, :, r:r + 8, c:c + 8] += 1.0
    return x.expand(-1, 3, -1, -1)


def batch(config, labels, generator):
    images = films(labels, config.vision.image_size, generator)
    examples = [UnderstandingExample(im, PROMPT, [YES if y else NO]) for im, y in zip(images, labels)]
    return make_batch(config, understanding=examples)


def accuracy_after_training(seed: int, steps: int = 150) -> float:
    torch.manual_seed(seed)
    config = tiny()
    model = UniX(config)
    generator = torch.Generator().manual_seed(seed)
    params = [p for n, p in model.named_parameters() if not is_gen_parameter(n)]
    opt = torch.optim.AdamW(params, lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0)
    for _ in range(steps):
        labels = torch.randint(0, 2, (16,), generator=generator).tolist()
        b = batch(config, labels, generator)
        loss = model(b.sequence, images=b.images)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    labels = [0, 1] * 32
    b = batch(config, labels, generator)
    model.eval()
    with torch.no_grad():
        hidden, _ = model.hidden_states(b.sequence, model.encode_images(b.images))
        logits = model.text_logits(hidden[b.sequence.labels != -100]).view(len(labels), 2, -1)[:, 0]
    said_yes = (logits[:, YES] > logits[:, NO]).long()
    return (said_yes == torch.tensor(labels)).float().mean().item()


def test_understanding_learns_an_answer_only_the_image_decides():
    # trained this way, 9 of 10 seeds reach 100% in 150 steps; one plateaus at chance (the known
    # 'ignore the image first' phase of vision-language training), so two of three must succeed
    results = [accuracy_after_training(seed) for seed in range(3)]
    assert sum(acc >= 0.95 for acc in results) >= 2, results
