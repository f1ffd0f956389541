"""The embedded default engine: eSpeak NG 1.52 from the `espeakng-loader` wheel, via ctypes.

No system package and no network: the wheel bundles `libespeak-ng.so` and all language data
(Debian's 1.51 mis-reads Mandarin, the bundled 1.52 does not). The library keeps global state,
so every call runs on one dedicated worker thread, which both serializes calls and keeps the
event loop free. `stream` hands on each buffer of eSpeak's synthesis callback as it is made:
the callback runs on that worker thread and passes it to the event loop with
`loop.call_soon_threadsafe` into the caller's queue (the thread's completion is posted the
same way, after its last chunk, so order holds).

Emotions map to prosody (rate, pitch, pitch range) so that each is audibly different; a cloned
voice adapts pitch and rate to its reference sample (an approximation: eSpeak cannot copy
timbre).
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import espeakng_loader
import numpy as np

from voicecache.codecs import Audio, time_stretch
from voicecache.engines.spec import EngineSpec
from voicecache.errors import EngineError
from voicecache.model import Engine, SynthesisJob, VoiceInfo

_SYNCHRONOUS = 2
_INIT_DONT_EXIT = 0x8000
_UTF8 = 1
_RATE, _PITCH, _RANGE = 1, 3, 4
_MIN_WPM, _MAX_WPM = 80, 450
_BASE_WPM = 170

LANGUAGES: dict[str, str] = {
    "en": "English",
    "en-us": "English (America)",
    "en-gb": "English (Great Britain)",
    "cmn": "Chinese (Mandarin)",
    "yue": "Chinese (Cantonese)",
    "ja": "Japanese",
    "ko": "Korean",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "ru": "Russian",
}
VARIANTS = tuple(f"f{i}" for i in range(1, 6)) + tuple(f"m{i}" for i in range(1, 8))
# Our ids where eSpeak NG's own name differs: it has no plain `en-gb` ("en" is British).
_ESPEAK_LANGUAGE_NAMES = {"en-gb": "en-gb-x-rp"}
# OpenAI's voice names, so an unchanged OpenAI client works against the embedded engine.
OPENAI_ALIASES: dict[str, str] = {
    "alloy": "en-us+f2",
    "ash": "en-us+m3",
    "ballad": "en-gb+m2",
    "coral": "en-us+f3",
    "echo": "en-us+m1",
    "fable": "en-gb+m4",
    "nova": "en-us+f4",
    "onyx": "en-us+m7",
    "sage": "en-gb+f1",
    "shimmer": "en-us+f5",
    "verse": "en-us+m2",
}


@dataclass(frozen=True, slots=True)
class Prosody:
    """eSpeak parameters: words per minute, pitch 0-100, pitch range 0-100."""

    wpm: float
    pitch: int
    range: int


EMOTIONS: dict[str, Prosody] = {
    "neutral": Prosody(_BASE_WPM, 50, 50),
    "happy": Prosody(_BASE_WPM * 1.12, 68, 85),
    "sad": Prosody(_BASE_WPM * 0.8, 35, 15),
    "angry": Prosody(_BASE_WPM * 1.18, 45, 95),
    "surprised": Prosody(_BASE_WPM * 1.05, 80, 100),
    "fearful": Prosody(_BASE_WPM * 1.25, 62, 70),
    "calm": Prosody(_BASE_WPM * 0.9, 45, 30),
}

_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Library:
    """The loaded libespeak-ng; only ever touched from the engine's one worker thread."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data_path = espeakng_loader.get_data_path().encode()
        self.sample_rate = self.lib.espeak_Initialize(_SYNCHRONOUS, 0, data_path, _INIT_DONT_EXIT)
        if self.sample_rate <= 0:
            raise EngineError("eSpeak NG failed to initialize")
        self.chunks: list[np.ndarray] = []
        self.sink: Callable[[np.ndarray], None] | None = None
        self._callback = _Callback(self._collect)  # kept referenced: C holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]

    def _collect(self, samples: ctypes._Pointer[ctypes.c_short], count: int, _events: int) -> int:
        if count > 0 and samples:
            # Copy through bytes: np.ctypeslib.as_array would create (and cache forever) a new
            # ctypes array type for every distinct chunk length, a slow leak.
            raw = ctypes.string_at(samples, count * ctypes.sizeof(ctypes.c_short))
            chunk = np.frombuffer(raw, dtype=np.int16)
            self.chunks.append(chunk)
            if self.sink is not None:
                self.sink(chunk)
        return 0

    def synth(
        self,
        text: str,
        voice: str,
        prosody: Prosody,
        sink: Callable[[np.ndarray], None] | None = None,
    ) -> np.ndarray:
        """The whole render; each buffer also goes to `sink` as soon as eSpeak makes it."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EngineError(f"eSpeak NG has no voice {voice!r}")
        self.lib.espeak_SetParameter(_RATE, round(prosody.wpm), 0)
        self.lib.espeak_SetParameter(_PITCH, prosody.pitch, 0)
        self.lib.espeak_SetParameter(_RANGE, prosody.range, 0)
        self.chunks = []
        self.sink = sink
        data = text.encode()
        try:
            status = self.lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _UTF8, None, None)
            self.lib.espeak_Synchronize()
        finally:
            self.sink = None
        if status != 0:
            raise EngineError(f"eSpeak NG synthesis failed (status {status})")
        if not self.chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self.chunks).astype(np.int16)


class _SharedLibrary:
    """libespeak-ng is one global C state per process, whatever the number of engine
    instances (tests and the CLI make several): one library, one worker thread, shared."""

    _lock = threading.Lock()
    _executor: ThreadPoolExecutor | None = None
    _library: _Library | None = None

    @classmethod
    def executor(cls) -> ThreadPoolExecutor:
        with cls._lock:
            if cls._executor is None:
                cls._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")
            return cls._executor

    @classmethod
    def sample_rate(cls) -> int:
        """The library's output rate; only called once the library is loaded."""
        assert cls._library is not None
        return int(cls._library.sample_rate)

    @classmethod
    def library(cls) -> _Library:
        """Only called on the worker thread."""
        if cls._library is None:
            cls._library = _Library()
        return cls._library


class EspeakEngine(Engine):
    """eSpeak NG, offline. Voices are `LANG` or `LANG+VARIANT` (`cmn+f3`, `en-us+m2`)."""

    in_process = True  # eSpeak already serializes its calls on one thread

    def __init__(self, name: str = "espeak", model_version: str = "espeak-ng-1.52") -> None:
        super().__init__()
        self.name = name
        self.model_version = model_version
        self._voices = [VoiceInfo(lang, label, lang) for lang, label in LANGUAGES.items()] + [
            VoiceInfo(alias, f"{alias} (OpenAI name, eSpeak {voice})", voice.split("+")[0])
            for alias, voice in OPENAI_ALIASES.items()
        ]

    def voices(self) -> Sequence[VoiceInfo]:
        return self._voices

    def emotions(self) -> Sequence[str]:
        return tuple(EMOTIONS)

    def accepts_voice(self, voice: str) -> bool:
        voice = OPENAI_ALIASES.get(voice, voice)
        language, _, variant = voice.partition("+")
        return language in LANGUAGES and (not variant or variant in VARIANTS)

    async def synthesize(self, job: SynthesisJob) -> Audio:
        prosody = self._prosody(job)
        self.calls += 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_SharedLibrary.executor(), self._synthesize, job, prosody)

    async def stream(self, job: SynthesisJob) -> AsyncGenerator[Audio, None]:
        prosody = self._prosody(job)
        if _stretch(prosody, job.speed) != 1.0:
            # A speed beyond eSpeak's rates is stretched from the whole render.
            yield await self.synthesize(job)
            return
        self.calls += 1
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[np.ndarray | None] = asyncio.Queue()

        def sink(chunk: np.ndarray) -> None:  # on the worker thread
            loop.call_soon_threadsafe(chunks.put_nowait, chunk)

        done = loop.run_in_executor(_SharedLibrary.executor(), self._synthesize, job, prosody, sink)

        def finished(future: asyncio.Future[Audio]) -> None:
            if not future.cancelled():
                future.exception()  # retrieved here too: the consumer may have left
            chunks.put_nowait(None)

        done.add_done_callback(finished)
        rate = None
        produced = 0
        ended = False
        while not ended:
            # eSpeak hands over 60 ms at a time: pass on together what has piled up meanwhile.
            ready = [await chunks.get()]
            while not chunks.empty():
                ready.append(chunks.get_nowait())
            ended = ready[-1] is None
            samples = [chunk for chunk in ready if chunk is not None]
            if samples:
                rate = rate or _SharedLibrary.sample_rate()
                produced += sum(len(chunk) for chunk in samples)
                yield Audio(np.concatenate(samples) if len(samples) > 1 else samples[0], rate)
        await done  # raises the worker's error, if any
        if produced == 0:
            raise EngineError("eSpeak NG produced no audio")

    def _prosody(self, job: SynthesisJob) -> Prosody:
        if not self.accepts_voice(job.voice):
            raise EngineError(f"eSpeak NG has no voice {job.voice!r}")
        prosody = EMOTIONS.get(job.emotion)
        if prosody is None:
            raise EngineError(f"eSpeak NG has no emotion {job.emotion!r}")
        if job.reference is not None:
            prosody = _adapt_to_reference(prosody, job.reference.settings)
        return prosody

    async def probe(self) -> None:
        """The library loads and initializes (on its worker thread, as synthesis does)."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(_SharedLibrary.executor(), _SharedLibrary.library)
        except OSError as exc:
            raise EngineError(f"eSpeak NG library does not load: {exc}") from exc

    def _synthesize(
        self,
        job: SynthesisJob,
        prosody: Prosody,
        sink: Callable[[np.ndarray], None] | None = None,
    ) -> Audio:
        library = _SharedLibrary.library()
        # eSpeak's rate tops out at 450 wpm and bottoms at 80: reach the rest of the speed
        # range by stretching the rendered audio.
        wanted = prosody.wpm * job.speed
        wpm = min(max(wanted, _MIN_WPM), _MAX_WPM)
        samples = library.synth(
            job.text,
            espeak_voice_name(job.voice),
            Prosody(wpm, prosody.pitch, prosody.range),
            sink,
        )
        audio = Audio(samples, library.sample_rate)
        if abs(wanted - wpm) > 0.5:
            audio = time_stretch(audio, wanted / wpm)
        if len(audio.samples) == 0:
            raise EngineError("eSpeak NG produced no audio")
        return audio


def build(spec: EngineSpec) -> EspeakEngine:
    """Factory of kind `espeak` (entry point group `voicecache.engines`)."""
    return EspeakEngine(name=spec.name, model_version=spec.model_version or "espeak-ng-1.52")


def espeak_voice_name(voice: str) -> str:
    """The name eSpeak NG knows for one of our voice ids (`alloy` → `en-us+f2`)."""
    language, plus, variant = OPENAI_ALIASES.get(voice, voice).partition("+")
    return _ESPEAK_LANGUAGE_NAMES.get(language, language) + plus + variant


def _stretch(prosody: Prosody, speed: float) -> float:
    """The time-stretch factor a render at `speed` needs after eSpeak (1.0 within its rates)."""
    wanted = prosody.wpm * speed
    wpm = min(max(wanted, _MIN_WPM), _MAX_WPM)
    return wanted / wpm if abs(wanted - wpm) > 0.5 else 1.0


def _adapt_to_reference(base: Prosody, settings: dict[str, object] | object) -> Prosody:
    """Move pitch and rate toward a reference sample's measured median pitch (Hz) and
    speaking rate (syllables per second). eSpeak's pitch 0-100 spans roughly 70-260 Hz."""
    if not isinstance(settings, dict):
        return base
    pitch = base.pitch
    wpm = base.wpm
    median_hz = settings.get("median_pitch_hz")
    if isinstance(median_hz, int | float) and median_hz > 0:
        pitch = round(min(max((float(median_hz) - 70.0) / 1.9, 0), 100))
    rate = settings.get("syllables_per_second")
    if isinstance(rate, int | float) and rate > 0:
        # ~1.5 syllables per word in running English speech.
        wpm = min(max(float(rate) * 60 / 1.5 * (base.wpm / _BASE_WPM), _MIN_WPM), _MAX_WPM)
    return Prosody(wpm, pitch, base.range)
