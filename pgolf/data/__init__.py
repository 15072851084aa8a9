"""Token datasets in the challenge's format: shards, tokenizers, byte accounting, loaders.

shards     read/write the 256-int32-header + uint16 shard files
bpb        the challenge's byte tables and bits-per-byte formula
tokenizer  train/load SentencePiece models; encode documents; the <unk> audit
loader     TokenStream, DistributedBatcher (training), load_val_tokens/truncate_val
builtin    the offline default corpus (Python's own documentation)
text       datasets from local .txt/.jsonl files
fineweb    the challenge's published FineWeb shards (Hugging Face)
manifest   manifest.json, file hashes, atomic directory replacement
stats      validate a dataset directory and count tokens, documents and bytes
documents  document boundaries: BOS positions, cu_seqlens, segment ids and positions
caseops    the frontier's lossless case transform (encode/decode) and its sidecar byte rule
sidecar    the validation byte sidecar: write rules, read, and the SidecarBytes byte source
packing    the frontier's document-packing training loader (train.loader = "packing")
leak       validation documents found in the training split
verify     `pgolf data verify`: shards, bytes, leak
"""

from pgolf.data.loader import DistributedBatcher, TokenStream, load_val_tokens, truncate_val
from pgolf.data.shards import list_shards, read_header, read_shard, write_shard
from pgolf.data.tokenizer import encode_document, find_tokenizer, load_tokenizer, train_tokenizer

__all__ = [
    "DistributedBatcher",
    "TokenStream",
    "encode_document",
    "find_tokenizer",
    "list_shards",
    "load_tokenizer",
    "load_val_tokens",
    "read_header",
    "read_shard",
    "train_tokenizer",
    "truncate_val",
    "write_shard",
]
