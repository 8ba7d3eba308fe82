"""Several models behind one object: each stream decodes with the model that wrote it.

After a model upgrade, streams written by the old model are still around and only the old model
decodes them. :class:`CodecSet` holds the new codec (the default for encoding) and the old ones,
and routes each stream by the model fingerprint in its header (``container.fingerprint_of``: the
first 14 bytes, nothing decoded). ``vlmcodec decode --extra-model`` and ``vlmcodec serve
--extra-model`` route the same way.

    >>> codecs = CodecSet([Codec("new.safetensors"), Codec("old.safetensors")])
    >>> codecs.decode(old_or_new_stream)        # whichever wrote it
    >>> codecs.encode(image, 75)                # the first (default) model
    >>> codecs.encode(image, 75, model="6127")  # another, by a fingerprint prefix (>= 4 hex digits)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .bitstream import container
from .bitstream.container import FINGERPRINT_BYTES, Stream
from .errors import ConfigError, ModelMismatchError
from .image_io import ImageInput

if TYPE_CHECKING:
    from .codec import Codec

_MIN_PREFIX = 4


def model_name(model: str | bytes | bytearray) -> str:
    """``model=`` as text: a hex fingerprint (or prefix) as given, a Codec's 8-byte ``fingerprint``
    as its hex, hex digits given as ASCII bytes decoded; ConfigError for anything else (a bytes
    fingerprint's repr was compared as text: "names no model held")."""
    if isinstance(model, (bytes, bytearray)):
        if len(model) == FINGERPRINT_BYTES:
            return bytes(model).hex()
        try:
            return bytes(model).decode("ascii")
        except UnicodeDecodeError:
            raise ConfigError(f"model={model!r}: give a hex fingerprint (a str) or a Codec's fingerprint "
                              f"({FINGERPRINT_BYTES} bytes)") from None
    if not isinstance(model, str):
        raise ConfigError(f"model must be a hex fingerprint (a str), got {type(model).__name__} {model!r}")
    return model


class CodecSet:
    """Codecs of different models: ``decode`` routes each stream to its model's codec, ``encode``
    uses the first unless ``model=`` names another. Items are ``Codec`` objects or model paths
    (opened with ``codec_options``, e.g. ``backend=``, ``threads=``)."""

    def __init__(self, codecs: Iterable, **codec_options):
        from .codec import Codec  # lazily: the compiled rANS extension

        self._codecs: dict[bytes, Codec] = {}
        if isinstance(codecs, (str, Path, Codec)) or not isinstance(codecs, Iterable):
            # (a single path was taken character by character; a number was a TypeError)
            raise ConfigError(f"a CodecSet takes a list of Codecs or model paths, got {type(codecs).__name__}")
        for item in codecs:
            codec = Codec(item, **codec_options) if isinstance(item, (str, Path)) else item
            if not isinstance(codec, Codec):
                raise ConfigError(f"a CodecSet holds Codecs or model paths, got {type(item).__name__}")
            if codec.fingerprint in self._codecs:
                raise ConfigError(f"model {codec.fingerprint.hex()} given twice")
            self._codecs[codec.fingerprint] = codec
        if not self._codecs:
            raise ConfigError("a CodecSet needs at least one codec")
        self.default = next(iter(self._codecs.values()))

    def __repr__(self) -> str:
        return f"CodecSet([{', '.join(repr(c) for c in self._codecs.values())}])"

    # -- lookup --------------------------------------------------------------------------
    @property
    def fingerprints(self) -> list[str]:
        """The models held (hex fingerprints), the default first."""
        return [fp.hex() for fp in self._codecs]

    def __len__(self) -> int:
        return len(self._codecs)

    def __iter__(self) -> Iterator[Codec]:
        return iter(self._codecs.values())

    def _held(self) -> str:
        return ", ".join(self.fingerprints)

    def codec_for(self, data) -> Codec:
        """The codec whose model wrote ``data``: BitstreamError for bytes that are not a .vlmc
        header (or, naming a model not held, not a whole stream), ModelMismatchError for a stream
        of a model not held."""
        fp = container.fingerprint_of(data)
        # the model itself, else one that shares its decoder (Codec.reads)
        codec = self._codecs.get(fp) or next((c for c in self._codecs.values() if c.reads(fp)), None)
        if codec is None:
            # a damaged fingerprint names a model that does not exist: say the stream is damaged
            # (the CRC, checked only here, off the routing path of every stream that matches)
            container.unpack(data)
            raise ModelMismatchError(f"stream was written by model {fp.hex()}, the models held are {self._held()}; "
                                     "decode it with the model that wrote it")
        return codec

    def named(self, prefix: str | bytes | None) -> Codec:
        """The codec whose fingerprint (hex) starts with ``prefix`` (at least 4 digits; the 64-digit
        form ``vlmcodec info`` prints of a model file too: its first 16 are a stream's), or whose
        fingerprint is ``prefix`` as bytes (``Codec.fingerprint``); the default for None.
        ConfigError for a short or ambiguous prefix or another type, ModelMismatchError for none held."""
        if prefix is None:
            return self.default
        prefix = model_name(prefix)
        name = prefix.strip().lower()
        if len(name) < _MIN_PREFIX:
            raise ConfigError(f"model={prefix!r}: give at least {_MIN_PREFIX} hex digits of one of {self._held()}")
        digits = 2 * len(self.default.fingerprint)
        if len(name) > digits and all(ch in "0123456789abcdef" for ch in name):
            name = name[:digits]  # (a model file's full fingerprint: streams carry its first 16 digits)
        found = [(fp, c) for fp, c in self._codecs.items() if fp.hex().startswith(name)]
        if not found:
            raise ModelMismatchError(f"model={prefix!r} names no model held ({self._held()})")
        if len(found) > 1:
            raise ConfigError(f"model={prefix!r} matches several models ({', '.join(fp.hex() for fp, _ in found)}): "
                              "give more digits")
        return found[0][1]

    # -- coding --------------------------------------------------------------------------
    def encode(self, image: ImageInput, quality: float | None = 75.0, short_side: int | None = None,
               model: str | bytes | None = None, *, refine: int | None = None) -> bytes:
        """``Codec.encode`` with the default model, or the one ``model`` (a fingerprint prefix) names
        (``refine``: that codec's per-call refinement steps)."""
        return self.named(model).encode(image, quality, short_side, refine=refine)

    def encode_to_size(self, image: ImageInput, max_bytes: int | None = None, *, max_bpp: float | None = None,
                       short_side: int | None = None, model: str | bytes | None = None,
                       min_quality: float = 0.0, max_quality: float = 100.0, refine: int | None = None) -> bytes:
        """``Codec.encode_to_size`` (rate control) with the default model, or the one ``model`` names."""
        return self.named(model).encode_to_size(image, max_bytes, max_bpp=max_bpp, short_side=short_side,
                                                min_quality=min_quality, max_quality=max_quality, refine=refine)

    def encode_batch(self, images: Iterable[ImageInput], qualities: float | Iterable[float], short_side: int | None = None, model: str | bytes | None = None, *,
                     refine: int | None = None) -> list[bytes]:
        """``Codec.encode_batch`` with one model (the default, or ``model``)."""
        return self.named(model).encode_batch(images, qualities, short_side, refine=refine)

    def decode(self, data: Stream, short_side: int | None = None) -> np.ndarray:
        """Decode a stream with the model that wrote it (``short_side`` as in ``Codec.decode``)."""
        return self.codec_for(data).decode(data, short_side)

    def decode_batch(self, streams, short_side: int | None = None) -> list[np.ndarray]:
        """Decode streams of any of the models held, in order; each model's streams run as its
        codec's batch. The first stream that no model held wrote raises before any is decoded."""
        from .codec import check_batch

        check_batch(streams, "decode_batch", "decode")
        streams = list(streams)
        groups: dict[bytes, list[int]] = {}
        for i, data in enumerate(streams):
            groups.setdefault(self.codec_for(data).fingerprint, []).append(i)
        out: list[np.ndarray | None] = [None] * len(streams)
        for fp, idx in groups.items():
            for i, img in zip(idx, self._codecs[fp].decode_batch([streams[i] for i in idx], short_side), strict=True):
                out[i] = img
        return out  # type: ignore[return-value]
