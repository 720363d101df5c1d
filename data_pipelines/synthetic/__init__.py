"""The synthetic edit world: seeded shape scenes, edits in the 7 categories, exact masks."""

from data_pipelines.synthetic.generate import SyntheticExample, make_example, to_record

__all__ = ["SyntheticExample", "make_example", "to_record"]
