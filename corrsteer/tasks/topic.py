"""``food``: does a free continuation of an everyday-life opener mention food or drink? (generated, offline)

A topic reward, of a different kind from ``sentiment``: the model continues an opener
such as "After work, my roommate stopped at the" and the reward is 1 iff the
continuation (the generated text alone) names food or drink. The judge,
:func:`mentions_food`, is a fixed lexicon matched on whole words, case-insensitively:
:data:`FOOD_WORDS` (209 words) and :data:`FOOD_PHRASES` (4) hold dishes, ingredients,
drinks, meals, eating / drinking / cooking verbs and places to eat or buy food
("restaurant", "bakery", "grocery"). Ambiguous words are left out on purpose ("orange",
"toast", "turkey", "chips", "dish", "taste", "kitchen", "honey", "water"). It returns the
first word it matched (or None), so ``generations.jsonl`` shows why a sample was
rewarded. A lexicon misses food it does not list and cannot tell "ate" in a figure of
speech from a meal; tests pin down what it accepts and rejects. Reading 100 unsteered
continuations, every one it rewarded named food or drink and none it rejected did
(four mentioned only a kitchen).

Openers come from a grammar: TIMES (20) x PEOPLE (15) x ACTIONS (15) everyday sentence
starts with no food word in them (a test checks), 4,500 in all. Splits are carved by
(time, person) pair, 70/10/20 with ``split_seed``: 3,150 / 450 / 900 openers, no pair
shared between splits. Categories are the actions, so a report shows which sentence
starts lead to food.

Base rate on the embedded Gemma 3 270M (greedy, base prompt, 300 test openers, seed 0):
**0.260** mention food (78/300, 95% Wilson interval 0.214-0.312); by action from 0.00
("opened the", "talked about") to 0.72 ("ordered") and 0.67 ("brought home some").
Continuations average 11 tokens. Command: ``python scripts/base_rate.py --task food --n 300``.

Generation: up to 24 new tokens, stopped at the end of the first sentence or line, as
for ``sentiment``. Steering moves this reward:
``corrsteer run --task food --mode all --n-train 200 --n-test 100 --sae default`` gave
24% -> 69% (+45 pp, 95% CI [+35, +55], 46 up and 1 down) with fluent text ("a pizza and
a bottle of wine", "a meal with us").
"""

from __future__ import annotations

import re

from corrsteer.tasks.base import Sample
from corrsteer.tasks.continuation import ContinuationTask

_FOOD = """
food foods meal meals breakfast breakfasts brunch lunch lunches dinner dinners supper snack snacks dessert desserts
recipe recipes cuisine menu menus groceries grocery picnic picnics barbecue bbq feast buffet
eat eats ate eaten eating cook cooks cooked cooking cookout bake bakes baked baking fried frying grilled grilling
roasted drink drinks drank drinking sip sipped hungry delicious tasty yummy appetite
restaurant restaurants cafe cafes café bakery diner pizzeria cafeteria
bread loaf butter cheese egg eggs omelet omelette bacon ham sausage sausages steak steaks beef pork chicken lamb
fish salmon tuna shrimp seafood rice pasta spaghetti noodles pizza pizzas burger burgers hamburger hamburgers
sandwich sandwiches salad salads soup soups stew curry taco tacos burrito burritos sushi fries potato potatoes
tomato tomatoes onion onions garlic carrot carrots beans vegetable vegetables veggies fruit fruits apple apples
banana bananas strawberry strawberries berries blueberries grapes lemon lemons cherries peach peaches
cake cakes cupcake cupcakes cookie cookies pie pies chocolate candy candies pancake pancakes waffle waffles
cereal oatmeal yogurt sugar muffin muffins donut donuts doughnut doughnuts bagel bagels croissant croissants
pastry pastries popcorn pretzel pretzels milk coffee coffees tea teas juice soda beer beers wine wines cocktail
cocktails lemonade smoothie smoothies latte espresso cappuccino milkshake cereal jam peanut peanuts almonds
flour dough icecream gelato sundae brownie brownies
"""
FOOD_WORDS = frozenset(_FOOD.split())
FOOD_PHRASES = ("ice cream", "hot dog", "hot dogs", "french fries")
_PATTERN = re.compile(r"\b(" + "|".join(sorted((re.escape(w) for w in FOOD_WORDS | set(FOOD_PHRASES)),
                                                 key=lambda w: (-len(w), w))) + r")\b", re.IGNORECASE)


def mentions_food(text: str) -> str | None:
    """The first food or drink word in ``text`` (lower-cased), or None.

    Example:
        >>> mentions_food("We stopped at a bakery for two croissants.")
        'bakery'
        >>> mentions_food("We stopped at the library.") is None
        True
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    match = _PATTERN.search(text.replace("\u2019", "'"))
    return match.group(1).lower() if match else None


TIMES = [
    "On Saturday morning", "After work", "Last weekend", "Yesterday afternoon", "On the way home",
    "Early this morning", "After the game", "Late last night", "On my birthday", "During the holidays",
    "Before the trip", "After school", "On Sunday evening", "During the break", "At the end of the day",
    "Last summer", "Around noon", "After the long hike", "Before the party", "On a rainy Tuesday",
]
PEOPLE = [
    "my sister and I", "we", "my grandfather", "the kids", "my roommate", "our neighbors", "Tom",
    "my best friend", "the whole team", "I", "my parents", "Maria", "the students", "my uncle", "the two of us",
]
# Chosen so that the unsteered rate sits away from 0 and 1: sentence starts that may or may not
# lead to food ("stopped at", "bought some"); "called", "cleaned the" and "started" led to food in
# 0 of 22 continuations in a first measurement and were replaced.
ACTIONS = [
    "went to the", "stopped at the", "picked up some", "bought some", "brought home some", "ordered", "shared",
    "decided to", "made", "found", "wanted", "got home and", "opened the", "spent an hour", "talked about",
]


def openers() -> list[tuple[str, str, str]]:
    """The food-task openers as ``(opener, group, category)``: group = time + person, category = action."""
    out = []
    for time in TIMES:
        for person in PEOPLE:
            for action in ACTIONS:
                out.append((f"{time}, {person} {action}", f"{time} | {person}", action))
    return out


class FoodTopicTask(ContinuationTask):
    """Continue an everyday-life opener; reward 1 iff the continuation mentions food or drink.

    Options: ``fractions``, ``max_new_tokens`` as for :class:`ContinuationTask`.
    """

    name = "food"

    def pool(self) -> list[tuple[str, str, str]]:
        return openers()

    def judge(self, completion: str) -> str | None:
        return mentions_food(completion)

    def extract(self, sample: Sample, completion: str) -> str | None:  # type: ignore[override]
        """The first food word of the completion, or None."""
        return self.judge(completion)

    def target_reward(self, sample: Sample, answer: object | None) -> int:
        return int(answer is not None)

    def source(self) -> str:
        return f"generated openers ({len(TIMES)} times x {len(PEOPLE)} people x {len(ACTIONS)} actions); judge: food lexicon"
