"""Training shards: written once, streamed across ranks and workers without overlap, resumable."""

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from test_data_loaders import write_mimic_fixture
from unixcxr.cli import main
from unixcxr.data.datasets import ShardLoader, ShardStream, collate_samples
from unixcxr.data.reports import DataError, StudyRecord
from unixcxr.data.shards import ShardIndex, iter_shard, write_shards
from unixcxr.labels import OBSERVATIONS

SIZE, SHARD_SIZE, TRAIN, TEST = 16, 5, 37, 4


def make_records(folder, count, split, seed=0):
    """`count` single-image studies with distinct images (wider than tall, to exercise letterboxing)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        path = folder / f"{split}{i}.png"
        Image.fromarray(rng.integers(0, 255, (20, 30), dtype=np.uint8)).save(path)
        labels = dict.fromkeys(OBSERVATIONS)
        labels["Edema"] = i % 3 - 1
        records.append(StudyRecord(study_id=f"{split}{i}", subject_id=f"p{i}", image_paths=(path,),
                                   image_ids=(f"img{i}",), report=f"FINDINGS: case {i}.", findings=f"case {i}.",
                                   impression="", labels=labels, split=split))
    return records


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    records = make_records(root / "src", TRAIN, "train") + make_records(root / "src", TEST, "test", seed=1)
    write_shards(records, root / "out", size=SIZE, shard_size=SHARD_SIZE, progress=False)
    return root / "out"


def all_keys(split, count):
    return {f"s{split}{i}_img{i}" for i in range(count)}


def epoch_batches(loader):
    return [tuple(batch["key"]) for batch in loader]


def test_shards_hold_every_image_with_its_metadata(shard_dir):
    index = ShardIndex.load(shard_dir)
    train = index.of_split("train")
    assert [s.samples for s in train] == [5, 5, 5, 5, 5, 5, 5, 2] and len(index.of_split("test")) == 1
    samples = dict(iter_shard(shard_dir / train[0].file))
    key, files = next(iter(samples.items()))
    assert set(files) == {"png", "json"}
    meta = json.loads(files["json"])
    i = int(meta["study_id"][len("train"):])
    assert meta["findings"] == f"case {i}." and meta["labels"]["Edema"] == i % 3 - 1 and meta["split"] == "train"
    assert Image.open(io.BytesIO(files["png"])).size == (SIZE, SIZE)
    assert not list(shard_dir.glob(".*.tmp"))  # no temporary file left behind


def test_writing_is_deterministic_and_skips_unreadable_images(tmp_path):
    records = make_records(tmp_path / "src", 6, "train")
    records[2].image_paths[0].write_bytes(b"this is not an image")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        first = write_shards(records, tmp_path / "a", size=SIZE, shard_size=4, progress=False)
    with pytest.warns(UserWarning):
        write_shards(records, tmp_path / "b", size=SIZE, shard_size=4, workers=2, progress=False)
    assert sum(s.samples for s in first.shards) == 5 and "train2.png" in first.skipped[0]
    for shard in first.shards:
        assert (tmp_path / "a" / shard.file).read_bytes() == (tmp_path / "b" / shard.file).read_bytes()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_ranks_and_workers_cover_every_sample_exactly_once(shard_dir, num_workers):
    seen = []
    for rank in range(2):
        stream = ShardStream(shard_dir, "train", batch_size=3, shuffle_buffer=4, rank=rank, world_size=2)
        seen += [k for batch in epoch_batches(ShardLoader(stream, num_workers=num_workers)) for k in batch]
    assert len(seen) == len(set(seen)) == TRAIN and set(seen) == all_keys("train", TRAIN)


def test_samples_are_decoded_images_with_labels(shard_dir):
    loader = ShardLoader(ShardStream(shard_dir, "test", batch_size=4, shuffle=False))
    [batch] = list(loader)
    assert batch["image"].shape == (4, SIZE, SIZE) and 0.0 <= float(batch["image"].min()) <= 1.0
    assert set(batch["key"]) == all_keys("test", TEST) and len(loader) == 1
    assert all(set(labels) == set(OBSERVATIONS) for labels in batch["labels"])
    top, bottom = batch["image"][:, :2], batch["image"][:, -2:]  # 20x30 letterboxed: padded rows
    assert bool((top == top[:, :1, :1]).all()) and bool((bottom == top[:, :1, :1]).all())


def test_epochs_reshuffle_the_same_samples(shard_dir):
    loader = ShardLoader(ShardStream(shard_dir, "train", batch_size=4, shuffle_buffer=8, seed=3))
    first, second = epoch_batches(loader), epoch_batches(loader)
    assert first != second and sorted(sum(first, ())) == sorted(sum(second, ()))
    assert loader.state_dict()["epoch"] == 2


@pytest.mark.parametrize("num_workers,stop_after", [(0, 2), (2, 1), (2, 4), (2, 7)])
def test_a_resumed_run_continues_exactly_where_it_stopped(shard_dir, num_workers, stop_after):
    def make():
        stream = ShardStream(shard_dir, "train", batch_size=3, shuffle_buffer=6, seed=7, rank=1, world_size=2)
        return ShardLoader(stream, num_workers=num_workers)

    reference = make()
    epoch_batches(reference)  # epoch 0; compare on epoch 1 so the epoch is restored too
    uninterrupted = epoch_batches(reference)
    run = make()
    epoch_batches(run)
    head = []
    for batch in run:
        head.append(tuple(batch["key"]))
        if len(head) == stop_after:
            break
    state = json.loads(json.dumps(run.state_dict()))  # as a checkpoint stores it
    assert state["epoch"] == 1 and state["samples_consumed"] == sum(map(len, head))
    resumed = make()
    resumed.load_state_dict(state)
    assert head + epoch_batches(resumed) == uninterrupted


def test_resuming_with_other_settings_is_refused(shard_dir):
    state = ShardLoader(ShardStream(shard_dir, "train", batch_size=3), num_workers=2).state_dict()
    with pytest.raises(DataError, match="same batch size, workers"):
        ShardLoader(ShardStream(shard_dir, "train", batch_size=3), num_workers=1).load_state_dict(state)


def test_missing_shards_give_clear_errors(shard_dir, tmp_path):
    with pytest.raises(DataError, match="unixcxr prepare"):
        ShardStream(tmp_path, "train")
    with pytest.raises(DataError, match="no 'validate' shards"):
        ShardStream(shard_dir, "validate")
    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"\x00garbage" * 200)
    with pytest.raises(DataError, match="broken.tar"):
        list(iter_shard(broken))
    assert tarfile.is_tarfile(shard_dir / ShardIndex.load(shard_dir).shards[0].file)


def test_prepare_cli_turns_a_data_folder_into_shards(tmp_path, capsys):
    data = write_mimic_fixture(tmp_path / "mimic")
    assert main(["prepare", str(data), str(tmp_path / "out"), "--size", "24", "--shard-size", "2",
                 "--workers", "2", "--splits", "train", "test"]) == 0
    assert "train: 2 images in 1 shards" in capsys.readouterr().out
    index = ShardIndex.load(tmp_path / "out")
    assert index.image_size == 24 and {s.split for s in index.shards} == {"train", "test"}
    batch = collate_samples([s for s in ShardStream(tmp_path / "out", "test", shuffle=False)])
    assert batch["image"].shape == (2, 24, 24) and batch["impression"] == ["Pneumonia.", "Pneumonia."]
    assert main(["prepare", str(tmp_path / "nowhere"), str(tmp_path / "o2")]) == 2


def test_synthcxr_folder_prepares_and_streams_every_frontal_image(tmp_path):
    synthcxr = pytest.importorskip("unixcxr.data.synthcxr")
    if not hasattr(synthcxr, "generate_dataset"):
        pytest.skip("the SynthCXR generator is not available yet")
    summary = synthcxr.generate_dataset(tmp_path / "synth", n=20, size=64, seed=1, progress=False)
    assert main(["prepare", str(tmp_path / "synth"), str(tmp_path / "out"), "--size", "32",
                 "--shard-size", "4"]) == 0
    streamed = {}
    for split, count in summary.split_counts.items():
        if count:
            batches = list(ShardLoader(ShardStream(tmp_path / "out", split, batch_size=3, shuffle=False)))
            streamed[split] = sum(len(b["key"]) for b in batches)
            assert all(b["image"].shape[1:] == (32, 32) for b in batches)
    assert streamed == {s: c for s, c in summary.split_counts.items() if c}
