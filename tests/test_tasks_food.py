"""The ``food`` topic task: its lexicon judge, its openers and its splits."""

from __future__ import annotations

import pytest

from corrsteer.tasks import get_task, list_tasks
from corrsteer.tasks.topic import ACTIONS, PEOPLE, TIMES, mentions_food, openers


@pytest.mark.parametrize("text, word", [
    (" stopped at a bakery for two croissants.", "bakery"),
    (" We ate pizza and drank some beer", "ate"),
    (" made Ice Cream for the kids", "ice cream"),
    (" bought hot dogs at the game", "hot dogs"),
    (" Grandma's apple pie", "apple"),
    (" a cup of coffee", "coffee"),
    (" went to the café on the corner", "café"),
    (" cooked dinner", "cooked"),
])
def test_mentions_food_finds_food_words(text, word):
    assert mentions_food(text) == word


@pytest.mark.parametrize("text", [
    " went to the library to read", " cleaned the garage", " the orange car", " raised a toast to the couple",
    " washed the dishes", " a trip to Turkey", " watched a movie about eggplants",  # not a whole word
    " his taste in music", " drove to the beach", "",
])
def test_mentions_food_rejects_non_food(text):
    assert mentions_food(text) is None


def test_mentions_food_type_error():
    with pytest.raises(TypeError, match="text must be a str"):
        mentions_food(3)  # type: ignore[arg-type]


def test_food_openers_hold_no_food_word_and_are_distinct():
    pool = openers()
    assert len(pool) == len(TIMES) * len(PEOPLE) * len(ACTIONS) == len({o for o, _, _ in pool})
    assert not [o for o, _, _ in pool if mentions_food(o)]


def test_food_task_splits_by_time_and_person():
    assert "food" in list_tasks()
    task = get_task("food")
    splits = {k: task.samples(k) for k in ("train", "validation", "test")}
    assert [len(v) for v in splits.values()] == [3150, 450, 900]
    groups = {k: {s.meta["group"] for s in v} for k, v in splits.items()}
    assert not (groups["train"] & groups["test"] or groups["validation"] & groups["test"]
                or groups["train"] & groups["validation"])
    assert task.categories() == sorted(ACTIONS)
    assert task.samples("test", 50) == get_task("food").samples("test", 50)


def test_food_reward_and_extract():
    task = get_task("food")
    s = task.samples("test", 1)[0]
    assert task.prompt(s) == s.question
    assert task.extract(s, " the store to buy some bread") == "bread"
    assert task.reward(s, " the store to buy some bread") == 1
    assert task.reward(s, " the store to buy a hammer") == 0 and task.extract(s, " the store") is None
