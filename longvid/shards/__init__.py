"""The on-disk format: records, sampling plans, atomic shard writer, reader, index, ledger.

This room imports nothing else of ours, so trainers and other tools can depend on it alone.
"""

from .catalog import SHARD_TABLE, CompactConfig, DatasetIndex, open_index
from .compact import update_index
from .dataset import DATASET_JSON, DatasetError, finalize, list_layers, read_dataset_json
from .index import (
    read_clips_index,
    read_index_parts,
    read_videos_index,
    repair_index_parts,
    write_index_part,
)
from .layers import LAYER_SCHEMA, layer_dir, read_layer, read_layer_meta, write_layer_meta, write_layer_part
from .lease import DatasetLease, LeaseConfig, LeaseHeldError, LeaseLostError
from .ledger import Ledger, new_run_id, read_ledger
from .reader import iter_shard, iter_tar_samples, read_member, read_record
from .sampling import (
    BUCKET_LABELS,
    TOKENS_PER_FRAME,
    TRAINING_STAGES,
    duration_bucket,
    frame_indices,
    frame_plan,
    time_prompt,
)
from .schema import SCHEMA_VERSION, clip_id_for, normalise_uri, video_id_for
from .storage import LocalStorage, S3Storage, Storage
from .writer import ShardWriter, encode_json, shard_name

__all__ = [
    "BUCKET_LABELS", "CompactConfig", "DatasetIndex", "SHARD_TABLE", "LAYER_SCHEMA", "layer_dir", "read_layer", "read_layer_meta",
    "write_layer_meta", "write_layer_part", "DATASET_JSON", "DatasetError", "DatasetLease", "LeaseConfig",
    "LeaseHeldError", "LeaseLostError", "Ledger", "LocalStorage",
    "S3Storage", "SCHEMA_VERSION", "ShardWriter", "Storage", "TOKENS_PER_FRAME", "TRAINING_STAGES",
    "clip_id_for", "open_index", "update_index", "duration_bucket", "encode_json", "finalize",
    "frame_indices", "frame_plan", "iter_shard", "iter_tar_samples", "list_layers", "new_run_id",
    "normalise_uri", "read_clips_index", "read_dataset_json", "read_index_parts", "read_ledger",
    "read_member", "read_record", "read_videos_index", "repair_index_parts", "shard_name",
    "time_prompt", "video_id_for", "write_index_part",
]
