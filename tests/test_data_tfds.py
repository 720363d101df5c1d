"""The TFDS builder over converted shards: built and read with tfds.data_source, no TensorFlow."""

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tfds_data_source_reads_converted_shards_without_tensorflow(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        import tensorflow_datasets as tfds
        from data_pipelines.array_record_io import write_shard
        from data_pipelines.schema import CATEGORIES, decode_record
        from data_pipelines.synthetic.source import SyntheticSource
        from data_pipelines.tfds_builder import build_tfds
        from data_pipelines import transforms

        source = SyntheticSource(seed=0, num=9, size=32)
        shards = {str(tmp_path / "shards")!r}
        write_shard(shards + "/synthetic-train.array_record-00000-of-00001",
                    [source[i] for i in range(9)])
        data_dir = build_tfds(shards, {str(tmp_path / "tfds")!r})
        ds = tfds.data_source("edit_shards", data_dir=data_dir, split="train")
        assert len(ds) == 9, len(ds)
        wanted = {{decode_record(source[i]).id: decode_record(source[i]) for i in range(9)}}
        for i in range(9):
            example = ds[i]
            record = wanted[example["id"].decode()]
            assert example["source"] == record.source and example["mask"] == record.mask
            assert example["instruction"].decode() == record.instruction
            assert CATEGORIES[example["category"]] == record.category
            assert transforms.decode_image(example["target"]).shape == (32, 32, 3)
        assert "tensorflow" not in sys.modules, "TensorFlow was imported"
        print("ok")
        """
    )
    env = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=180)  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]

    # A fresh process that only has tensorflow_datasets finds the prepared dataset by name.
    reader = textwrap.dedent(
        f"""
        import sys
        import tensorflow_datasets as tfds
        ds = tfds.data_source("edit_shards", data_dir={str(tmp_path / "tfds")!r}, split="train")
        assert len(ds) == 9 and ds[4]["source"].startswith(b"\\x89PNG")
        assert "tensorflow" not in sys.modules and "data_pipelines" not in sys.modules
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", reader], cwd="/", capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
