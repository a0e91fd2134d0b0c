"""Cross-architecture sweep: the shipped handlers answer like transformers on architectures the family tests
do not build (those cover BERT, RoBERTa, DistilBERT, ViT, ConvNeXt).

Every model is a tiny random-init instance of a real architecture built from its config (no hub), saved
with a tokenizer or preprocessor_config.json shaped like the hub's for that architecture:
- WordPiece (MiniLM's files) for DistilBERT, ELECTRA, MobileBERT and MPNet;
- SentencePiece-style Unigram tokenizers trained here with `tokenizers` and laid out as transformers'
  converters lay out XLM-RoBERTa, DeBERTa-v2/v3 and ALBERT tokenizers (Metaspace "▁" words, collapsed
  runs of spaces, each model's special tokens and pair template; NFKC stands in for the precompiled
  sentencepiece charsmap, which cannot be built offline);
- byte-level BPE: ModernBERT's (a [CLS]/[SEP] template, untrimmed offsets), Llama-3's (a BOS, a reserved
  pad token) and GPT-2's (no special token added, no pad token of its own) for the decoder classifiers,
  which pool each text's last token that is not config.pad_token_id;
- hub-style preprocessor configs, legacy forms included (an int `size`, `feature_extractor_type`), for
  ResNet, Swin/Swin V2, distilled DeiT and LeViT (`...WithTeacher` heads), BEiT/Data2Vec-vision,
  MobileViT, MobileNetV2, DINOv2, ConvNeXt V2, RegNet, SegFormer and Hiera.
slimserve's fp32 export runs in slimserve's own runtime (`LoadedModel.predict`, the code Lambda runs) and
is compared with `transformers.pipeline` (or sentence-transformers' CrossEncoder) on the PyTorch model.
What cannot be served (EfficientNet's preprocessing, architectures optimum does not export, a last-token
classifier without any pad token) must be refused as one `error:` line and one `hint:` line.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import assert_clean_error, run_cli

ROOT = Path(__file__).resolve().parent.parent
WORDPIECE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
STRATEGIES = ("none", "simple", "first", "average", "max")
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}

LONG = ("In 1969 Neil Armstrong and Buzz Aldrin landed on the Moon; Michael Collins orbited in Columbia. "
        "NASA ran Apollo 11 from Houston, Texas, and launched it from Kennedy Space Center in Florida. " * 6)
CITIES = ["Lyon", "Porto", "Bergen", "Cork", "Graz", "Turin", "Ghent", "Malmo", "Riga", "Basel"]
THINGS = ["bridge", "tower", "library", "museum", "station", "harbour", "mill", "chapel", "school", "theatre"]
# No sentence repeats: identical text gives relative-position models (DeBERTa) exactly tied span scores
# whose order would then test float noise, not the handler.
QA_LONG = " ".join(f"The {THINGS[i % 10]} in {CITIES[(i * 3) % 10]} was built in {1200 + 17 * i} by "
                   f"{['masons', 'monks', 'engineers', 'the council'][i % 4]}, and it was repaired "
                   f"{i % 5 + 1} times before {1900 + i}." for i in range(30))
TEXTS = [
    "Barack Obama was born in Honolulu, Hawaii.",
    "Angela Merkel met Emmanuel Macron in Berlin on Tuesday.",
    "José Saramago, Zoë Kravitz and Timothée Chalamet visited Düsseldorf & München.",
    "Kyoto (京都) and 北京大学; Москва — столица России. Αθήνα!",
    "   Leading   spaces,\tand    several     spaces   between words.   ",
    "E-mail alice@example.com, visit https://example.org/a?b=c — prices rose 3.4% in Q2...",
    "Samsung shares jumped 🚀📈 in Seoul; Mr. O'Neill said \"wow\"!!",
    "İstanbul, ǅemal and the ﬁnance ministry (½ of Ⅻ) — naïve café coöperation.",
    "Hello",
    "",
    LONG,
]
QA_CASES = [
    ("When was the lighthouse completed?",
     ("The Skerryvore lighthouse stands on a reef south-west of Tiree. It was designed by Alan Stevenson and "
     "completed in 1844; at 48 metres it is the tallest lighthouse in Scotland.")),
    ("What is the total due?", "Invoice 2024-0871: total due 1,440.00 GBP (VAT 240.00), payable by 3 June 2024."),
    ("Who built the chapel in Riga?", QA_LONG),
    ("Quelle est la hauteur ?", "La tour mesure 330 mètres et fut achevée en 1889 à Paris."),
    ("what?", "😀 emoji 🚀 café naïve\n\n\tTabs   and  spaces 東京 tower"),
]
QA_PARAMETERS: list[dict[str, Any]] = [
    {}, {"top_k": 3}, {"handle_impossible_answer": True, "top_k": 2}, {"align_to_words": False, "top_k": 3},
    {"max_seq_len": 48, "doc_stride": 16, "top_k": 2},
]


def corpus() -> list[str]:
    """A few hundred sentences to train the tokenizers on (the repository's built-in evaluation texts)."""
    texts = list(TEXTS) + [text for pair in QA_CASES for text in pair]
    for name in ("ner_calib.jsonl", "ner_eval.jsonl", "eval_text.jsonl", "calib_text.jsonl", "qa_eval.jsonl"):
        for line in (ROOT / "optimizer" / "data" / name).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            texts.extend(str(v) for v in row.values() if isinstance(v, str))
    return texts


# -- tokenizers ------------------------------------------------------------------------------------
# style -> (special tokens in id order, the tokens the pair template uses, the extra normalizers)
SPM_STYLES: dict[str, dict[str, Any]] = {
    "xlm-roberta": {"specials": ["<s>", "<pad>", "</s>", "<unk>"], "last": "<mask>", "cls": "<s>", "sep": "</s>",
                    "unk": "<unk>", "pad": "<pad>", "mask": "<mask>", "double_sep": True},
    "deberta-v2": {"specials": ["[PAD]", "[CLS]", "[SEP]", "[UNK]"], "last": "[MASK]", "cls": "[CLS]",
                   "sep": "[SEP]", "unk": "[UNK]", "pad": "[PAD]", "mask": "[MASK]", "double_sep": False},
    "albert": {"specials": ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"], "last": None, "cls": "[CLS]",
               "sep": "[SEP]", "unk": "<unk>", "pad": "<pad>", "mask": "[MASK]", "double_sep": False},
}


def spm_tokenizer(style: str, converted: bool = False) -> Any:
    """A Unigram "▁" tokenizer laid out like transformers' converter for `style` lays out the real one."""
    from tokenizers import (
        Regex,
        SentencePieceUnigramTokenizer,
        decoders,
        normalizers,
        pre_tokenizers,
        processors,
    )

    spec = SPM_STYLES[style]
    spm = SentencePieceUnigramTokenizer(replacement="▁", add_prefix_space=True)
    spm.train_from_iterator(corpus(), vocab_size=1500, special_tokens=spec["specials"], unk_token=spec["unk"],
                            show_progress=False)
    tok = spm._tokenizer
    if spec["last"]:
        tok.add_special_tokens([spec["last"]])
    collapse = normalizers.Replace(Regex(" {2,}"), " ")
    if style == "xlm-roberta" and converted:  # what SpmConverter writes today: runs of spaces become "▁"
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Strip(left=False, right=True),
                                               normalizers.Replace(Regex(" {2,}"), "▁")])
    elif style == "xlm-roberta":  # the hub's xlm-roberta-base tokenizer.json: charsmap, then runs of spaces
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), collapse])
    elif style == "deberta-v2":  # DebertaV2Converter: (lowercase), strip, charsmap, runs of spaces
        tok.normalizer = normalizers.Sequence([normalizers.Strip(), normalizers.NFKC(), collapse])
    else:  # AlbertConverter: quotes, NFKD + strip accents, lowercase, charsmap, runs of spaces
        tok.normalizer = normalizers.Sequence([
            normalizers.Replace("``", '"'), normalizers.Replace("''", '"'), normalizers.NFKD(),
            normalizers.StripAccents(), normalizers.Lowercase(), normalizers.NFKC(), collapse])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    cls, sep = spec["cls"], spec["sep"]
    if spec["double_sep"]:
        single, pair = f"{cls} $A {sep}", f"{cls} $A {sep} {sep} $B {sep}"
    else:
        single, pair = f"{cls}:0 $A:0 {sep}:0", f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1"
    tok.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))])
    return tok


def save_spm_tokenizer(folder: Path, style: str, max_length: int = 512) -> Any:
    """The tokenizer wrapped in its architecture's *TokenizerFast class and saved (tokenizer.json + config)."""
    from transformers import AlbertTokenizerFast, DebertaV2TokenizerFast, XLMRobertaTokenizerFast

    spec = SPM_STYLES[style]
    cls = {"xlm-roberta": XLMRobertaTokenizerFast, "deberta-v2": DebertaV2TokenizerFast,
           "albert": AlbertTokenizerFast}[style]
    extra = {"bos_token": "<s>", "eos_token": "</s>"} if style == "xlm-roberta" else \
        {"bos_token": "[CLS]", "eos_token": "[SEP]"}
    tokenizer = cls(tokenizer_object=spm_tokenizer(style), cls_token=spec["cls"], sep_token=spec["sep"],
                    unk_token=spec["unk"], pad_token=spec["pad"], mask_token=spec["mask"],
                    model_max_length=max_length, **extra)
    tokenizer.save_pretrained(folder)
    return tokenizer


def copy_wordpiece(folder: Path, minilm_dir: Path, *, segments: bool = True) -> None:
    """MiniLM's WordPiece files (BERT's uncased vocabulary, which DistilBERT and ELECTRA share)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in WORDPIECE_FILES:
        shutil.copy(minilm_dir / name, folder / name)
    if not segments:  # DistilBERT's tokenizer makes no segment ids (the model takes none)
        config = json.loads((folder / "tokenizer_config.json").read_text())
        config["model_input_names"] = ["input_ids", "attention_mask"]
        (folder / "tokenizer_config.json").write_text(json.dumps(config))


def save_gpt2_tokenizer(folder: Path) -> Any:
    """GPT-2's byte-level BPE (no BOS/EOS added, no pad token of its own: pad = eos, as model cards do)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(corpus(), vocab_size=900, min_frequency=1, show_progress=False)
    bpe.add_special_tokens(["<|endoftext|>"])  # the last id, as GPT-2's 50256 (not 0: a pad id of 0 hides bugs)
    tokenizer = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>",
                                  eos_token="<|endoftext|>", unk_token="<|endoftext|>", pad_token="<|endoftext|>",
                                  model_max_length=512)
    tokenizer.save_pretrained(folder)
    return tokenizer


def save_bpe_tokenizer(folder: Path, style: str, max_length: int = 512) -> Any:
    """Byte-level BPE tokenizers of the newer models: ModernBERT's ([CLS] ... [SEP] by a template, so the
    offsets keep the word's leading space: no trimming) and Llama-3's (a BOS first, nothing after; the
    pad token is a reserved special token, as reward-model cards set it)."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"] if style == "modernbert" else \
        ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>"]
    bpe = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=style != "modernbert")
    bpe.train_from_iterator(corpus(), vocab_size=900, min_frequency=1, special_tokens=specials, show_progress=False)
    tok = bpe._tokenizer
    if style == "modernbert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
        names: dict[str, Any] = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
                                 "mask_token": "[MASK]", "model_input_names": ["input_ids", "attention_mask"]}
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
            special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])
        names = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
                 "pad_token": "<|reserved_special_token_0|>", "model_input_names": ["input_ids", "attention_mask"]}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_length, **names)
    tokenizer.save_pretrained(folder)
    return tokenizer


# -- text models -------------------------------------------------------------------------------------
TEXT_ARCHS = ("distilbert", "electra", "xlm-roberta", "deberta-v2", "albert", "mobilebert", "mpnet")


def text_model(folder: Path, arch: str, head: str, minilm_dir: Path, max_length: int = 512,
               **config_extra: Any) -> Any:
    """A tiny random `arch` model with head `head` ("TokenClassification", "QuestionAnswering",
    "SequenceClassification") and its tokenizer (`max_length` tokens), saved in `folder`; returns the
    PyTorch model."""
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer: Any = None
    if arch in ("distilbert", "electra", "mobilebert", "mpnet"):
        copy_wordpiece(folder, minilm_dir, segments=arch in ("electra", "mobilebert"))
        config_path = folder / "tokenizer_config.json"
        config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "model_max_length": max_length}))
        vocab, ids = 30522, {"pad_token_id": 0}
    elif arch in ("modernbert", "llama"):
        tokenizer = save_bpe_tokenizer(folder, arch, max_length)
        vocab, ids = len(tokenizer), {"pad_token_id": tokenizer.pad_token_id}
        if arch == "llama":
            ids.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    elif arch == "gpt2":
        tokenizer = save_gpt2_tokenizer(folder)
        vocab, ids = len(tokenizer), {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
                                      "eos_token_id": tokenizer.eos_token_id}
    else:
        tokenizer = save_spm_tokenizer(folder, arch, max_length)
        vocab, ids = len(tokenizer), {"pad_token_id": tokenizer.pad_token_id}
    defaults: dict[str, dict[str, Any]] = {
        "distilbert": {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64},
        "electra": {"embedding_size": 16, **SMALL},
        "xlm-roberta": {"max_position_embeddings": 514, "type_vocab_size": 1, "bos_token_id": 0, "eos_token_id": 2,
                        **SMALL},
        # v3-style: relative attention, no absolute positions, no segment embedding
        "deberta-v2": {"max_position_embeddings": 512, "relative_attention": True, "position_buckets": 32,
                       "norm_rel_ebd": "layer_norm", "share_att_key": True, "pos_att_type": ["p2c", "c2p"],
                       "position_biased_input": False, "max_relative_positions": -1, "type_vocab_size": 0, **SMALL},
        "albert": {"embedding_size": 16, **SMALL},
        "mobilebert": {"embedding_size": 16, "intra_bottleneck_size": 16, "true_hidden_size": 16,
                       "num_feedforward_networks": 1, **SMALL},
        "mpnet": {"max_position_embeddings": 514, **SMALL},
        "modernbert": {"global_attn_every_n_layers": 2, "local_attention": 16, "max_position_embeddings": 512,
                       "cls_token_id": getattr(tokenizer, "cls_token_id", None),
                       "sep_token_id": getattr(tokenizer, "sep_token_id", None), **SMALL},
        "llama": {"num_key_value_heads": 2, "max_position_embeddings": 512, **SMALL},
        "gpt2": {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 512},
    }
    prefix = {"distilbert": "DistilBert", "electra": "Electra", "xlm-roberta": "XLMRoberta",
              "deberta-v2": "DebertaV2", "albert": "Albert", "gpt2": "GPT2", "mobilebert": "MobileBert",
              "mpnet": "MPNet", "modernbert": "ModernBert", "llama": "Llama"}[arch]
    torch.manual_seed(0)
    config = getattr(transformers, f"{prefix}Config")(vocab_size=vocab, **{**defaults[arch], **ids, **config_extra})
    model = getattr(transformers, f"{prefix}For{head}")(config)
    model.save_pretrained(folder, safe_serialization=True)
    return model


def realistic_ner_head(model: Any, folder: Path, seed: int) -> None:
    """A random classifier puts labels everywhere: redraw it so most tokens are "O" and some runs are
    B-/I- entities (what trained NER output looks like, and what exercises grouping). Its weights are
    scaled to the spread of the hidden states it reads (MobileBERT's are ~30 times smaller than BERT's)."""
    import torch
    from transformers import AutoTokenizer

    head = model.classifier
    seen: list[Any] = []
    hook = head.register_forward_hook(lambda _module, inputs, _output: seen.append(inputs[0]))
    model.eval()
    with torch.no_grad():
        model(**AutoTokenizer.from_pretrained(str(folder))(TEXTS[:4], return_tensors="pt", padding=True))
    hook.remove()
    spread = float(seen[0].std()) or 1.0
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.6 / spread)
        head.bias.zero_()
        head.bias[0] = 3.0
    model.save_pretrained(folder, safe_serialization=True)


def served(folder: Path, work: Path) -> Any:
    """slimserve's fp32 export of `folder`, loaded by the shipped runtime."""
    from slimserve.optimizer.optimize import export_source
    from slimserve.optimizer.sources import resolve_source
    from slimserve.runtime.model_runtime import LoadedModel

    exported = export_source(resolve_source(str(folder)), work)
    return LoadedModel(exported.onnx_path.parent, threads=1, model_file=exported.onnx_path, spec=exported.runtime)


# -- image models ------------------------------------------------------------------------------------
IMAGE_LABELS = ["tabby cat", "golden retriever", "airliner", "banana", "volcano", "teapot"]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# architecture -> its hub checkpoint's preprocessor_config.json (the legacy keys kept), shrunk to tiny sizes
PREPROCESSORS: dict[str, dict[str, Any]] = {
    "resnet": {  # microsoft/resnet-50: ConvNeXt's processor, an int size, shortest edge / crop_pct then crop
        "crop_pct": 0.875, "do_normalize": True, "do_resize": True, "feature_extractor_type": "ConvNextFeatureExtractor",
        "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD, "resample": 3, "size": 40},
    "swin": {  # microsoft/swin-tiny-patch4-window7-224: ViT's processor, an int size (a square warp)
        "do_normalize": True, "do_resize": True, "feature_extractor_type": "ViTFeatureExtractor",
        "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD, "resample": 3, "size": 32},
    "deit": {  # facebook/deit-tiny-patch16-224: resize 256 then a 224 center crop, as ints
        "crop_size": 32, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "DeiTFeatureExtractor", "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD,
        "resample": 3, "size": 37},
    "beit": {  # microsoft/beit-base-patch16-224: no crop, mean/std 0.5, reduce_labels
        "crop_size": 32, "do_center_crop": False, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "BeitFeatureExtractor", "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "reduce_labels": False, "resample": 2, "size": 32},
    "mobilevit": {  # apple/mobilevit-small: shortest edge, rescale, crop, RGB -> BGR, no normalisation
        "crop_size": 32, "do_center_crop": True, "do_flip_channel_order": True, "do_resize": True,
        "feature_extractor_type": "MobileViTFeatureExtractor", "resample": 2, "size": 36},
    "mobilenet_v2": {  # google/mobilenet_v2_1.0_224: the newer dict form
        "crop_size": {"height": 32, "width": 32}, "do_center_crop": True, "do_normalize": True, "do_rescale": True,
        "do_resize": True, "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "MobileNetV2ImageProcessor",
        "image_std": [0.5, 0.5, 0.5], "resample": 2, "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": 37}},
    "dinov2": {  # facebook/dinov2-small-imagenet1k-1-layer: BiT's processor, shortest edge then crop, bicubic
        "crop_size": {"height": 32, "width": 32}, "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True,
        "do_rescale": True, "do_resize": True, "image_mean": IMAGENET_MEAN, "image_processor_type": "BitImageProcessor",
        "image_std": IMAGENET_STD, "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 37}},
    "levit": {  # facebook/levit-128S: a processor the handler does not reproduce (refused)
        "crop_size": {"height": 32, "width": 32}, "do_center_crop": True, "do_normalize": True, "do_rescale": True,
        "do_resize": True, "image_mean": IMAGENET_MEAN, "image_processor_type": "LevitImageProcessor",
        "image_std": IMAGENET_STD, "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 37}},
    "convnextv2": {  # facebook/convnextv2-tiny-1k-224 (as ResNet, in the newer dict form)
        "crop_pct": 0.875, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": IMAGENET_MEAN, "image_processor_type": "ConvNextImageProcessor", "image_std": IMAGENET_STD,
        "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 40}},
    "regnet": {  # facebook/regnet-y-040: ConvNeXt's processor under its old feature-extractor name
        "crop_pct": 0.875, "do_normalize": True, "do_resize": True, "feature_extractor_type": "ConvNextFeatureExtractor",
        "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD, "resample": 3, "size": 36},
    "swinv2": {  # microsoft/swinv2-tiny-patch4-window8-256: ViT's processor, the dict form
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": IMAGENET_MEAN,
        "image_processor_type": "ViTImageProcessor", "image_std": IMAGENET_STD, "resample": 3,
        "rescale_factor": 0.00392156862745098, "size": {"height": 32, "width": 32}},
    "data2vec-vision": {  # facebook/data2vec-vision-base-ft1k: BEiT's processor
        "crop_size": 32, "do_center_crop": False, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "BeitFeatureExtractor", "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "resample": 2, "size": 32},
    "segformer": {  # nvidia/mit-b0: resize to height x width, rescale, normalise (ViT's steps)
        "do_normalize": True, "do_resize": True, "feature_extractor_type": "SegformerFeatureExtractor",
        "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD, "reduce_labels": False, "resample": 2, "size": 32},
    "hiera": {  # facebook/hiera-tiny-224-in1k-hf: BiT's processor
        "crop_size": {"height": 32, "width": 32}, "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True,
        "do_rescale": True, "do_resize": True, "image_mean": IMAGENET_MEAN, "image_processor_type": "BitImageProcessor",
        "image_std": IMAGENET_STD, "resample": 2, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 36}},
    "focalnet": {  # microsoft/focalnet-tiny: BiT's processor; optimum has no ONNX recipe for FocalNet (refused)
        "crop_size": {"height": 32, "width": 32}, "do_center_crop": True, "do_normalize": True, "do_rescale": True,
        "do_resize": True, "image_mean": IMAGENET_MEAN, "image_processor_type": "BitImageProcessor",
        "image_std": IMAGENET_STD, "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 37}},
    "efficientnet": {  # google/efficientnet-b0: a processor the handler does not reproduce (refused)
        "crop_size": {"height": 32, "width": 32}, "do_center_crop": False, "do_normalize": True, "do_rescale": True,
        "do_resize": True, "image_mean": IMAGENET_MEAN, "image_processor_type": "EfficientNetImageProcessor",
        "image_std": [0.47853944, 0.4732864, 0.47434163], "include_top": True, "resample": 0,
        "rescale_factor": 0.00392156862745098, "rescale_offset": False, "size": {"height": 32, "width": 32}},
}
IMAGE_ARCHS = ("resnet", "swin", "deit", "beit", "mobilevit", "mobilenet_v2", "dinov2", "levit", "convnextv2", "regnet",
               "swinv2", "data2vec-vision", "segformer", "hiera")


def calibrate_batchnorm(model: Any) -> None:
    """BatchNorm statistics measured on random images, as training leaves them: with the initial ones
    (mean 0, variance 1) a random ResNet/MobileNet's activations vanish or explode through the layers, so
    every image gets the same answer, or float rounding decides it."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a plain average over the calibration batch
    model.train()
    with torch.no_grad():
        size = getattr(model.config, "image_size", 32)
        height, width = (size, size) if isinstance(size, int) else size
        model(pixel_values=torch.randn(16, 3, height, width, generator=torch.Generator().manual_seed(0)))
    model.eval()


def image_model(folder: Path, arch: str) -> Any:
    """A tiny random `arch` classifier saved with its hub-style preprocessor config; returns the model."""
    import torch
    import transformers

    # initializer_range (where set) is chosen so that the random model's answers differ from image to image
    labels = {"num_labels": len(IMAGE_LABELS), "id2label": dict(enumerate(IMAGE_LABELS)),
              "label2id": {label: i for i, label in enumerate(IMAGE_LABELS)}}
    vit_like = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
    torch.manual_seed(0)
    if arch == "resnet":
        model: Any = transformers.ResNetForImageClassification(transformers.ResNetConfig(
            embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="bottleneck", **labels))
    elif arch == "swin":
        model = transformers.SwinForImageClassification(transformers.SwinConfig(
            image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4, **labels))
    elif arch == "deit":  # the distilled head: the pipeline reads its averaged logits
        model = transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(
            image_size=32, patch_size=8, **vit_like, **labels))
    elif arch == "beit":
        model = transformers.BeitForImageClassification(transformers.BeitConfig(
            image_size=32, patch_size=8, use_mean_pooling=True, use_relative_position_bias=True, **vit_like,
            **labels))
    elif arch == "mobilevit":
        model = transformers.MobileViTForImageClassification(transformers.MobileViTConfig(
            image_size=32, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 48],
            num_attention_heads=2, initializer_range=1.0, **labels))
    elif arch == "mobilenet_v2":
        model = transformers.MobileNetV2ForImageClassification(transformers.MobileNetV2Config(
            image_size=32, depth_multiplier=0.25, **labels))
    elif arch == "dinov2":  # its head reads the class token beside the mean patch token
        model = transformers.Dinov2ForImageClassification(transformers.Dinov2Config(
            image_size=32, patch_size=8, mlp_ratio=2, initializer_range=0.2,
            **{k: v for k, v in vit_like.items() if k != "intermediate_size"}, **labels))
    elif arch == "levit":
        model = transformers.LevitForImageClassificationWithTeacher(transformers.LevitConfig(
            image_size=32, hidden_sizes=[16, 32, 48], num_attention_heads=[1, 2, 3], depths=[1, 1, 1],
            key_dim=[8, 8, 8], initializer_range=0.2, **labels))
    elif arch == "convnextv2":
        model = transformers.ConvNextV2ForImageClassification(transformers.ConvNextV2Config(
            num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], **labels))
    elif arch == "regnet":
        model = transformers.RegNetForImageClassification(transformers.RegNetConfig(
            embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], groups_width=8, **labels))
    elif arch == "swinv2":
        model = transformers.Swinv2ForImageClassification(transformers.Swinv2Config(
            image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4, **labels))
    elif arch == "data2vec-vision":
        model = transformers.Data2VecVisionForImageClassification(transformers.Data2VecVisionConfig(
            image_size=32, patch_size=8, use_mean_pooling=True, **vit_like, **labels))
    elif arch == "segformer":
        model = transformers.SegformerForImageClassification(transformers.SegformerConfig(
            num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32], num_attention_heads=[1, 2],
            patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2], decoder_hidden_size=32, **labels))
    elif arch == "hiera":
        model = transformers.HieraForImageClassification(transformers.HieraConfig(
            image_size=[32, 32], patch_size=[3, 3], patch_stride=[2, 2], patch_padding=[1, 1], embed_dim=16,
            num_heads=[1, 2], depths=[1, 1], query_stride=[2, 2], masked_unit_size=[4, 4], num_query_pool=1, **labels))
    elif arch == "focalnet":
        model = transformers.FocalNetForImageClassification(transformers.FocalNetConfig(
            image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], focal_levels=[2, 2], focal_windows=[3, 3],
            **labels))
    elif arch == "efficientnet":
        model = transformers.EfficientNetForImageClassification(transformers.EfficientNetConfig(
            image_size=32, width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128, **labels))
    else:
        raise ValueError(arch)
    calibrate_batchnorm(model)
    with torch.no_grad():  # trained-like margins between the labels (a random head's are near ties)
        for parameter in model.parameters():
            if parameter.dim() == 2 and parameter.shape[0] == len(IMAGE_LABELS):
                parameter.mul_(40.0)
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSORS[arch]), encoding="utf-8")
    return model.eval()


def text_classifier(folder: Path, arch: str, minilm_dir: Path) -> Any:
    """A three-label classifier; `gpt2-pad-in-config-only`: the pad id only in config.json (the tokenizer
    has none, as GPT-2's); `llama-config-pad-differs`: config.json's pad id is the EOS, the tokenizer's pad
    token another (both as published reward models / classifiers have them)."""
    from transformers import AutoModelForSequenceClassification

    names = {0: "negative", 1: "neutral", 2: "positive"}
    base = {"gpt2-pad-in-config-only": "gpt2", "llama-config-pad-differs": "llama"}.get(arch, arch)
    model = text_model(folder, base, "SequenceClassification", minilm_dir, num_labels=3, id2label=names,
                       label2id={v: k for k, v in names.items()}, initializer_range=0.2)
    if arch == "gpt2-pad-in-config-only":
        pad = model.config.pad_token_id
        _without_pad_token(folder)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "pad_token_id": pad}))
    elif arch == "llama-config-pad-differs":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "pad_token_id": config["eos_token_id"]}))
    return AutoModelForSequenceClassification.from_pretrained(str(folder))


# -- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Any:
    """The reference models are tiny: one PyTorch thread computes them as fast, and on a shared machine
    spinning intra-op threads only burn the CPU the other processes need."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Built:
    """One architecture for one task: the PyTorch model, its tokenizer or image processor, and slimserve's
    fp32 export loaded by the shipped runtime."""

    def __init__(self, folder: Path, model: Any, work: Path) -> None:
        self.folder = folder
        self.torch_model = model.eval()
        self.served = served(folder, work)

        self.preprocessor: Any = None  # the tokenizer or image processor, loaded once

    def pipeline(self, task: str, **kwargs: Any) -> Any:
        from transformers import AutoImageProcessor, AutoTokenizer, pipeline

        if task == "image-classification":
            if self.preprocessor is None:
                self.preprocessor = AutoImageProcessor.from_pretrained(str(self.folder), use_fast=False)
            return pipeline(task, model=self.torch_model, image_processor=self.preprocessor, device="cpu", **kwargs)
        if self.preprocessor is None:
            self.preprocessor = AutoTokenizer.from_pretrained(str(self.folder))
        return pipeline(task, model=self.torch_model, tokenizer=self.preprocessor, device="cpu", **kwargs)


@pytest.fixture(scope="module")
def build(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Built]:
    """(task, arch) -> Built, made once per module."""
    made: dict[tuple[str, str], Built] = {}

    def get(task: str, arch: str) -> Built:
        if (task, arch) not in made:
            root = tmp_path_factory.mktemp(f"{task}-{arch}")
            folder = root / "model"
            if task == "token-classification":
                model = text_model(folder, arch, "TokenClassification", minilm_dir, max_length=64,
                                   num_labels=len(NER_LABELS), id2label=dict(enumerate(NER_LABELS)),
                                   label2id={n: i for i, n in enumerate(NER_LABELS)})
                realistic_ner_head(model, folder, seed=1)
            elif task == "question-answering":
                model = text_model(folder, arch, "QuestionAnswering", minilm_dir)
            elif task == "text-classification":
                model = text_classifier(folder, arch, minilm_dir)
            else:
                model = image_model(folder, arch)
            made[(task, arch)] = Built(folder, model, root / "work")
        return made[(task, arch)]

    return get


# -- token classification ------------------------------------------------------------------------------
def assert_same_entities(ours: Any, theirs: Any, where: str) -> None:
    """Identical entities (keys, labels, words, offsets, order); scores within 1e-4."""
    assert len(ours) == len(theirs), (where, ours, theirs)
    for got, want in zip(ours, theirs):
        if isinstance(want, list):
            assert_same_entities(got, want, where)
            continue
        assert list(got) == list(want), (where, got, want)
        for key, value in want.items():
            if key == "score":
                assert abs(got[key] - float(value)) <= 1e-4, (where, got, want)
            else:
                assert got[key] == (int(value) if key in ("start", "end", "index") else value), (where, key, got, want)


@pytest.mark.parametrize("arch", [*TEXT_ARCHS, "modernbert"])
def test_token_classification_matches_the_pipeline(build: Callable[[str, str], Built], arch: str) -> None:
    """Every aggregation strategy, then overlapping windows (`stride`) over texts longer than 64 tokens."""
    built = build("token-classification", arch)
    found = 0
    for strategy in STRATEGIES:
        theirs = built.pipeline("token-classification", aggregation_strategy=strategy)(TEXTS)
        assert_same_entities(built.served.predict(TEXTS, {"aggregation_strategy": strategy}), theirs, strategy)
        found += sum(len(entities) for entities in theirs)
    assert found >= 50  # the redrawn head really found entities to compare
    texts = [LONG, TEXTS[2], TEXTS[4]]
    for strategy in ("simple", "first"):  # token-level and word-level entities merged across windows
        theirs = built.pipeline("token-classification", aggregation_strategy=strategy, stride=16)(texts)
        ours = built.served.predict(texts, {"aggregation_strategy": strategy, "stride": 16})
        assert_same_entities(ours, theirs, f"stride {strategy}")
    assert max(e["end"] for e in ours[0]) > len(LONG) // 2  # the windows read past the first 64 tokens


# -- question answering ------------------------------------------------------------------------------
def assert_same_answer(got: Any, want: Any, where: str) -> None:
    """Same shape, the same spans and texts in the same order, scores within 1e-4."""
    assert isinstance(got, type(want)), (where, got, want)
    gots, wants = (got, want) if isinstance(want, list) else ([got], [want])
    assert [(a["start"], a["end"], a["answer"]) for a in gots] == [(a["start"], a["end"], a["answer"]) for a in wants], \
        (where, got, want)
    assert all(abs(a["score"] - b["score"]) <= 1e-4 for a, b in zip(gots, wants)), (where, got, want)


@pytest.mark.parametrize("arch", TEXT_ARCHS)
def test_question_answering_matches_the_pipeline(build: Callable[[str, str], Built], arch: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIMSERVE_MAX_QA_WINDOWS", "64")  # 48-token windows over the long context: many
    built = build("question-answering", arch)
    pipe = built.pipeline("question-answering")
    for parameters in QA_PARAMETERS:
        for question, context in QA_CASES:
            want = pipe(question=question, context=context, **parameters)
            got = built.served.predict({"question": question, "context": context}, parameters)
            assert_same_answer(got, want, f"{parameters} {question}")


# -- text classification -----------------------------------------------------------------------------
TEXTCLASS_PARAMETERS: list[dict[str, Any]] = [
    {}, {"top_k": None}, {"top_k": 2}, {"function_to_apply": "none", "top_k": None}, {"function_to_apply": "sigmoid"},
]


def assert_same_labels(got: Any, want: Any, where: str) -> None:
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (where, got, want)
        for g, w in zip(got, want):
            assert_same_labels(g, w, where)
        return
    assert got["label"] == want["label"] and abs(got["score"] - want["score"]) < 1e-5, (where, got, want)


@pytest.mark.parametrize("arch", [
    *(pytest.param(arch, marks=pytest.mark.slow) for arch in ("electra", "albert", "mobilebert")),  # plain encoders
    "xlm-roberta", "deberta-v2", "modernbert", "gpt2", "gpt2-pad-in-config-only", "llama", "llama-config-pad-differs"])
def test_text_classification_matches_the_pipeline(build: Callable[[str, str], Built], arch: str) -> None:
    """Decoder classifiers (GPT-2, Llama) read each text's last token that is not config.pad_token_id, so
    the runtime's padded batch must pad with that id, whatever the tokenizer's pad token is (the pipeline
    runs one unpadded text at a time). GPT-2's tokenizer adds no special token, so "" has no token at all
    (the pipeline's model raises on it): the runtime answers a 400 instead of classifying a pad token."""
    from slimserve.runtime.model_runtime import InputError

    built = build("text-classification", arch)
    pipe = built.pipeline("text-classification")
    texts = [text for text in TEXTS if text] if arch.startswith("gpt2") else TEXTS
    for parameters in TEXTCLASS_PARAMETERS:
        for inputs in (texts, texts[0]):
            want = pipe(inputs, truncation=True, **parameters)  # the runtime truncates at max_length
            assert_same_labels(built.served.predict(inputs, parameters or None), want, f"{parameters}")
    if arch == "gpt2":
        with pytest.raises(InputError, match="no tokens") as info:
            built.served.predict(["fine", ""])
        assert info.value.status == 400 and "inputs[1]" in str(info.value)


@pytest.mark.parametrize(("arch", "positions", "usable"), [("electra", 128, 128), ("xlm-roberta", 130, 128),
                                                          ("gpt2", 100, 100)])
def test_a_tokenizer_without_model_max_length_truncates_at_the_model_positions(
        minilm_dir: Path, tmp_path: Path, arch: str, positions: int, usable: int) -> None:
    """Many hub tokenizers declare no model_max_length (transformers' 1e30 sentinel). On a model with
    fewer than 512 positions a long text must be truncated to what the position embeddings hold (RoBERTa-
    style models lose two to the pad offset), not reach onnxruntime and fail as a 500; the answer is the
    pipeline's with truncation at that length."""
    from transformers import AutoTokenizer, pipeline

    folder = tmp_path / "model"
    key = "n_positions" if arch == "gpt2" else "max_position_embeddings"
    model = text_model(folder, arch, "SequenceClassification", minilm_dir, num_labels=2, **{key: positions})
    config_path = folder / "tokenizer_config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "model_max_length": int(1e30)}))
    ours = served(folder, tmp_path / "work")
    assert ours.spec["max_length"] == usable
    pipe = pipeline("text-classification", model=model.eval(), tokenizer=AutoTokenizer.from_pretrained(str(folder)),
                    device="cpu")
    texts = [LONG * 2, "short"]
    assert_same_labels(ours.predict(texts, {"top_k": None}),
                       pipe(texts, top_k=None, truncation=True, max_length=usable), arch)


# -- text ranking ------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["electra", "xlm-roberta", "deberta-v2", "modernbert", "llama"])
def test_cross_encoders_match_sentence_transformers(minilm_dir: Path, tmp_path: Path, arch: str) -> None:
    """A reranker (one label: rank and pairs) and an NLI model (three labels: pairs, softmax), each saved
    by CrossEncoder.save, against CrossEncoder.rank/predict on the same folder."""
    from sentence_transformers import CrossEncoder

    from tests.test_family_pairs import DOCUMENTS, PAIRS, QUERY

    for labels in (1, 3):
        names = {0: "LABEL_0"} if labels == 1 else {0: "contradiction", 1: "entailment", 2: "neutral"}
        base = tmp_path / f"base-{labels}"
        text_model(base, arch, "SequenceClassification", minilm_dir, num_labels=labels, id2label=names,
                   label2id={v: k for k, v in names.items()}, initializer_range=0.2)
        folder = tmp_path / f"ce-{labels}"
        CrossEncoder(str(base), max_length=40, local_files_only=True).save(str(folder))
        model = served(folder, tmp_path / f"work-{labels}")
        assert model.task == "text-ranking"
        ce = CrossEncoder(str(folder), local_files_only=True)
        pairs = [(a, b) for a, b in PAIRS]
        np.testing.assert_allclose(model.predict(PAIRS), ce.predict(pairs), atol=1e-4)
        if labels == 3:
            np.testing.assert_allclose(model.predict(PAIRS, {"apply_softmax": True}),
                                       ce.predict(pairs, apply_softmax=True), atol=1e-4)
            continue
        for top_k, documents in ((None, False), (3, True)):
            answer = model.predict({"query": QUERY, "documents": DOCUMENTS},
                                   {"top_k": top_k, "return_documents": documents})
            want = ce.rank(QUERY, DOCUMENTS, top_k=top_k, return_documents=documents)
            assert [a["index"] for a in answer] == [int(w["corpus_id"]) for w in want], (answer, want)
            np.testing.assert_allclose([a["score"] for a in answer], [float(w["score"]) for w in want], atol=1e-4)
            assert [a.get("text") for a in answer] == [w.get("text") for w in want]


# -- image classification ----------------------------------------------------------------------------
# Architectures whose image processor another one already exercises run with the slow tests.
SAME_PROCESSOR = ("convnextv2", "regnet", "swinv2", "data2vec-vision", "hiera")


@pytest.mark.parametrize("arch", [pytest.param(arch, marks=pytest.mark.slow) if arch in SAME_PROCESSOR else arch
                                  for arch in IMAGE_ARCHS])
def test_image_classification_matches_the_pipeline(build: Callable[[str, str], Built], arch: str) -> None:
    """Awkward files (EXIF rotation, grayscale, RGBA, palette, 16-bit, CMYK, tiny BMP...) through each
    processor's steps; DeiT and LeViT are their distilled `...WithTeacher` heads (the hub's usual ones)."""
    from transformers.image_utils import load_image

    from slimserve.runtime import task_image
    from tests.test_family_image import awkward_images, b64

    built = build("image-classification", arch)
    pipe = built.pipeline("image-classification")
    images = [b64(data) for data in awkward_images().values()]
    processor = pipe.image_processor
    preprocess = task_image.Preprocessor(built.served.spec["image"])
    limits = task_image.PixelLimits.from_spec({}, environ={})
    for name, data in awkward_images().items():  # the pixels first: what the model sees is the processor's
        want_pixels = processor(images=load_image(b64(data)), return_tensors="np")["pixel_values"][0]
        got_pixels = preprocess(task_image.load_rgb(task_image.open_image(data, 0, limits), 0))
        np.testing.assert_allclose(got_pixels, want_pixels, rtol=0, atol=1e-6, err_msg=f"{arch}: {name}")
    for parameters in ({}, {"top_k": 3}, {"top_k": None, "function_to_apply": "sigmoid"}):
        want = pipe(images, **parameters)
        got = built.served.predict(images, parameters)
        for index, (ours, theirs) in enumerate(zip(got, want, strict=True)):
            assert [g["label"] for g in ours] == [w["label"] for w in theirs], (parameters, index, ours, theirs)
            np.testing.assert_allclose([g["score"] for g in ours], [w["score"] for w in theirs], atol=1e-4)
    scores = np.array([[a["score"] for a in sorted(answer, key=lambda a: a["label"])] for answer in got])
    assert scores.std(axis=0).max() > 0.01  # the model tells the images apart: not one constant answer


def _without_pad_token(folder: Path) -> None:
    """A GPT-2 classifier as some are published: no pad token in config.json nor in the tokenizer."""
    config = json.loads((folder / "config.json").read_text())
    config.pop("pad_token_id", None)
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        values = json.loads((folder / name).read_text())
        values.pop("pad_token", None)
        (folder / name).write_text(json.dumps(values))


REFUSED: dict[str, tuple[str, str]] = {  # case -> (what the error names, what the hint says)
    "efficientnet": ("EfficientNetImageProcessor", "LevitImageProcessor"),  # the hint lists what is supported
    "focalnet": ("does not support focalnet models for image-classification", "torch.onnx.export"),
    "modernbert-qa": ("does not support modernbert models for question-answering", "torch.onnx.export"),
    "gpt2-no-pad": ("defines no pad token", "pad_token_id"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_cannot_be_served_is_one_clean_error(minilm_dir: Path, tmp_path: Path, case: str) -> None:
    """Refused before anything is written, as one `error:` line and one `hint:` line, never a traceback:
    a preprocessor the handler does not reproduce (EfficientNet), an architecture or head optimum cannot
    export (FocalNet; ModernBERT's QA head), a last-token classifier with no pad token anywhere."""
    folder = tmp_path / case
    if case == "modernbert-qa":
        text_model(folder, "modernbert", "QuestionAnswering", minilm_dir)
    elif case == "gpt2-no-pad":
        text_model(folder, "gpt2", "SequenceClassification", minilm_dir, num_labels=2)
        _without_pad_token(folder)
    else:
        image_model(folder, case)
    result = run_cli("optimize", str(folder), "-o", str(tmp_path / "out"), "--recipe", "fp32")
    error, hint = REFUSED[case]
    assert_clean_error(result, code=2, contains=error)
    assert "hint:" in result.stderr and hint in result.stderr.split("hint:", 1)[1], result.stderr
    assert not (tmp_path / "out").exists()


# -- the whole optimize path -------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("case", ["image-classification:deit", "image-classification:levit",
                                  "token-classification:modernbert", "token-classification:xlm-roberta",
                                  "question-answering:deberta-v2", "text-classification:gpt2-pad-in-config-only",
                                  "text-ranking:llama"])
def test_optimize_measures_perfect_fp32_fidelity(minilm_dir: Path, tmp_path: Path, case: str) -> None:
    """`slimserve.api.optimize` end to end on architectures the family tests do not build: the family's
    PyTorch reference loads them (distilled heads, decoder classifiers, a Llama CrossEncoder) and the fp32
    export agrees with it on every sample of the built-in evaluation set."""
    from sentence_transformers import CrossEncoder

    from slimserve import api
    from slimserve.tasks import get_task

    task, arch = case.split(":")
    folder = tmp_path / "model"
    if task == "image-classification":
        image_model(folder, arch)
    elif task == "token-classification":
        model = text_model(folder, arch, "TokenClassification", minilm_dir, max_length=64, num_labels=len(NER_LABELS),
                           id2label=dict(enumerate(NER_LABELS)), label2id={n: i for i, n in enumerate(NER_LABELS)})
        realistic_ner_head(model, folder, seed=1)
    elif task == "question-answering":
        text_model(folder, arch, "QuestionAnswering", minilm_dir)
    elif task == "text-classification":
        text_classifier(folder, arch, minilm_dir)
    else:
        text_model(tmp_path / "base", arch, "SequenceClassification", minilm_dir, num_labels=1, initializer_range=0.2)
        CrossEncoder(str(tmp_path / "base"), max_length=40, local_files_only=True).save(str(folder))
    candidate = api.optimize(folder, tmp_path / "out", recipe="fp32")
    fidelity = candidate.manifest.fidelity
    assert candidate.manifest.runtime.task == task
    assert fidelity is not None and fidelity.metric in (get_task(task).metric, "top1+cosine")
    assert fidelity.mean == 1.0 and fidelity.min == 1.0 and fidelity.samples >= 20, fidelity
