"""Words for the synthetic corpus: subtitles, coarse captions and fine-grained reasoning.

Subtitles come from per-emotion template banks with slots (thousands of distinct
sentences), a neutral bank (plain statements of fact), an ambiguous bank (words that
could go either way) and an ironic bank (literally positive words meant negatively).
The coarse caption lists the clues in one sentence, like MERR's templated coarse
annotations; the fine-grained reasoning is a paragraph in the style of MERR's
LLaMA-3-written annotations: facial clues, vocal clues, the words, a conclusion that
names the label. Clue phrases are the canonical ones of ``merr.clue_vocabulary()`` and
appear verbatim.
"""

from __future__ import annotations

import re

import numpy as np

from emotion_llama.data.merr import AU_CLUES, FACE_MISSING_CLUES, WORDS_CLUES

SLOTS: dict[str, tuple[str, ...]] = {
    "person": (
        "my sister",
        "my brother",
        "the manager",
        "our neighbor",
        "my best friend",
        "the doctor",
        "my mother",
        "my father",
        "the teacher",
        "my cousin",
        "the new guy",
        "my boss",
        "the landlord",
        "our coach",
        "my partner",
        "the driver",
        "my roommate",
        "the nurse",
        "my uncle",
        "the lawyer",
    ),
    "thing": (
        "the car",
        "my phone",
        "the report",
        "the project",
        "the results",
        "the package",
        "the house",
        "the tickets",
        "the contract",
        "the dinner",
        "the letter",
        "the bill",
        "my bike",
        "the garden",
        "the email",
        "the offer",
        "the budget",
        "the laptop",
        "the keys",
        "the painting",
    ),
    "event": (
        "the interview",
        "the party",
        "the exam",
        "the wedding",
        "the meeting",
        "the trip",
        "the game",
        "the concert",
        "the audition",
        "the surgery",
        "the hearing",
        "the move",
        "the launch",
        "the reunion",
        "the match",
        "the review",
        "the flight",
        "the recital",
    ),
    "time": (
        "today",
        "this morning",
        "last night",
        "yesterday",
        "this week",
        "an hour ago",
        "just now",
        "on Monday",
        "all day",
        "tonight",
        "this afternoon",
        "again",
    ),
    "place": (
        "at work",
        "at home",
        "at school",
        "downtown",
        "in the office",
        "at the station",
        "outside",
        "upstairs",
        "at the hospital",
        "in the kitchen",
        "in the car",
        "at the bank",
    ),
    "clock": ("nine", "ten", "noon", "three", "five thirty", "eight", "seven fifteen", "two"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "the weekend", "next week", "Sunday"),
    "food": ("rice", "pasta", "soup", "bread", "salad", "chicken", "fish", "noodles"),
}

BANKS: dict[str, tuple[str, ...]] = {
    "happy": (
        "We won {event}, I am so happy!",
        "This is the best day ever!",
        "I love it, thank you so much!",
        "{person} said yes, I am thrilled!",
        "I finally got {thing}, this is wonderful!",
        "I am so glad you came {time}.",
        "{event} went perfectly, I am delighted.",
        "What a lovely surprise, I'm really happy.",
        "I passed, I actually passed!",
        "Everything worked out {time}, I feel great.",
        "I can't stop smiling about {event}.",
        "{person} loved {thing}, I'm so pleased.",
        "That was so much fun!",
        "I feel fantastic {time}.",
        "Good news, we got {thing}!",
        "I'm so proud of {person}.",
    ),
    "sad": (
        "I miss {person} so much.",
        "{person} is gone, and I feel empty.",
        "I lost {thing} {time}, I feel awful.",
        "Nothing feels right anymore.",
        "I tried my best, but I failed.",
        "{event} was cancelled, I'm heartbroken.",
        "I feel so alone {time}.",
        "It hurts to think about {person}.",
        "I just want to cry.",
        "We had to sell {thing}, it's so sad.",
        "I'm sorry, I can't go on like this.",
        "{person} didn't even call me.",
        "I feel so down {time}.",
        "Everything reminds me of {person}.",
    ),
    "angry": (
        "How dare you touch {thing}!",
        "I am sick of this!",
        "{person} ruined {event}, I'm furious!",
        "Get out of here right now!",
        "Stop lying to me!",
        "You broke {thing} again!",
        "This is completely unacceptable!",
        "I told you a hundred times!",
        "{person} never listens, it drives me mad!",
        "Don't you dare walk away from me!",
        "I'm so angry about {thing}!",
        "Who messed up {thing}?",
        "Enough, I've had it with {person}!",
        "You wasted my whole day!",
    ),
    "worried": (
        "What if {event} goes wrong?",
        "I'm worried about {person}.",
        "I hope {person} is okay.",
        "I can't stop thinking about {thing}.",
        "Will we have enough money {time}?",
        "I'm nervous about {event}.",
        "{person} hasn't called back, I'm anxious.",
        "I hope nothing happened to {thing}.",
        "What if they say no?",
        "I'm not sure we'll make it {time}.",
        "I keep worrying about {event}.",
        "Is {person} going to be alright?",
        "I'm uneasy about {thing}.",
        "I hope {event} goes well {time}.",
        "What if {person} is still {place}?",
        "I'm worried we'll lose {thing}.",
    ),
    "surprise": (
        "Wow, I did not expect that!",
        "No way, {person} is here?",
        "Really? {event} is today?",
        "Oh my goodness, look at {thing}!",
        "You did all this for me?",
        "Wait, {person} won?",
        "I can't believe it, that's amazing!",
        "Whoa, where did {thing} come from?",
        "What? Since when?",
        "{person} got married? Seriously?",
        "That's unexpected, {event} is over already?",
        "Oh wow, you're back {time}!",
        "Wait, {person} bought {thing}?",
        "You're kidding, {event} was {time}?",
        "Oh, {person} is {place}? Really?",
        "What a surprise, {thing} arrived {time}!",
    ),
    "fear": (
        "Please don't hurt me.",
        "Did you hear that noise {place}?",
        "I'm scared, someone is outside.",
        "Help, I think we're lost!",
        "I'm terrified of {event}.",
        "Something is following us.",
        "Don't leave me alone here.",
        "I'm afraid {person} will find me.",
        "The lights went out {place}, I'm frightened.",
        "Run, it's coming closer!",
        "I'm too scared to open {thing}.",
        "What was that sound?",
        "Someone is in the house {time}.",
        "I'm afraid of what {person} will do.",
        "Please, I don't want to go {place}.",
        "I think someone broke into {thing}.",
        "I'm shaking, {person} is coming.",
        "There's a stranger {place}, help!",
        "Don't make me go to {event}.",
        "I'm scared {person} got hurt {place}.",
        "Something moved {place}, I'm terrified.",
        "{person} is screaming {place}, help!",
    ),
    "contempt": (
        "Please, as if {person} could do that.",
        "That's pathetic, honestly.",
        "You call that {thing}?",
        "I expected nothing better from {person}.",
        "How typical of {person}.",
        "Spare me your excuses.",
        "Whatever, that's beneath me.",
        "{thing} is a joke, frankly.",
        "Some people never learn.",
        "{person} thinks they're so clever.",
        "I'm not impressed by {event}.",
        "Oh please, nobody cares.",
        "{person} calls that work? Please.",
        "Only {person} would brag about {thing}.",
        "{event} was amateur hour, honestly.",
        "I wouldn't waste my time on {thing}.",
    ),
    "doubt": (
        "Are you sure about {thing}?",
        "I don't think {person} is telling the truth.",
        "That doesn't sound right to me.",
        "Hmm, did {event} really happen?",
        "I'm not convinced, honestly.",
        "Really? I find that hard to believe.",
        "Can we trust {person}?",
        "Is that even possible?",
        "I doubt {thing} will work.",
        "Where did you hear that?",
        "Something about {thing} doesn't add up.",
        "Maybe, but I'm not so sure.",
        "Did {person} really say that {time}?",
        "I doubt {event} will happen {time}.",
        "Are you sure {person} fixed {thing}?",
        "I'm skeptical about {thing}, to be honest.",
    ),
    "neutral": (
        "The meeting is on {day}.",
        "{person} will be here at {clock}.",
        "I put {thing} on the table.",
        "We need to buy {food} and milk.",
        "The bus leaves at {clock}.",
        "I'll send you {thing} {time}.",
        "We're having {food} for dinner.",
        "{person} works {place}.",
        "The store closes at {clock} on {day}.",
        "I left {thing} {place}.",
        "Let me check the schedule.",
        "We can talk about it on {day}.",
        "{event} starts at {clock}.",
        "I read about it {time}.",
        "Turn left at the next corner.",
        "{person} moved to a new apartment.",
    ),
}
AMBIGUOUS: tuple[str, ...] = (
    "Well, that's one way to put it.",
    "I don't know what to say about {thing}.",
    "So that's what happened {time}.",
    "It is what it is.",
    "Let's see how {event} goes.",
    "I heard about {person}.",
    "That's {person} for you.",
    "Okay, if you say so.",
    "We'll talk about {thing} later.",
    "Interesting, tell me more.",
    "So, {event} is {time}.",
    "I guess that settles it.",
)
IRONIC: tuple[str, ...] = (
    "Oh great, {thing} broke again.",
    "Wonderful, just what I needed {time}.",
    "Perfect, {person} is late again.",
    "Fantastic, another meeting {time}.",
    "Oh lovely, {thing} is ruined.",
    "Brilliant idea, really brilliant.",
    "Sure, I'm having a great time.",
    "Wow, thanks a lot, {person}.",
    "Great job, {person}, really great.",
    "Oh nice, the bill for {thing}.",
)


def _fill(template: str, rng: np.random.Generator) -> str:
    def repl(m: re.Match) -> str:
        choices = SLOTS[m.group(1)]
        return str(choices[int(rng.integers(len(choices)))])

    s = re.sub(r"\{(\w+)\}", repl, template)
    return s[0].upper() + s[1:]


def _n_words(s: str) -> int:
    return len(s.split())


def pick_sentence(rng: np.random.Generator, bank: tuple[str, ...], max_words: int) -> str:
    """A random filled template of at most ``max_words`` words (the shortest if none fits)."""
    best = None
    for _ in range(24):
        s = _fill(str(bank[int(rng.integers(len(bank)))]), rng)
        if _n_words(s) <= max_words:
            return s
        if best is None or _n_words(s) < _n_words(best):
            best = s
    return best  # type: ignore[return-value]


def bank_for(kind: str, emotion: str | None) -> tuple[str, ...]:
    """``kind`` is "emotion" (the bank of ``emotion``), "neutral", "ambiguous" or "ironic"."""
    if kind == "ironic":
        return IRONIC
    if kind == "ambiguous":
        return AMBIGUOUS
    if kind == "neutral":
        return BANKS["neutral"]
    return BANKS[emotion or "neutral"]


def words_clue(kind: str, emotion: str | None) -> str:
    if kind in ("ironic", "ambiguous"):
        return WORDS_CLUES[kind]
    return WORDS_CLUES[emotion or "neutral"]


def count_distinct_sentences() -> int:
    """How many distinct subtitles the banks can produce (for the docs and tests)."""
    total = 0
    for bank in list(BANKS.values()) + [AMBIGUOUS, IRONIC]:
        for t in bank:
            n = 1
            for slot in re.findall(r"\{(\w+)\}", t):
                n *= len(SLOTS[slot])
            total += n
    return total


# ----------------------------------------------------------------------------- captions

_EMOTION_ADJ = {
    "happy": "happiness",
    "sad": "sadness",
    "angry": "anger",
    "worried": "worry",
    "surprise": "surprise",
    "fear": "fear",
    "contempt": "contempt",
    "doubt": "doubt",
    "neutral": "a calm, neutral state",
}
_PAIR_HINT = {
    # when the face alone leaves a pair open, what the voice adds
    ("surprise", "fear"): "wide-open eyes and a dropped jaw can mean surprise or fear",
    ("sad", "worried"): "raised inner brows and drooping lids can mean sadness or worry",
    ("contempt", "doubt"): "a one-sided expression can mean contempt or doubt",
}
_VOICE_HINT = {
    "angry": "the loud, harsh delivery",
    "bright": "the high, lively pitch",
    "low": "the low, slow and soft voice",
    "tense": "the trembling, tense voice",
    "plain": "the steady, even tone",
}
# The person is "the person" and "their": the drawn face has no gender and the voice's is
# drawn on its own, so a gendered pronoun taken from the voice can contradict what the face
# shows, and a model trained on such text mixed "her face" with "his speech".
_PERSON, _THEIR = "the person", "their"
_OCCLUDER = {"turned_away": "turns away from the camera", "occluded": "keeps {his} face hidden behind an object"}


def _join(items: list[str]) -> str:
    items = [i for i in items if i]
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _article(phrase: str) -> str:
    vowel = phrase[0] in "aeiou" and not phrase.startswith("one")
    return ("an " if vowel else "a ") + phrase


_BARE = {"lips part", "head up", "pauses between words", "no audible speech"}


def _a(phrase: str) -> str:
    """A clue phrase with an indefinite article, unless it is plural or a clause."""
    if phrase in _BARE or phrase.startswith("words") or phrase.endswith("words"):
        return phrase
    return _article(phrase)


def _aj(phrases: list[str]) -> str:
    return _join([_a(p) for p in phrases])


def _np(phrase: str) -> str:
    """A words clue as a noun phrase: plurals stay bare, singulars get an article."""
    return phrase if (phrase.startswith("words") or phrase.endswith("words")) else _article(phrase)


def coarse_caption(info: dict, words: bool = True) -> str:
    """One sentence listing the clues (MERR coarse style). With ``words=False`` it reads
    as for the same clip shown without its subtitle: the words are not quoted."""
    who = "The person"
    parts = []
    if info["face_visibility"] == "visible":
        aus = [AU_CLUES[a] for a in info["face_aus"]]
        if aus:
            parts.append(f"{who} shows facial actions: {_join(aus)}")
        else:
            parts.append(f"{who} shows a relaxed face with no marked facial action")
    else:
        what = _OCCLUDER[info["face_visibility"]].format(his=_THEIR)
        parts.append(f"{who} {what} ({FACE_MISSING_CLUES[info['face_visibility']]})")
    if info["voice_present"]:
        parts.append(f"speaks with {_aj(info['voice_clues'])}")
    else:
        parts.append("there is no audible speech")
    if words:
        parts.append(f'says: "{info["subtitle"]}" ({info["words_clue"]})')
    else:
        parts.append("no subtitle is given")
    return "; ".join(parts) + "."


def fine_reasoning(rng: np.random.Generator, info: dict, words: bool = True) -> str:
    """A paragraph: face, voice, words, conclusion with the label (MERR fine style).

    With ``words=False`` it is the paragraph for the same clip shown without its
    subtitle: it says that there are no words to weigh instead of quoting them, and
    concludes from the face and the voice. Given a generator in the same state, the face
    and voice sentences are the same as with words."""
    he, his = _PERSON, _THEIR
    He, His = he.capitalize(), his.capitalize()
    label = info["label"]
    pick = lambda options: options[int(rng.integers(len(options)))]
    sents: list[str] = []

    # face
    vis = info["face_visibility"]
    if vis == "visible":
        aus = info["face_aus"]
        opener = pick(
            [
                "In the video,",
                "In this clip,",
                "Looking at the video,",
                "Throughout the clip,",
                "At the peak of the expression,",
            ]
        )
        if aus:
            names = [AU_CLUES[a] for a in aus]
            from .face import AU_PLAIN

            plain = [AU_PLAIN[a] for a in aus[:3]]
            sents.append(
                pick(
                    [
                        f"{opener} {his} face shows {_aj(names)}: {_join(plain)}.",
                        f"{opener} the person's facial expression involves {_aj(names)}, meaning {_join(plain)}.",
                        f"{opener} {he} displays {_aj(names)} - {_join(plain)}.",
                    ]
                )
            )
            if info["subtle"]:
                sents.append(
                    pick(["The expression is subtle rather than intense.", "These movements are fairly weak."])
                )
        else:
            sents.append(
                pick(
                    [
                        f"{opener} {his} face stays relaxed, without a marked brow or mouth movement.",
                        f"{opener} the facial muscles are at rest and {his} expression is composed.",
                    ]
                )
            )
    else:
        cue = FACE_MISSING_CLUES[vis]
        if vis == "turned_away":
            sents.append(f"{He} turns away from the camera ({cue}), so {his} facial expression cannot be read.")
        else:
            sents.append(f"{His} face is hidden behind an object ({cue}), so the expression cannot be seen.")

    # voice
    if info["voice_present"]:
        vc = info["voice_clues"]
        sents.append(
            pick(
                [
                    f"{He} speaks with {_aj(vc)}.",
                    f"In the audio, the speech has {_aj(vc)}.",
                    f"The tone of {his} speech shows {_aj(vc)}.",
                    f"Vocally, there is {_aj(vc)}.",
                ]
            )
        )
        pair = info.get("face_pair")
        if pair and vis == "visible" and not info.get("tell"):
            sents.append(
                f"The face alone is ambiguous, since {_PAIR_HINT[pair]}; {_VOICE_HINT[info['voice_group']]} settles it."
            )
    else:
        mode = info.get("audio_mode")
        sents.append(
            "The audio track is silent (no audible speech), so the tone of voice cannot be judged."
            if mode == "silent"
            else "The clip has no sound (no audible speech), so the tone of voice cannot be judged."
        )

    # words
    sub, wclue = info["subtitle"], info["words_clue"]
    wk = info["words_kind"]
    if not words:
        sents.append(
            pick(
                [
                    "No subtitle is given, so there are no words to weigh.",
                    "There is no subtitle, so what is said cannot be weighed.",
                ]
            )
        )
    elif info["conflict"]:
        if wk == "ironic":
            sents.append(
                pick(
                    [
                        (
                            f'{He} says "{sub}", an ironic remark: '
                            f"the positive words contradict {his} expression and tone."
                        ),
                        (
                            f'The subtitle "{sub}" sounds positive on paper, '
                            "but it is an ironic remark that the face and voice give away."
                        ),
                    ]
                )
            )
        else:
            we = info["words_emotion"]
            sents.append(
                pick(
                    [
                        (
                            f'Although {he} says "{sub}" - {wclue} that suggest {_EMOTION_ADJ[we]} - '
                            "the face and the voice do not agree with the words."
                        ),
                        (
                            f'The words "{sub}" are {wclue}, which would point to {_EMOTION_ADJ[we]}, '
                            "but they conflict with what the face and voice show."
                        ),
                        (
                            f'{He} says "{sub}"; these {wclue} point to {_EMOTION_ADJ[we]}, '
                            f"yet {his} expression and tone tell a different story."
                        ),
                    ]
                )
            )
        sents.append(
            pick(
                [
                    (
                        "When the words disagree with the face and the voice, "
                        "the face and the voice are the more reliable cues."
                    ),
                    (
                        "The words disagree with the nonverbal cues, which are harder to fake, "
                        "so the face and voice take precedence."
                    ),
                ]
            )
        )
    elif wk in ("neutral", "ambiguous") and label != "neutral":
        sents.append(
            pick(
                [
                    f'The words "{sub}" are {_article(wclue)} and carry little emotion on their own.',
                    f'{He} says "{sub}", {_article(wclue)} that does not reveal much by itself.',
                ]
            )
        )
    else:
        sents.append(
            pick(
                [
                    f'{He} says "{sub}", {_np(wclue)} consistent with the other cues.',
                    f'The subtitle "{sub}" contains {_np(wclue)}, which fits the rest of the picture.',
                    f'What {he} says, "{sub}", amounts to {_np(wclue)} and matches the rest.',
                ]
            )
        )

    # conclusion
    sents.append(
        pick(
            [
                f"Therefore, it is inferred that {his} emotional state is: {label}.",
                f"Taken together, these clues indicate that the person feels {label}.",
                (
                    f"Integrating the visual, vocal and verbal clues, the emotion label is {label}."
                    if words
                    else f"Integrating the visual and vocal clues, the emotion label is {label}."
                ),
                f"Overall, the most likely emotion is {label}.",
            ]
        )
    )
    return " ".join(sents)
