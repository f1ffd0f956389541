"""Game and live-stream TTS workload: fixed lines with Zipf popularity plus personalized lines.

A *catalog* holds the fixed lines a game or a stream overlay speaks again and again (kill
announcements, quest lines, gift thanks), each bound to a character voice and an emotion, in
Chinese and English; a few lines are spoken by two characters. Popularity over the catalog is
Zipf. A share of requests are *personalized* ("Thanks LuckyPanda417 for the rocket!"): names
never repeat, so these lines can never be served from a cache. The mix gives a repeat rate
near the article's 60 %: the share of requests whose (text, voice, emotion) was asked before.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

VOICES = ("8051", "9017", "6097", "1088")
EMOTIONS = ("neutral", "happy", "sad", "angry")
# EmotiVoice's prompt for each emotion, as voicecache's emotivoice engine sends it.
PROMPTS = {"neutral": "", "happy": "Happy", "sad": "Sad", "angry": "Angry"}

FIXED_EN = (
    "Victory is ours!",
    "Enemy spotted on the left flank.",
    "First blood!",
    "Double kill!",
    "Triple kill!",
    "The tower is under attack.",
    "Our base is under attack!",
    "You have been slain.",
    "Ace! The enemy team has been wiped out.",
    "Objective captured.",
    "Reloading, cover me!",
    "Welcome back, commander.",
    "Quest complete. Return to the village elder.",
    "You found a legendary sword!",
    "Not enough gold.",
    "The shop is closed at night.",
    "Level up! New skills are available.",
    "Thanks for the follow!",
    "Welcome to the stream, everyone!",
    "Don't forget to like and subscribe.",
    "We are going live in five minutes.",
    "Let's go! Round two starts now.",
    "Good game, well played.",
    "The storm is closing in, move to the safe zone.",
    "Defeat. Try again?",
    "Healing potion used.",
    "Your shield is broken!",
    "The dragon has awakened.",
    "Mission failed. We'll get them next time.",
    "Press start to continue.",
)
FIXED_ZH = (
    "胜利属于我们！",
    "发现敌人，在左侧！",
    "第一滴血！",
    "双杀！",
    "三杀！",
    "防御塔正在遭受攻击。",
    "我方基地正在遭受攻击！",
    "你已被击杀。",
    "团灭！敌方全员阵亡。",
    "目标已占领。",
    "正在换弹，掩护我！",
    "欢迎回来，指挥官。",
    "任务完成，请回到村长那里。",
    "你获得了一把传说之剑！",
    "金币不足。",
    "商店夜间不营业。",
    "升级了！新技能已解锁。",
    "感谢关注！",
    "欢迎大家来到直播间！",
    "记得点赞关注哦。",
    "五分钟后开播。",
    "冲啊！第二回合开始。",
    "打得好，大家辛苦了。",
    "毒圈正在缩小，请进入安全区。",
    "失败了，再来一局？",
    "已使用治疗药水。",
    "你的护盾被击破了！",
    "巨龙苏醒了。",
    "任务失败，下次一定。",
    "按开始键继续。",
)
PERSONAL_EN = (
    "Thanks {name} for the rocket!",
    "Welcome to the stream, {name}!",
    "{name} just subscribed, thank you so much!",
    "Happy birthday, {name}!",
    "{name} is the MVP of this round.",
)
PERSONAL_ZH = (
    "感谢{name}送的火箭！",
    "欢迎{name}来到直播间！",
    "谢谢{name}的关注，爱你哟！",
    "祝{name}生日快乐！",
    "本局最佳是{name}！",
)
_ADJECTIVES = ("Lucky", "Swift", "Silent", "Crazy", "Golden", "Tiny", "Brave", "Sleepy")
_ANIMALS = ("Panda", "Tiger", "Fox", "Otter", "Dragon", "Koala", "Falcon", "Wolf")
_ZH_NAMES = ("小熊", "阿狸", "大白", "星星", "小鱼", "团子", "可乐", "月亮")


@dataclass(frozen=True, slots=True)
class Line:
    """One request: what to say, in which voice and emotion."""

    text: str
    voice: str
    emotion: str
    personalized: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.text, self.voice, self.emotion)


def catalog(rng: random.Random) -> list[Line]:
    """Fixed lines bound to characters; a quarter of them are spoken by a second character."""
    lines: list[Line] = []
    for text in FIXED_EN + FIXED_ZH:
        voices = rng.sample(VOICES, 2 if rng.random() < 0.25 else 1)
        emotion = rng.choice(EMOTIONS)
        lines.extend(Line(text, voice, emotion) for voice in voices)
    rng.shuffle(lines)  # popularity rank independent of language
    return lines


def personal(rng: random.Random, serial: int) -> Line:
    """A personalized line with a name nobody else has."""
    if rng.random() < 0.5:
        name = f"{rng.choice(_ADJECTIVES)}{rng.choice(_ANIMALS)}{serial}"
        text = rng.choice(PERSONAL_EN).format(name=name)
    else:
        text = rng.choice(PERSONAL_ZH).format(name=f"{rng.choice(_ZH_NAMES)}{serial}")
    return Line(text, rng.choice(VOICES), rng.choice(("happy", "neutral")), personalized=True)


@dataclass(frozen=True)
class Workload:
    """A request sequence and what a perfect cache could do with it."""

    lines: list[Line]
    alpha: float
    personalized_share: float
    seed: int

    @property
    def distinct(self) -> int:
        return len({line.key for line in self.lines})

    @property
    def repeat_rate(self) -> float:
        """Share of requests whose key was requested before (a perfect cache's hit ratio)."""
        return 1 - self.distinct / len(self.lines)

    @property
    def characters(self) -> int:
        return sum(len(line.text) for line in self.lines)

    @property
    def distinct_characters(self) -> int:
        return sum(len(key[0]) for key in {line.key for line in self.lines})


def generate(
    requests: int, *, alpha: float = 1.0, personalized_share: float = 0.25, seed: int = 8
) -> Workload:
    """``requests`` lines: ``personalized_share`` of them personalized, the rest Zipf(alpha)."""
    rng = random.Random(seed)
    fixed = catalog(rng)
    weights = [rank**-alpha for rank in range(1, len(fixed) + 1)]
    lines: list[Line] = []
    for serial in range(requests):
        if rng.random() < personalized_share:
            lines.append(personal(rng, serial))
        else:
            lines.append(rng.choices(fixed, weights)[0])
    return Workload(lines, alpha, personalized_share, seed)
