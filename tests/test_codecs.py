"""Streaming encoders: what a streamed miss sends chunk by chunk is the file that is stored."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf

from voicecache import codecs
from voicecache.codecs import Audio, StreamEncoder, StreamResampler


def _speechlike(rate: int, seconds: float, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(round(rate * seconds)) * 3000).astype(np.int16)


def _chunks(samples: np.ndarray, seed: int = 3) -> list[np.ndarray]:
    """Uneven chunks, as engines hand them on (a 1-sample chunk included)."""
    rng = np.random.default_rng(seed)
    out, start = [samples[:1]], 1
    while start < len(samples):
        size = int(rng.integers(1, 4000))
        out.append(samples[start : start + size])
        start += size
    return out


def _stream(fmt: codecs.AudioFormat, samples: np.ndarray, rate: int) -> tuple[list[bytes], bytes]:
    encoder = StreamEncoder(fmt, rate)
    sent = [encoder.write(chunk) for chunk in _chunks(samples)]
    tail, complete = encoder.close()
    return [*sent, tail], complete


@pytest.mark.parametrize("rate", [16000, 22050, 24000, 44100])
def test_the_stream_resampler_gives_exactly_what_resample_gives(rate: int) -> None:
    samples = _speechlike(rate, 1.3)
    resampler = StreamResampler(rate, codecs.PCM_RATE)
    parts = [resampler.push(chunk) for chunk in _chunks(samples)]
    streamed = np.concatenate([*parts, resampler.finish()])
    whole = codecs.resample(Audio(samples, rate), codecs.PCM_RATE).samples
    assert streamed.dtype == np.int16 and np.array_equal(streamed, whole)


@pytest.mark.parametrize("rate", [22050, 24000])
def test_streamed_pcm_is_byte_identical_to_the_stored_pcm(rate: int) -> None:
    samples = _speechlike(rate, 1.0)
    sent, complete = _stream("pcm", samples, rate)
    assert sum(1 for part in sent if part) > 10  # handed on as it came
    assert b"".join(sent) == complete == codecs.encode(Audio(samples, rate), "pcm")


def test_a_streamed_wav_has_unknown_sizes_and_the_stored_one_is_complete() -> None:
    samples = _speechlike(22050, 1.0)
    sent, complete = _stream("wav", samples, 22050)
    streamed = b"".join(sent)
    riff_size = struct.unpack_from("<I", streamed, 4)[0]
    data_size = struct.unpack_from("<I", streamed, 40)[0]
    assert streamed[:4] == b"RIFF" and riff_size == 0xFFFFFFFF and data_size == 0xFFFFFFFF
    assert streamed[44:] == complete[44:]  # the same samples, header aside
    assert complete == codecs.encode(Audio(samples, 22050), "wav")  # what soundfile writes
    info = sf.info(io.BytesIO(complete))
    assert info.frames == len(samples) and info.samplerate == 22050


def test_opus_streams_ogg_pages_that_make_up_the_stored_file() -> None:
    samples = _speechlike(22050, 3.0)
    sent, complete = _stream("opus", samples, 22050)
    assert b"".join(sent) == complete
    assert sum(1 for part in sent if part) >= 3  # headers, then pages as they fill
    decoded = codecs.decode(complete)
    assert decoded.sample_rate == 24000 and abs(decoded.duration - 3.0) < 0.05


@pytest.mark.parametrize("fmt", ["flac", "mp3"])
def test_flac_and_mp3_are_sent_once_the_audio_is_complete(fmt: codecs.AudioFormat) -> None:
    samples = _speechlike(24000, 1.0)
    sent, complete = _stream(fmt, samples, 24000)
    assert not any(sent[:-1]) and sent[-1] == complete
    assert complete == codecs.encode(Audio(samples, 24000), fmt)
