"""Data layer: annotation jsonl, npz features, labels, batching, synthetic data, converters."""
from tdfast.data.annotations import Annotation, load_annotations, parse_record, write_annotations
from tdfast.data.batch import Batch
from tdfast.data.collate import collate, make_loader
from tdfast.data.dataset import MomentDataset, make_sample
from tdfast.data.features import FeatureStore, l2_normalize, prepare_query, prepare_video, write_npz
from tdfast.data.labels import make_labels
from tdfast.data.synthetic import SyntheticSpec, make_synthetic_dataset, synthetic_batch

__all__ = [
    "Annotation", "Batch", "FeatureStore", "MomentDataset", "SyntheticSpec", "collate", "l2_normalize",
    "load_annotations", "make_labels", "make_loader", "make_sample", "make_synthetic_dataset",
    "parse_record", "prepare_query", "prepare_video", "synthetic_batch", "write_annotations",
    "write_npz",
]
