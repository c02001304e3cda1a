"""``sentiment``: is a free continuation of a neutral opener positive? (generated, offline)

The model continues an opener such as "To be honest, the hotel we stayed at was" for up
to 24 tokens, stopped at the end of its first sentence or line (the judge was trained on
single sentences). The reward is 1 iff the shipped SST-2 judge
(:func:`corrsteer.tasks.judging.sentiment_judge`, a word uni+bigram logistic regression,
SST-2 dev accuracy 0.792) reads the continuation alone, without the opener, as positive
(P >= 0.5). Steering "towards the reward" therefore means steering towards positive text.
``generations.jsonl`` records the judge's P for every completion.

Openers come from a small grammar: SUBJECTS (100 things one can have an opinion of, in
five categories: places, media, events, products, experiences) times FRAMES (24 sentence
starts that leave the verdict to the model), 2,400 openers. They hold no opinion word:
an opener with an n-gram the judge weighs at ``|w| >= 1`` would be dropped, and with the
shipped judge none is (three subjects were reworded for that: "TV show" -> "series",
"documentary" -> "program", "family dinner" -> "dinner"). Splits are carved by subject
(70/10/20 with ``split_seed``): 1,680 / 240 / 480 openers, and the test split asks about
20 subjects never seen in train or validation.

Base rate on the embedded Gemma 3 270M (greedy, base prompt, 300 test openers, seed 0):
**0.687** positive (206/300, 95% Wilson interval 0.632-0.737); by category events 0.79,
places 0.81 (16 samples), experiences 0.72, media 0.66, products 0.53. Continuations
average 8 tokens. Command: ``python scripts/base_rate.py --task sentiment --n 300``.

Caveats, from reading 100 of those continuations: the judge agreed with a human reading
(positive vs not) on 71 of 100. It reads words, not syntax, and brings SST-2's habits:
"a great idea" is 0.47 because "idea" leans negative in film reviews, "not the best"
is 0.79 through "the best", and neutral text ("published in 1999") lands near 0.5 on
either side. A continuation with no known word gets the bias, P = 0.478 (not positive).
The reward is a noisy measure of positivity, so read the generations behind a gain:
``corrsteer run --task sentiment --mode all --n-train 200 --n-test 100 --sae default``
gave 71% -> 73% by the judge (+2 pp, McNemar p = 0.85), while one reader labelling the
134 distinct texts in shuffled order, condition hidden (though some pairs had been seen
before), found 67% -> 78% of the same 200 completions positive (18 up, 7 down, p = 0.04).
"""

from __future__ import annotations

from corrsteer.tasks.continuation import ContinuationTask
from corrsteer.tasks.judging import NgramJudge, ngrams, sentiment_judge, tokenize

SUBJECTS = {
    "places": [
        "the restaurant on Main Street", "the coffee shop near the station", "the hotel we stayed at",
        "the bakery on the corner", "the museum downtown", "the park by the river", "the town library",
        "the gym on Fifth Avenue", "the pizza place near campus", "the airport in Denver",
        "the beach house we rented", "the hostel in Lisbon", "the shopping mall outside town",
        "the zoo in the city", "the campsite by the lake", "the diner on Route 9", "the hospital cafeteria",
        "the hardware store", "the bookshop in the old town", "the swimming pool at the hotel",
    ],
    "media": [
        "the movie we saw on Friday", "the book my teacher recommended", "the album that band released",
        "the series everyone is watching", "the program about whales", "the podcast my brother listens to",
        "the play at the community theater", "the video game I bought last month", "the novel I read on the plane",
        "the comedy special on Netflix", "the sequel to that spy film", "the cookbook my aunt gave me",
        "the magazine article about sleep", "the opera we went to", "the cartoon my kids watch",
        "the biography of the president", "the radio drama", "the music video for that song",
        "the lecture on the history of maps", "the art exhibition at the gallery",
    ],
    "events": [
        "the concert last night", "the wedding on Saturday", "the team meeting this morning",
        "the birthday party at Sam's house", "the school play", "the conference in Chicago",
        "the football game on Sunday", "the job interview", "the dinner at my aunt's place",
        "the parade on Main Street", "the office holiday party", "the graduation ceremony",
        "the neighborhood barbecue", "the charity run", "the science fair", "the town hall meeting",
        "the jazz festival", "the class reunion", "the farmers market on Saturday", "the book club meeting",
    ],
    "products": [
        "the phone I bought last week", "the laptop I use for work", "the car we rented",
        "the headphones my dad gave me", "the vacuum cleaner", "the software update",
        "the coffee machine at work", "the running shoes I ordered", "the mattress in the guest room",
        "the camera I borrowed", "the electric bike", "the kitchen knife set", "the printer in the office",
        "the tent we took camping", "the smartwatch", "the winter jacket I ordered online",
        "the board game we played", "the blender", "the app for ordering groceries", "the washing machine",
    ],
    "experiences": [
        "the flight to London", "my first day at the job", "the train ride home", "the call to customer service",
        "the haircut I got on Tuesday", "the cooking class", "the visit to the dentist", "our trip to the mountains",
        "the move to our apartment", "the tour of the old castle", "the bus trip to the coast",
        "the driving lesson", "the weekend at my parents' house", "the yoga class", "the hike up the hill",
        "the semester abroad", "the road trip through Texas", "the night at the campsite", "the ferry crossing",
        "the language course",
    ],
}

FRAMES = [
    "{S} was", "I thought {s} was", "In my opinion, {s} is", "To be honest, {s} was", "Looking back, {s} was",
    "My friend told me that {s} was", "Overall, {s} was", "The first thing I noticed about {s} was",
    "What I remember most about {s} is", "{S} turned out to be", "{S} made me feel", "My experience with {s} was",
    "Compared to what I expected, {s} was", "I have to say that {s}", "Last week I finally tried {s}, and it",
    "When I told my sister about {s}, she said it was", "So, about {s}. It was", "Honestly, I think {s} was",
    "After a few days, I decided that {s} was", "Everyone who went to {s} said it was",
    "If I had to describe {s} in a few words, I would say it was",
    "When people ask me about {s}, I tell them it was", "I went back to {s} and",
    "The people I talked to about {s} said",
]
STRONG = 1.0  # an opener is dropped if one of its n-grams has a judge weight of at least this size


def openers(judge: NgramJudge | None = None, strong: float = STRONG) -> list[tuple[str, str, str]]:
    """The sentiment openers as ``(opener, subject, category)``, in grammar order.

    Openers holding an n-gram that the judge weighs at ``|w| >= strong`` (its opinion
    words: "fun" +1.9, "bad" -1.9, but also SST-2 quirks such as "tv" -1.3) are dropped;
    with the shipped judge none is.
    """
    judge = judge if judge is not None else sentiment_judge()
    out = []
    for category, subjects in SUBJECTS.items():
        for subject in subjects:
            for frame in FRAMES:
                text = frame.format(s=subject, S=subject[0].upper() + subject[1:])
                if all(abs(judge.weights.get(g, 0.0)) < strong for g in ngrams(tokenize(text), judge.n_max)):
                    out.append((text, subject, category))
    return out


class SentimentTask(ContinuationTask):
    """Continue a neutral opener; reward 1 iff the SST-2 judge reads the continuation as positive.

    Options:
        judge_path: a judge file written by ``scripts/train_judges.py`` (default: the shipped one).
        strong: drop openers holding an n-gram with a judge weight ``|w| >= strong`` (default 1.0).
        fractions, max_new_tokens, threshold: as for :class:`ContinuationTask`.
    """

    name = "sentiment"

    def __init__(self, data_dir: str | None = None, split_seed: int = 0, chat: bool | None = None,
                 judge_path: str | None = None, strong: float = STRONG, **options) -> None:
        super().__init__(data_dir, split_seed, chat, **options)
        if not float(strong) > 0.0:
            raise ValueError(f"strong must be a positive weight, got {strong!r}")
        self.strong = float(strong)
        self.sentiment = sentiment_judge(judge_path)

    def pool(self) -> list[tuple[str, str, str]]:
        return openers(self.sentiment, self.strong)

    def judge(self, completion: str) -> float:
        return self.sentiment.probability(completion)

    def source(self) -> str:
        acc = self.sentiment.meta.get("dev_accuracy")
        return f"generated openers; judge {self.sentiment.path} (SST-2 dev accuracy {acc})"
