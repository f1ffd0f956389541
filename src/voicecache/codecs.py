"""Audio formats: PCM in memory, encoding to and decoding from the formats clients ask for.

Everything here is synchronous and CPU-bound; callers run it off the event loop
(`asyncio.to_thread`) except for tiny clips. Only the miss path and the first request for a
new format of a cached line ever encode: a hit serves stored bytes as they are.

`StreamEncoder` encodes a render chunk by chunk for streamed misses. What streams how
(measured with soundfile 0.14 / libsndfile 1.2.2 writing to a file-like object in blocks):

- `pcm` and `wav`: every chunk at once. A streamed WAV carries `0xFFFFFFFF` in its RIFF and
  data sizes (as OpenAI and Kokoro-FastAPI send); the stored file has the real sizes and is
  otherwise byte-identical. `pcm` is resampled to 24 kHz by `StreamResampler`, which gives
  exactly the samples `encode` gives.
- `opus`: Ogg pages as libsndfile completes them, about one per second of audio; the Ogg
  stream is written strictly in order, so the stored file is exactly the bytes streamed.
- `flac` and `mp3`: only once the audio is complete. libsndfile writes both incrementally but
  seeks back at the end: FLAC's STREAMINFO (sample count, MD5) and MP3's LAME/Xing frame are
  only right after that. Streamed as first written, the FLAC has an unknown length (libsndfile
  itself refuses to read it) and decoders stop the MP3 early (1.7 s of 10 s), so neither is
  worth sending before the end.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np
import soundfile as sf

from voicecache.errors import EngineError

AudioFormat = Literal["wav", "flac", "mp3", "opus", "pcm"]
FORMATS: tuple[AudioFormat, ...] = ("wav", "flac", "mp3", "opus", "pcm")
CONTENT_TYPES: dict[str, str] = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
    "pcm": "audio/pcm",
}
# OpenAI's `pcm` is raw 24 kHz 16-bit little-endian mono; Opus only runs at a few rates.
PCM_RATE = 24000
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)

_SOUNDFILE_ARGS: dict[str, tuple[str, str | None]] = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),
}


@dataclass(frozen=True, slots=True)
class Audio:
    """Mono 16-bit PCM samples and their rate."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate if self.sample_rate else 0.0


def resample(audio: Audio, rate: int) -> Audio:
    """Linear-interpolation resampling: plenty for speech between 16 and 48 kHz.

    Output sample k lies at input position k · (source rate / rate), so a prefix of the
    output depends only on a prefix of the input: `StreamResampler` produces the very same
    samples chunk by chunk, which keeps a streamed `pcm` miss byte-identical to the stored
    entry."""
    if audio.sample_rate == rate or len(audio.samples) == 0:
        return Audio(audio.samples, rate)
    count = max(1, round(len(audio.samples) * rate / audio.sample_rate))
    positions = np.arange(count) * (audio.sample_rate / rate)
    return Audio(_interpolate(audio.samples, positions, 0), rate)


def _interpolate(samples: np.ndarray, positions: np.ndarray, offset: int) -> np.ndarray:
    """`samples` (whose first element is input sample `offset`) read at absolute `positions`,
    linearly interpolated and clamped to the last sample; int16."""
    last = len(samples) - 1
    index = np.floor(positions).astype(np.int64)
    fraction = positions - index
    here = np.minimum(index - offset, last)
    after = np.minimum(here + 1, last)
    source = samples.astype(np.float64)
    values = source[here] + fraction * (source[after] - source[here])
    out: np.ndarray = np.clip(np.round(values), -32768, 32767).astype(np.int16)
    return out


class StreamResampler:
    """`resample`, chunk by chunk: the concatenated output equals `resample` of the whole."""

    def __init__(self, source_rate: int, rate: int) -> None:
        self.ratio = source_rate / rate
        self.source_rate = source_rate
        self.rate = rate
        self._pending = np.zeros(0, dtype=np.int16)  # input from absolute sample `_offset` on
        self._offset = 0
        self._next = 0  # the next output sample to produce
        self._received = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Output for the input so far, except what needs input that has not arrived."""
        self._pending = np.concatenate((self._pending, samples))
        self._received += len(samples)
        # Sample k needs input up to floor(k·ratio) + 1: available while k·ratio < received-1.
        limit = int((self._received - 1) / self.ratio) + 2
        positions = np.arange(self._next, max(self._next, limit)) * self.ratio
        positions = positions[positions < self._received - 1]
        return self._emit(positions)

    def finish(self) -> np.ndarray:
        """The rest of the output, once the input is complete."""
        if self._received == 0:
            return np.zeros(0, dtype=np.int16)
        count = max(1, round(self._received * self.rate / self.source_rate))
        return self._emit(np.arange(self._next, max(self._next, count)) * self.ratio)

    def _emit(self, positions: np.ndarray) -> np.ndarray:
        if len(positions) == 0:
            return np.zeros(0, dtype=np.int16)
        out = _interpolate(self._pending, positions, self._offset)
        self._next += len(positions)
        # Keep only the input the next output sample can still need.
        keep_from = min(int(np.floor(self._next * self.ratio)), self._received - 1)
        if keep_from > self._offset:
            self._pending = self._pending[keep_from - self._offset :]
            self._offset = keep_from
        return out


def time_stretch(audio: Audio, factor: float) -> Audio:
    """Change tempo by `factor` (2.0 = twice as fast) the way EmotiVoice applies `speed`:
    by resampling the length after synthesis (pitch moves with it)."""
    if factor == 1.0:
        return audio
    stretched = resample(Audio(audio.samples, audio.sample_rate), round(audio.sample_rate / factor))
    return Audio(stretched.samples, audio.sample_rate)


def encode(audio: Audio, fmt: AudioFormat) -> bytes:
    """Encode PCM as `fmt`."""
    if fmt == "pcm":
        return resample(audio, PCM_RATE).samples.astype("<i2").tobytes()
    if fmt == "opus" and audio.sample_rate not in OPUS_RATES:
        audio = resample(audio, PCM_RATE)
    container, subtype = _SOUNDFILE_ARGS[fmt]
    buffer = io.BytesIO()
    with sf.SoundFile(
        buffer, "w", samplerate=audio.sample_rate, channels=1, format=container, subtype=subtype
    ) as out:
        out.write(audio.samples)
    return buffer.getvalue()


_WAV_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")
_UNKNOWN_SIZE = 0xFFFFFFFF


def wav_header(sample_rate: int, data_bytes: int | None) -> bytes:
    """The 44-byte header of a 16-bit mono WAV (the one soundfile writes); `data_bytes=None`
    gives a streamed WAV's header, with `0xFFFFFFFF` for the sizes not known yet."""
    riff = _UNKNOWN_SIZE if data_bytes is None else 36 + data_bytes
    data = _UNKNOWN_SIZE if data_bytes is None else data_bytes
    # fmt chunk: 16 bytes, PCM (1), mono, rate, bytes per second, block align 2, 16 bits.
    fmt = (b"fmt ", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return _WAV_HEADER.pack(b"RIFF", riff, b"WAVE", *fmt, b"data", data)


class _Recorder(io.RawIOBase):
    """A growing in-memory file for libsndfile that also hands out what was appended since
    the last look (`take`), for streaming."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer = bytearray()
        self._position = 0
        self._taken = 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        end = self._position + len(data)
        if end > len(self.buffer):
            self.buffer.extend(bytes(end - len(self.buffer)))
        self.buffer[self._position : end] = data
        self._position = end
        return len(data)

    def read(self, size: int = -1) -> bytes:
        end = len(self.buffer) if size < 0 else self._position + size
        data = bytes(self.buffer[self._position : end])
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self.buffer)}
        self._position = base[whence] + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        """The bytes appended since the last call."""
        data = bytes(self.buffer[self._taken :])
        self._taken = len(self.buffer)
        return data


class StreamEncoder:
    """Encodes one render as `fmt`, chunk by chunk (see the module docstring for which formats
    stream and which wait for the end).

    `write` returns the bytes ready to send; `close` returns the last bytes to send and the
    complete file to store. `cheap` says whether `write` is cheap enough to run on the event
    loop (`pcm`, `wav`); the others belong in a thread. Not thread-safe: one caller."""

    def __init__(self, fmt: AudioFormat, sample_rate: int) -> None:
        self.format = fmt
        self.sample_rate = sample_rate
        self.cheap = fmt in ("pcm", "wav")
        self._parts: list[bytes] = []  # pcm, wav: the data bytes so far
        self._samples: list[np.ndarray] = []  # flac, mp3: everything, encoded at the end
        self._resampler: StreamResampler | None = None
        self._file: sf.SoundFile | None = None
        self._recorder: _Recorder | None = None
        if fmt == "pcm" and sample_rate != PCM_RATE:
            self._resampler = StreamResampler(sample_rate, PCM_RATE)
        if fmt == "opus":
            rate = sample_rate
            if rate not in OPUS_RATES:
                self._resampler = StreamResampler(sample_rate, PCM_RATE)
                rate = PCM_RATE
            self._recorder = _Recorder()
            container, subtype = _SOUNDFILE_ARGS["opus"]
            self._file = sf.SoundFile(
                self._recorder, "w", samplerate=rate, channels=1, format=container, subtype=subtype
            )

    def write(self, samples: np.ndarray) -> bytes:
        """Encode the next chunk; returns the bytes that may be sent now (maybe none)."""
        if self.format in ("flac", "mp3"):
            self._samples.append(samples)
            return b""
        if self._resampler is not None:
            samples = self._resampler.push(samples)
        return self._encoded(samples)

    def close(self) -> tuple[bytes, bytes]:
        """(the last bytes to send, the complete file to store)."""
        if self.format in ("flac", "mp3"):
            whole = np.concatenate(self._samples) if self._samples else np.zeros(0, np.int16)
            data = encode(Audio(whole, self.sample_rate), self.format)
            return data, data
        tail = self._encoded(self._resampler.finish()) if self._resampler is not None else b""
        if self._file is not None and self._recorder is not None:
            self._file.close()
            return tail + self._recorder.take(), bytes(self._recorder.buffer)
        body = b"".join(self._parts)
        if self.format == "wav":
            return tail, wav_header(self.sample_rate, len(body)) + body
        return tail, body

    def _encoded(self, samples: np.ndarray) -> bytes:
        if self._file is not None and self._recorder is not None:
            if len(samples):
                self._file.write(samples)
            return self._recorder.take()
        data = samples.astype("<i2").tobytes()
        if self.format == "wav" and not self._parts:
            self._parts.append(data)
            return wav_header(self.sample_rate, None) + data
        self._parts.append(data)
        return data


def decode(data: bytes, fmt: AudioFormat | None = None) -> Audio:
    """Decode audio bytes of any format soundfile reads (WAV, FLAC, MP3, OGG) into mono PCM.

    `fmt="pcm"` means raw 24 kHz 16-bit little-endian. Raises `EngineError` for bytes that are
    not decodable audio, because the only untrusted audio we decode comes from engines (voice
    uploads validate separately).
    """
    if fmt == "pcm":
        if len(data) % 2:
            raise EngineError("raw PCM has an odd number of bytes")
        return Audio(np.frombuffer(data, dtype="<i2").astype(np.int16), PCM_RATE)
    if not data:
        raise EngineError("empty audio")
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise EngineError(f"not decodable audio: {exc}") from exc
    if samples.shape[0] == 0:
        raise EngineError("audio has no samples")
    mono = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1).astype(np.int16)
    return Audio(np.ascontiguousarray(mono), int(rate))


def transcode(data: bytes, source: AudioFormat, target: AudioFormat) -> bytes:
    """Re-encode stored audio for another format."""
    if source == target:
        return data
    return encode(decode(data, source), target)
